"""Pairing latency (issue 2): how long POST /api/pairing/generate and /confirm take.

Starts a real daemon (``python -m lanpair serve``) on a fresh temporary data directory,
bound to 127.0.0.1 with mDNS off, and talks to it over ONE keep-alive connection, the
way the pairing page does:

1. 20 warm-up generate calls, then N timed ones (each returns a pairing token);
2. 20 warm-up confirm calls, then N timed ones, each spending one of those tokens with its
   own device_id, so every confirm pairs a new device.

Latency is wall-clock time per call, from sending the request to having read the whole
response body. It prints p50/p90/p99/max in ms per call type, the daemon's CPU time (utime +
stime of its process, all threads, from /proc) per 1000 timed calls, the machine and the
versions, and compares the p50s with the seed's claims and the goal (p50 < 5 ms each).

Run it from the repository root with the project's environment (Linux only: it reads /proc):

    python bench/pairing_latency.py                  # HTTPS, pinned with SpkiPin, 1000 calls
    python bench/pairing_latency.py --no-tls         # plain HTTP
    python bench/pairing_latency.py --calls 200 --json bench/out/run.json --profile

``--json FILE`` also writes the results as JSON; ``--profile`` then times the parts of one
generate in-process (QR encoding, SVG, PNG, the database writes, JSON) and prints a cProfile
of 20 QR renderings, using the URL the daemon put in its last code.

The daemon's log goes to daemon.log in the temporary directory; its last lines are printed
only if something fails. The daemon is always stopped with SIGTERM (then SIGKILL after
10 s), by its PID. Every request goes to 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from aiohttp_pin import SpkiPin
from common import cpu_seconds, machine, print_log_tail
from common import versions as package_versions

WARMUP = 20
CLAIMS_MS = {"generate": 50.0, "confirm": 20.0}  # what the seed said the calls take
GOAL_P50_MS = 5.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
LISTENING_RE = re.compile(r"lanpair: listening on (\S+)")
PROFILE_REPS = 50
PROFILED_RENDERS = 20


@dataclass(frozen=True, slots=True)
class Daemon:
    """A started daemon: its PID, base URL and key fingerprint (None over plain HTTP)."""

    pid: int
    url: str
    fingerprint: str | None


@dataclass(frozen=True, slots=True)
class Phase:
    """The timed calls of one kind."""

    latencies_ms: list[float]
    daemon_cpu_s: float
    client_cpu_s: float

    def summary(self) -> dict[str, float]:
        """Return p50, p90, p99 and max in ms, and CPU seconds per 1000 calls."""
        cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        per_1000 = 1000 / len(self.latencies_ms)
        return {
            "p50_ms": cuts[49],
            "p90_ms": cuts[89],
            "p99_ms": cuts[98],
            "max_ms": max(self.latencies_ms),
            "daemon_cpu_s_per_1000": self.daemon_cpu_s * per_1000,
            "client_cpu_s_per_1000": self.client_cpu_s * per_1000,
        }


def main() -> int:
    """Parse the arguments, run the benchmark, print (and maybe save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls of each kind")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="HTTPS pinned with SpkiPin (default), or plain HTTP with --no-tls",
    )
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="untimed pause before each call, like a person between clicks (default: none)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results here")
    parser.add_argument(
        "--profile", action="store_true", help="then time the parts of one generate in-process"
    )
    args = parser.parse_args()
    if args.calls < 2:
        parser.error("--calls must be at least 2")
    results = asyncio.run(run(args.calls, tls=args.tls, pause_s=args.pause_ms / 1000))
    print_report(results)
    if args.profile:
        results["profile"] = profile_generate(results["last_generate"])
    if args.json:
        saved = {k: v for k, v in results.items() if k != "last_generate"}
        saved["qr_url_chars"] = len(results["last_generate"]["url"])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(saved, indent=2) + "\n")
    return 0


async def run(calls: int, *, tls: bool, pause_s: float = 0.0) -> dict[str, Any]:
    """Start a daemon, time both phases against it, stop it; return the results."""
    with tempfile.TemporaryDirectory(prefix="lanpair-bench-") as temp:
        async with running_daemon(Path(temp), tls=tls) as daemon:
            if tls and not daemon.url.startswith("https://"):
                raise RuntimeError(f"asked for TLS but the daemon serves {daemon.url}")
            phases, last_generate, connections = await measure(daemon, calls, pause_s)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scheme": "https" if tls else "http",
        "calls": calls,
        "pause_ms": pause_s * 1000,
        "warmup": WARMUP,
        "connections_opened": connections,
        "machine": machine(),
        "versions": versions(),
        "command": " ".join(["python", *sys.argv]),
        "generate": phases["generate"].summary(),
        "confirm": phases["confirm"].summary(),
        "last_generate": last_generate,
    }


