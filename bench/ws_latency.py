"""Live events (issue 4): from a photo landing in the library folder to ``file.added``.

Starts the real daemon (``python -m lanpair serve --no-mdns``, loopback only) on a new
temporary data directory and library, connects one WebSocket client to ``GET
/api/events`` as the owner (loopback, no Origin, no token), and lands small JPEGs (64x48,
random pixels, so no two are alike and none is a duplicate) in subfolders of the library by
hand, as a file manager or a copy tool would, two ways:

- atomic: write the file to a temporary name OUTSIDE the library (same filesystem), then
  ``os.rename`` it to ``<library>/bench-atomic/NAME.jpg``; the clock starts right after
  the rename;
- chunked: open ``<library>/bench-chunked/NAME.jpg`` and write it in 4 unbuffered chunks
  with 20 ms pauses between them, then close; the clock starts right after the close.

Files land ONE AT A TIME, the styles alternating: the next file lands only after the
previous one's ``file.added`` arrived, or after ``--timeout`` seconds (a miss). The latency
is ``time.monotonic()`` from the landing to the message's arrival at the client. After the
last file it waits ``--timeout`` once more for late and duplicate messages. A message
whose ``size`` is not the file's whole size (a half-written file announced) is counted
too. A style stops early after ``--give-up`` misses in a row, which is what happens when no
file watcher is running.

Before that, one upload through ``POST /api/upload`` checks that the client does receive
``file.added`` at all, so a run of misses means the watcher, not the client.

It prints, per style, p50 / p99 (nearest rank) / max in ms, the misses, late arrivals,
duplicates, other event types seen, and the daemon's CPU-ms per file (main process +
thumbnail workers, utime + stime from /proc). Goal (issue 4): p99 < 100 ms.

Run it from the repository root with the project's environment (Linux: it reads /proc):

    python bench/ws_latency.py                        # 1000 files of each style, plain HTTP
    python bench/ws_latency.py --quick                # 100 of each
    python bench/ws_latency.py --count 20 --timeout 2 --style atomic
    python bench/ws_latency.py --tls --json bench/out/ws-latency.json
    python bench/ws_latency.py --source /tmp/snapshot  # run lanpair from another checkout

The daemon is stopped by its PID (SIGTERM, then SIGKILL after 10 s); the temporary
directory (library included) is deleted at the end. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from common import family_cpu, log_tail, machine, percentile
from common import versions as package_versions
from PIL import Image

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
CHUNKS = 4
CHUNK_PAUSE_S = 0.020
PHOTO_SIZE = (64, 48)
GOAL_P99_MS = 100.0
STYLES = ("atomic", "chunked")


@dataclass(slots=True)
class Arrival:
    """One ``file.added`` message as the client got it."""

    at: float  # time.monotonic() when the client received it
    size: int
    folder: str


@dataclass(slots=True)
class StyleResult:
    """What one landing style measured."""

    landed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    late: int = 0
    duplicates: int = 0
    wrong_size: int = 0
    gave_up: bool = False


class Listener:
    """The WebSocket client: records every ``file.added`` by file name, counts the rest."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[Arrival]] = {}
        self.waiting: dict[str, asyncio.Future[Arrival]] = {}
        self.other: Counter[str] = Counter()

    def expect(self, name: str) -> asyncio.Future[Arrival]:
        """Return a future for the first ``file.added`` of ``name`` (made before it lands)."""
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self.waiting[name] = future
        return future

    async def listen(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Read messages until the socket closes."""
        async for message in socket:
            now = time.monotonic()
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            self.on_event(json.loads(message.data), now)

    def on_event(self, event: dict[str, Any], now: float) -> None:
        """File one event."""
        if event.get("type") != "file.added":
            self.other[str(event.get("type"))] += 1
            return
        item = event["data"]["item"]
        arrival = Arrival(now, int(item["size"]), str(item.get("folder")))
        self.arrivals.setdefault(item["name"], []).append(arrival)
        future = self.waiting.pop(item["name"], None)
        if future is not None and not future.done():
            future.set_result(arrival)


# -- landing files (blocking: run in a thread) -------------------------------------------------


def land_atomic(data: bytes, incoming: Path, target: Path) -> float:
    """Write outside the library, rename into it; return the time right after the rename."""
    temp = incoming / (target.name + ".part")
    temp.write_bytes(data)
    os.rename(temp, target)  # noqa: PTH104 - the rename itself is what is measured
    return time.monotonic()


def land_chunked(data: bytes, incoming: Path, target: Path) -> float:
    """Write in place in 4 chunks with pauses; return the time right after the close."""
    step = math.ceil(len(data) / CHUNKS)
    with target.open("wb", buffering=0) as file:  # every chunk reaches the kernel (and inotify)
        for start in range(0, len(data), step):
            if start:
                time.sleep(CHUNK_PAUSE_S)
            file.write(data[start : start + step])
    return time.monotonic()


LANDERS: dict[str, Callable[[bytes, Path, Path], float]] = {
    "atomic": land_atomic,
    "chunked": land_chunked,
}


def make_photo(index: int) -> bytes:
    """Return a small valid JPEG of random pixels (so every file's content differs)."""
    image = Image.frombytes("RGB", PHOTO_SIZE, os.urandom(PHOTO_SIZE[0] * PHOTO_SIZE[1] * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, comment=f"lanpair bench {index}".encode())
    return out.getvalue()


# -- the daemon ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Daemon:
    """A started lanpair daemon."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def start_daemon(source: Path, work: Path, library: Path, *, tls: bool) -> Daemon:
    """Start ``lanpair serve`` from ``source`` on a new data dir; wait for daemon.json."""
    data_dir, config, log = work / "data", work / "empty.toml", work / "daemon.log"
    config.write_text("")  # no user config takes part
    command = [
        sys.executable,
        "-P",  # no current directory on sys.path: lanpair comes from PYTHONPATH (``source``)
        *("-m", "lanpair", "serve", "--config", str(config), "--host", "127.0.0.1"),
        *("--port", "0", "--no-mdns", "--data-dir", str(data_dir), "--library", str(library)),
        *("--reserve", "0", "--tls" if tls else "--no-tls"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPAIR_")}
    env["PYTHONPATH"] = str(source)
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file, env=env
        )
    daemon = Daemon(proc, "", log)
    runtime = data_dir / "daemon.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not runtime.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_daemon(daemon)
            raise RuntimeError(f"the daemon did not start; its log:\n{log_tail(log)}")
        time.sleep(0.05)
    daemon.url = json.loads(runtime.read_text())["url"]
    return daemon


def stop_daemon(daemon: Daemon) -> None:
    """SIGTERM the daemon by its PID; SIGKILL it if it has not exited in time."""
    if daemon.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.proc.pid, signal.SIGTERM)
        try:
            daemon.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait()


# -- the run ------------------------------------------------------------------------------------


async def preflight(session: aiohttp.ClientSession, url: str, listener: Listener) -> float:
    """Upload one photo through the API; return ms until its file.added reached the client."""
    form = aiohttp.FormData()
    form.add_field("file", make_photo(-1), filename="preflight.jpg", content_type="image/jpeg")
    arrived = listener.expect("preflight.jpg")
    started = time.monotonic()
    async with session.post(f"{url}/api/upload", data=form) as response:
        if response.status != 200:
            raise RuntimeError(f"the preflight upload answered {response.status}")
    try:
        arrival = await asyncio.wait_for(arrived, 10.0)
    except TimeoutError:
        raise RuntimeError("no file.added for an upload: the client hears nothing") from None
    return (arrival.at - started) * 1000


async def land_one(
    listener: Listener, style: str, data: bytes, incoming: Path, target: Path, timeout_s: float
) -> float | None:
    """Land one file; return its latency in ms, or None if no message came in time."""
    arrived = listener.expect(target.name)
    landed = await asyncio.to_thread(LANDERS[style], data, incoming, target)
    try:
        arrival = await asyncio.wait_for(arrived, timeout_s)
    except TimeoutError:
        listener.waiting.pop(target.name, None)
        return None
    return (arrival.at - landed) * 1000


async def land_all(
    listener: Listener, library: Path, incoming: Path, args: argparse.Namespace
) -> dict[str, StyleResult]:
    """Land ``count`` files of each style, alternating, one at a time."""
    styles = STYLES if args.style == "both" else (args.style,)
    results = {style: StyleResult() for style in styles}
    in_a_row = dict.fromkeys(styles, 0)
    for index in range(args.count):
        for style in styles:
            result = results[style]
            if result.gave_up:
                continue
            data = await asyncio.to_thread(make_photo, index)
            target = library / f"bench-{style}" / f"{style}-{index:05d}.jpg"
            latency = await land_one(listener, style, data, incoming, target, args.timeout)
            result.landed += 1
            if latency is None:
                result.misses.append(target.name)
                in_a_row[style] += 1
                result.gave_up = in_a_row[style] >= args.give_up
            else:
                result.latencies_ms.append(latency)
                in_a_row[style] = 0
        if index % 100 == 99:
            done = ", ".join(f"{s} {len(r.latencies_ms)}/{r.landed}" for s, r in results.items())
            print(f"  {index + 1} landed each: {done} arrived in time", flush=True)
        if all(r.gave_up for r in results.values()):
            break
    return results


def check_arrivals(
    listener: Listener, results: dict[str, StyleResult], sizes: dict[str, int]
) -> None:
    """Count late arrivals, duplicates and messages with the wrong size, per style."""
    for name, arrivals in listener.arrivals.items():
        style = name.split("-", 1)[0]
        result = results.get(style)
        if result is None:
            continue
        result.duplicates += len(arrivals) - 1
        result.wrong_size += sum(1 for a in arrivals if a.size != sizes.get(name))
        if name in result.misses:
            result.late += 1


async def measure(
    url: str, library: Path, incoming: Path, args: argparse.Namespace, pid: int
) -> dict[str, Any]:
    """Connect, check with one upload, land every file, collect stragglers."""
    listener = Listener()
    connector = aiohttp.TCPConnector(ssl=False if url.startswith("https:") else None)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(f"{url}/api/events", autoping=True) as socket,
    ):
        reader = asyncio.create_task(listener.listen(socket), name="events-listener")
        preflight_ms = await preflight(session, url, listener)
        print(f"preflight: upload -> file.added in {preflight_ms:.1f} ms", flush=True)
        cpu_before = sum(family_cpu(pid))
        started = time.monotonic()
        results = await land_all(listener, library, incoming, args)
        wall_s = time.monotonic() - started
        cpu_s = sum(family_cpu(pid)) - cpu_before
        await asyncio.sleep(args.timeout)  # late and duplicate messages
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    sizes = {
        path.name: path.stat().st_size
        for style in results
        for path in (library / f"bench-{style}").iterdir()
    }
    check_arrivals(listener, results, sizes)
    landed = sum(r.landed for r in results.values())
    return {
        "preflight_ms": preflight_ms,
        "wall_s": wall_s,
        "daemon_cpu_ms_per_file": cpu_s * 1000 / max(1, landed),
        "other_events": dict(listener.other),
        "styles": {style: asdict(result) for style, result in results.items()},
    }


def print_report(report: dict[str, Any]) -> None:
    """Print the results for a person."""
    m = report["machine"]
    print()
    print(f"lanpair file -> file.added latency, {report['date']}, {report['scheme'].upper()}")
    print(
        f"machine: nproc {m['nproc']}, {m['cpu_model']}, kernel {m['kernel']}, load average "
        f"{m['loadavg']} at the start, {m['loadavg_end']} at the end"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"lanpair from {report['source']}")
    print(
        f"one file at a time, styles alternating, timeout {report['timeout_s']:g} s; "
        f"{report['wall_s']:.0f} s in all; daemon {report['daemon_cpu_ms_per_file']:.1f} "
        f"CPU-ms per file (with thumbnail workers)"
    )
    print(
        f"\n{'style':<9}{'landed':>7}{'arrived':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'misses':>7}{'late':>6}{'dupes':>6}{'bad size':>9}"
    )
    for style, r in report["styles"].items():
        values = r["latencies_ms"]
        cells = (
            [f"{x:.1f}" for x in (statistics.median(values), percentile(values, 0.99), max(values))]
            if values
            else ["-", "-", "-"]
        )
        print(
            f"{style:<9}{r['landed']:>7}{len(values):>8}{cells[0]:>8}{cells[1]:>8}{cells[2]:>8}"
            f"{len(r['misses']):>7}{r['late']:>6}{r['duplicates']:>6}{r['wrong_size']:>9}"
        )
        if r["gave_up"]:
            print(f"  {style}: stopped after {report['give_up']} misses in a row")
    if report["other_events"]:
        print(f"other events seen: {report['other_events']}")
    print("\ngoal of issue 4 (p99 < 100 ms, nothing missed):")
    for style, r in report["styles"].items():
        values = r["latencies_ms"]
        met = bool(values) and percentile(values, 0.99) < GOAL_P99_MS and not r["misses"]
        print(f"  {'met   ' if met else 'MISSED'} {style}")


def versions() -> dict[str, str]:
    """Return the versions that matter for these numbers."""
    return package_versions("aiohttp", "pillow", "watchdog", "lanpair")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Make the folders, start the daemon, measure, stop it, clean up."""
    about_machine = machine()
    work = Path(tempfile.mkdtemp(prefix="lanpair-ws-latency-"))
    library, incoming = work / "library", work / "incoming"
    for folder in (incoming, *(library / f"bench-{style}" for style in STYLES)):
        folder.mkdir(parents=True)
    if incoming.stat().st_dev != library.stat().st_dev:
        raise SystemExit("the staging folder must be on the library's filesystem")
    daemon = None
    try:
        daemon = start_daemon(args.source.resolve(), work, library, tls=args.tls)
        print(f"lanpair {daemon.url} (PID {daemon.proc.pid}), library {library}", flush=True)
        report = asyncio.run(measure(daemon.url, library, incoming, args, daemon.proc.pid))
    except BaseException:
        if daemon is not None:
            print(log_tail(daemon.log), file=sys.stderr)
        raise
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        shutil.rmtree(work, ignore_errors=True)
    about_machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scheme": "https" if args.tls else "http",
        "source": str(args.source.resolve()),
        "timeout_s": args.timeout,
        "give_up": args.give_up,
        "machine": about_machine,
        "versions": versions(),
        **report,
    }


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 files of each style")
    parser.add_argument("--count", type=int, help="files of each style (default 1000)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each file (default 5)"
    )
    parser.add_argument("--style", choices=(*STYLES, "both"), default="both", help="how files land")
    parser.add_argument(
        "--give-up",
        type=int,
        default=10,
        metavar="N",
        help="stop a style after N misses in a row (default 10)",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="serve over TLS (self-signed, not verified by the client); default: plain HTTP",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the lanpair checkout to run (default: this one)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    args.count = args.count or (100 if args.quick else 1000)
    return args


def main() -> int:
    """Run the benchmark and print (and maybe save) the results."""
    args = parse_args()
    report = run(args)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
