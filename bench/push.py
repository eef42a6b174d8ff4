"""Push throughput and discover time (issue 5), across a virtual LAN of network namespaces.

1. ``lanpair push`` of one big file (1 GiB by default) from ``laptop`` to the daemon in
   ``pc``, against curl sending the same file to the same daemon as a tus upload (POST to
   create, one PATCH with the whole file: the server path ``lanpair push`` takes, without
   anything of the client's own). Both are timed as whole commands (wall clock, start-up
   included) and ``lanpair push --json`` also reports its own transfer time. Each round
   changes the file's first bytes and its name, so the PC never has it already (neither by
   name and size, nor by content) and ``lanpair push`` does the full job: sync, hash, send.
   After each transfer the received file is deleted on the PC and ``sync()`` runs, so no
   transfer pays for another's dirty pages. Rounds alternate which tool goes first; the
   ratio reported is the median of the per-round ratios (curl wall / lanpair wall, so
   ≥ 0.9 meets the goal).
2. ``lanpair discover`` from ``laptop``, whole command wall time, with the daemon in ``pc``
   advertising itself (``--mdns``), N runs.

The daemon runs on CPU 0 and the clients on CPU 1 (``taskset``): two machines on a LAN
do not share a CPU. CPU seconds of the daemon (``/proc/PID/stat``) and of each client
command (``RUSAGE_CHILDREN``) are reported too.

Root only (``ip netns``). Run from the repository root:

    python bench/push.py                          # 1 GiB, 3 rounds, 10 discovers
    python bench/push.py --size-mib 256 --rounds 2 --json bench/out/push.json
    python bench/push.py --no-mdns                # push only (no mDNS in the namespaces)

It needs iproute2, util-linux (``unshare``, ``taskset``) and curl. Everything it starts
is stopped by PID in a ``finally`` and the namespaces are removed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(ROOT / "tests")]

from common import cpu_seconds, machine  # noqa: E402
from lan import Host, Lan, stop_process, virtual_lan  # noqa: E402

MiB = 1 << 20
SERVER_CPU = "0"
CLIENT_CPU = "1"
PORT = 5000
START_TIMEOUT_S = 60.0
TRANSFER_TIMEOUT_S = 900.0


def main() -> None:
    """Run the benchmark and print (and optionally save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--discovers", type=int, default=10)
    parser.add_argument("--mdns", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/push.py needs root (ip netns)")
    with virtual_lan(("pc", "laptop")) as lan:
        results = run(lan, args)
    print(json.dumps(results["summary"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


def run(lan: Lan, args: argparse.Namespace) -> dict[str, Any]:
    """Start the daemon in pc, pair laptop, then time the pushes and discovers."""
    pc, laptop = lan["pc"], lan["laptop"]
    scratch = lan.scratch
    data, client = scratch / "pc-data", scratch / "laptop-client"
    env = {"LANPAIR_CLIENT_DIR": str(client), "XDG_CONFIG_HOME": "/nonexistent"}
    daemon = pc.popen(
        *pinned(SERVER_CPU, sys.executable, "-m", "lanpair", "serve", "--host", "0.0.0.0"),
        *("--port", str(PORT), "--reserve", "0", "--data-dir", str(data)),
        "--mdns" if args.mdns else "--no-mdns",
        env=env,
        stderr=(scratch / "daemon.log").open("w"),
    )
    try:
        wait_listening(daemon)
        link = qr_link(pc, data, env)
        paired = laptop.run(
            *pinned(CLIENT_CPU, sys.executable, "-m", "lanpair", "pair", link, "--name", "Bench"),
            env=env,
        )
        print(paired.stdout.strip(), file=sys.stderr)
        token = json.loads((client / "pairings.json").read_text())["pcs"][0]["token"]
        big = scratch / "big.bin"
        write_random(big, args.size_mib * MiB)
        rounds = [
            push_round(n, pc, laptop, daemon.pid, big, data, token, env) for n in range(args.rounds)
        ]
        discovers = [time_discover(laptop, env) for _ in range(args.discovers if args.mdns else 0)]
    finally:
        stop_process(daemon)
    return {
        "machine": machine(),
        "rounds": rounds,
        "discovers": discovers,
        "summary": summarize(rounds, discovers, args.size_mib),
    }


def pinned(cpu: str, *command: str) -> list[str]:
    """Return ``command`` run on one CPU (taskset execs it: the PID stays the command's)."""
    return ["taskset", "-c", cpu, *command]


def wait_listening(daemon: subprocess.Popen[str]) -> None:
    """Wait until the daemon printed its last ready line."""
    assert daemon.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = daemon.stdout.readline()
        if not line:
            raise RuntimeError(f"the daemon exited with {daemon.wait()}")
        if line.startswith("  data: "):
            return
    raise RuntimeError("the daemon did not start")


def qr_link(pc: Host, data: Path, env: dict[str, str]) -> str:
    """Return a fresh pairing link, made on the PC as its owner."""
    shown = pc.run(sys.executable, "-m", "lanpair", "qr", "--data-dir", str(data), env=env)
    return next(line.strip() for line in shown.stdout.splitlines() if "/pair-confirm#" in line)


def write_random(path: Path, size: int) -> None:
    """Write ``size`` random bytes (and leave them in the page cache)."""
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))


def fresh(big: Path, name: str) -> Path:
    """Give the file new first bytes and a new name: the PC has never seen it."""
    with big.open("r+b") as out:
        out.write(os.urandom(32))
    target = big.with_name(name)
    big.rename(target)
    return target


def push_round(
    n: int,
    pc: Host,
    laptop: Host,
    daemon_pid: int,
    big: Path,
    data: Path,
    token: str,
    env: dict[str, str],
) -> dict[str, Any]:
    """Time curl and lanpair push once each (alternating which goes first)."""
    tools = ["curl", "lanpair"] if n % 2 == 0 else ["lanpair", "curl"]
    result: dict[str, Any] = {"round": n}
    current = big
    for tool in tools:
        current = fresh(current, f"bench-{n}-{tool}.bin")
        server_cpu = cpu_seconds(daemon_pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        if tool == "curl":
            curl_tus(laptop, pc, current, token)
            inner = None
        else:
            out = laptop.run(
                *pinned(CLIENT_CPU, sys.executable, "-m", "lanpair", "push", str(current)),
                "--json",
                "--no-mdns",
                env=env,
                timeout_s=TRANSFER_TIMEOUT_S,
            ).stdout
            summary = json.loads(out)
            if (summary["files"], summary["bytes"]) != (1, current.stat().st_size):
                raise RuntimeError(f"lanpair push did not send the whole file: {summary}")
            inner = summary["elapsed_s"]
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result[tool] = {
            "wall_s": round(wall, 3),
            "transfer_s": inner,
            "mib_s": round(current.stat().st_size / MiB / wall, 1),
            "client_cpu_s": round(
                after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2
            ),
            "server_cpu_s": round(cpu_seconds(daemon_pid) - server_cpu, 2),
        }
        print(f"round {n} {tool}: {result[tool]}", file=sys.stderr)
        for stored in (data / "uploads").rglob(current.name):
            stored.unlink()
        os.sync()
    current.rename(big)
    result["ratio"] = round(result["curl"]["wall_s"] / result["lanpair"]["wall_s"], 3)
    return result


def curl_tus(laptop: Host, pc: Host, path: Path, token: str) -> None:
    """Send ``path`` as curl would: create a tus upload, then PATCH the whole file."""
    base = f"https://{pc.ipv4}:{PORT}"
    common = ["-sS", "-k", "-H", f"Authorization: Bearer {token}", "-H", "Tus-Resumable: 1.0.0"]
    name = base64.b64encode(path.name.encode()).decode()
    created = laptop.run(
        *pinned(CLIENT_CPU, "curl", *common, "-D", "-", "-o", "/dev/null", "-X", "POST"),
        *("-H", f"Upload-Length: {path.stat().st_size}", "-H", f"Upload-Metadata: filename {name}"),
        f"{base}/api/tus/",
    ).stdout
    location = next(
        line.split(":", 1)[1].strip()
        for line in created.splitlines()
        if line.lower().startswith("location:")
    )
    sent = laptop.run(
        *pinned(CLIENT_CPU, "curl", *common, "-o", "/dev/null", "-w", "%{http_code}"),
        *("-X", "PATCH", "-T", str(path), "-H", "Upload-Offset: 0"),
        *("-H", "Content-Type: application/offset+octet-stream", f"{base}{location}"),
        timeout_s=TRANSFER_TIMEOUT_S,
    ).stdout
    assert sent.strip() == "204", sent


def time_discover(laptop: Host, env: dict[str, str]) -> dict[str, Any]:
    """Run `lanpair discover --json` once from laptop; return its wall time and result."""
    started = time.monotonic()
    out = laptop.run(
        *pinned(CLIENT_CPU, sys.executable, "-m", "lanpair", "discover", "--json"), env=env
    ).stdout
    wall = time.monotonic() - started
    found = json.loads(out)
    return {
        "wall_s": round(wall, 3),
        "found": len(found),
        "reachable": sum(f["reachable"] for f in found),
    }


def summarize(
    rounds: list[dict[str, Any]], discovers: list[dict[str, Any]], size_mib: int
) -> dict[str, Any]:
    """Return the medians."""

    def median(tool: str, key: str) -> float | None:
        values = [r[tool][key] for r in rounds if r[tool][key] is not None]
        return round(statistics.median(values), 3) if values else None

    summary: dict[str, Any] = {
        "size_mib": size_mib,
        "rounds": len(rounds),
        "ratio_median": statistics.median(r["ratio"] for r in rounds) if rounds else None,
        "ratios": [r["ratio"] for r in rounds],
    }
    for tool in ("curl", "lanpair"):
        summary[tool] = {
            k: median(tool, k) for k in ("wall_s", "mib_s", "client_cpu_s", "server_cpu_s")
        }
    summary["lanpair"]["transfer_s"] = median("lanpair", "transfer_s")
    if discovers:
        walls = [d["wall_s"] for d in discovers]
        summary["discover"] = {
            "runs": len(walls),
            "median_s": statistics.median(walls),
            "max_s": max(walls),
            "all_found": all(d["found"] >= 1 and d["reachable"] >= 1 for d in discovers),
        }
    return summary


if __name__ == "__main__":
    main()