@contextlib.asynccontextmanager
async def running_daemon(temp: Path, *, tls: bool) -> AsyncIterator[Daemon]:
    """Run ``lanpair serve`` on a fresh data directory until the block ends."""
    config = temp / "config.toml"  # empty: no user config file takes part
    config.write_text("")
    data_dir = temp / "data"
    log_path = temp / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPAIR_")}
    command = [
        sys.executable,
        "-m",
        "lanpair",
        "serve",
        "--config",
        str(config),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--no-mdns",
        "--data-dir",
        str(data_dir),
        "--tls" if tls else "--no-tls",
    ]
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            env=env,
        )
        drain: asyncio.Task[None] | None = None
        try:
            assert proc.stdout is not None
            url = await asyncio.wait_for(listening_url(proc.stdout), START_TIMEOUT_S)
            drain = asyncio.create_task(drain_stream(proc.stdout))
            runtime = json.loads((data_dir / "daemon.json").read_text())
            yield Daemon(pid=proc.pid, url=url, fingerprint=runtime["fingerprint"])
        except BaseException:
            print_log_tail(log_path)
            raise
        finally:
            await stop(proc)
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain


async def listening_url(stdout: asyncio.StreamReader) -> str:
    """Read the daemon's stdout up to its listening line; return the URL in it."""
    while line := await stdout.readline():
        if match := LISTENING_RE.search(line.decode(errors="replace")):
            return match.group(1)
    raise RuntimeError("the daemon exited before it printed its listening line")


async def drain_stream(stream: asyncio.StreamReader) -> None:
    """Keep reading so the daemon never blocks on a full pipe."""
    while await stream.read(65536):
        pass


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the daemon by its PID; SIGKILL it if it has not exited in time."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def measure(
    daemon: Daemon, calls: int, pause_s: float
) -> tuple[dict[str, Phase], dict[str, Any], int]:
    """Time ``calls`` generates then ``calls`` confirms over one keep-alive connection.

    Returns the phases, the last generate response and how many connections were opened.
    """
    opened: list[int] = []

    async def on_connection(*_: Any) -> None:
        opened.append(1)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connection)
    pin: SpkiPin | bool = SpkiPin(daemon.fingerprint) if daemon.fingerprint else False
    connector = aiohttp.TCPConnector(limit=1, ssl=pin)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=REQUEST_TIMEOUT,
        cookie_jar=aiohttp.DummyCookieJar(),  # the device cookie must not ride on later calls
        trace_configs=[trace],
    ) as session:

        async def post(path: str, body: dict[str, str]) -> tuple[float, dict[str, Any]]:
            start = time.perf_counter()
            async with session.post(daemon.url + path, json=body) as response:
                raw = await response.read()
            elapsed_ms = (time.perf_counter() - start) * 1000
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}: {raw[:300]!r}")
            data: dict[str, Any] = json.loads(raw)
            return elapsed_ms, data

        async def generate() -> tuple[float, dict[str, Any]]:
            return await post("/api/pairing/generate", {})

        tokens: list[str] = []
        last_generate: dict[str, Any] = {}

        def keep_token(data: dict[str, Any]) -> None:
            nonlocal last_generate
            tokens.append(data["pairing_token"])
            last_generate = data

        gen = await timed_phase(daemon.pid, generate, WARMUP, calls, keep_token, pause_s)

        run_id = os.urandom(4).hex()
        spent = iter(range(WARMUP + calls))

        async def confirm() -> tuple[float, dict[str, Any]]:
            i = next(spent)
            device_id = f"bench-{run_id}-{i:05d}"
            body = {
                "pairing_token": tokens[i],
                "device_name": f"bench phone {i}",
                "device_id": device_id,
            }
            elapsed_ms, data = await post("/api/pairing/confirm", body)
            if not data.get("device_token") or data.get("device_name") != body["device_name"]:
                raise RuntimeError(f"unexpected confirm answer for {device_id}: {data}")
            return elapsed_ms, data

        con = await timed_phase(daemon.pid, confirm, WARMUP, calls, lambda _: None, pause_s)
    return {"generate": gen, "confirm": con}, last_generate, len(opened)


async def timed_phase(
    pid: int,
    call: Callable[[], Any],
    warmup: int,
    calls: int,
    keep: Callable[[dict[str, Any]], None],
    pause_s: float = 0.0,
) -> Phase:
    """Make ``warmup`` untimed then ``calls`` timed sequential calls; measure CPU around them."""
    for _ in range(warmup):
        _, data = await call()
        keep(data)
    latencies: list[float] = []
    daemon_before, client_before = cpu_seconds(pid), time.process_time()
    for _ in range(calls):
        if pause_s:
            await asyncio.sleep(pause_s)
        elapsed_ms, data = await call()
        latencies.append(elapsed_ms)
        keep(data)
    return Phase(
        latencies_ms=latencies,
        daemon_cpu_s=cpu_seconds(pid) - daemon_before,
        client_cpu_s=time.process_time() - client_before,
    )


def versions() -> dict[str, str]:
    """Return the versions that matter for these numbers."""
    return package_versions("aiohttp", "segno", "lanpair")


def qr_version(url: str) -> int:
    """Return the QR version the daemon's URL needs (what segno will draw)."""
    import segno

    return int(segno.make_qr(url, error="m").version)


def print_report(results: dict[str, Any]) -> None:
    """Print the results for a person."""
    m, v = results["machine"], results["versions"]
    url = results["last_generate"]["url"]
    print(
        f"lanpair pairing latency: {results['scheme']}, {results['calls']} timed calls of each "
        f"after {results['warmup']} warm-up, {results['connections_opened']} connection(s) opened"
    )
    print(f"date:     {results['date']}")
    print(f"machine:  nproc {m['nproc']}, {m['cpu_model']}, load average {m['loadavg']}")
    print(
        f"versions: Python {v['python']}, aiohttp {v['aiohttp']}, segno {v['segno']}, "
        f"lanpair {v['lanpair']}"
    )
    print(f"QR:       {len(url)}-character URL, version {qr_version(url)}, error level M")
    print()
    columns = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    print(
        f"{'call':<9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'daemon CPU s/1000':>19}{'client CPU s/1000':>19}"
    )
    for name in ("generate", "confirm"):
        s = results[name]
        print(
            f"{name:<9}"
            + "".join(f"{s[k]:>9.2f}" for k in columns)
            + f"{s['daemon_cpu_s_per_1000']:>19.2f}{s['client_cpu_s_per_1000']:>19.2f}"
        )
    print()
    print(
        "seed's claims: generate ~{:.0f} ms, confirm ~{:.0f} ms".format(
            CLAIMS_MS["generate"], CLAIMS_MS["confirm"]
        )
    )
    for name in ("generate", "confirm"):
        p50 = results[name]["p50_ms"]
        verdict = "met" if p50 < GOAL_P50_MS else "NOT met"
        print(f"goal {name} p50 < {GOAL_P50_MS:.0f} ms: {verdict} (p50 {p50:.2f} ms)")


def profile_generate(generated: dict[str, Any]) -> dict[str, float]:
    """Time the parts of one generate in-process and print a cProfile of one QR rendering."""
    import segno

    from lanpair import qr

    url = generated["url"]
    code = segno.make_qr(url, error="m")
    parts: dict[str, Callable[[], object]] = {
        "segno.make_qr (encode, try all 8 masks)": lambda: segno.make_qr(url, error="m"),
        "  the same with the mask fixed (no search)": lambda: segno.make_qr(
            url, error="m", mask=code.mask
        ),
        "code.svg_inline(scale=4)": lambda: code.svg_inline(scale=4, title="lanpair"),
        "code.png_data_uri(scale=6)": lambda: code.png_data_uri(scale=6, border=4),
        "lanpair.qr.render (all three)": lambda: qr.render(url),
        "json.dumps of the response": lambda: json.dumps(generated),
    }
    medians = {name: median_ms(func) for name, func in parts.items()}
    medians["Pairing.generate (3 SQLite writes)"] = asyncio.run(store_generate_ms())
    print()
    print(f"in-process parts of one generate (median of {PROFILE_REPS}):")
    for name, ms in medians.items():
        print(f"  {name:<44}{ms:>8.2f} ms")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(PROFILED_RENDERS):
        qr.render(url)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
    print(f"\ncProfile of {PROFILED_RENDERS} lanpair.qr.render calls, by own time:")
    site_packages = str(Path(segno.__file__).parent.parent) + os.sep
    print("\n".join(out.getvalue().replace(site_packages, "").strip().splitlines()[-12:]))
    return medians


def median_ms(func: Callable[[], object]) -> float:
    """Return the median wall time of ``func`` in ms, after one untimed call."""
    func()
    times = []
    for _ in range(PROFILE_REPS):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def store_generate_ms() -> float:
    """Return the median time of Pairing.generate on a fresh database (no HTTP, no QR)."""
    from lanpair.clock import SystemClock
    from lanpair.pairing import Pairing
    from lanpair.store import Store

    with tempfile.TemporaryDirectory(prefix="lanpair-bench-db-") as temp:
        async with Store(Path(temp) / "lanpair.db") as store:
            pairing = Pairing(store, SystemClock(), pending_ttl_s=900, pairing_ttl_s=86400)
            await pairing.generate("127.0.0.1")
            times = []
            for _ in range(PROFILE_REPS):
                start = time.perf_counter()
                await pairing.generate("127.0.0.1")
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
