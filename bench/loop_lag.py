"""How long lanpair's event loop stalls while files stream through it.

Runs the real app in this process (real TLS socket, real SQLite, real library folder)
with a probe task that asks to wake every 5 ms and records how late it wakes, while
curl uploads and then downloads a large file. Prints the probe's p50/p99/max lateness.

    python bench/loop_lag.py [--mib 512] [--no-tls]

Needs curl. Traffic stays on 127.0.0.1; the file and the data folder are temporary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path

from lanpair import certs, tls
from lanpair.clock import SystemClock
from lanpair.library import Library
from lanpair.models import Site
from lanpair.netif import LocalAddressSet
from lanpair.pairing import Pairing
from lanpair.paths import LibraryPaths, Paths
from lanpair.server import Services, create_app, serving
from lanpair.store import Store

TICK_S = 0.005


async def probe(lateness_ms: list[float], stop: asyncio.Event) -> None:
    """Sleep 5 ms at a time and record how late each wake-up is."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lateness_ms.append((time.perf_counter() - start - TICK_S) * 1000)


async def curl(*args: str) -> str:
    """Run curl; return its stdout."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out.decode()


def summary(name: str, lateness_ms: list[float], speed: float) -> None:
    """Print one phase's loop lateness and throughput."""
    ordered = sorted(lateness_ms)
    p99 = ordered[int(len(ordered) * 0.99)]
    print(
        f"{name:9} {speed / 2**20:7.0f} MiB/s   loop lateness p50 "
        f"{statistics.median(ordered):5.2f} ms  p99 {p99:6.2f} ms  max {ordered[-1]:6.1f} ms "
        f"({len(ordered)} wake-ups)"
    )


async def main(mib: int, use_tls: bool) -> None:
    """Serve, stream a file up and down, report how late the loop was."""
    with tempfile.TemporaryDirectory(prefix="lanpair-lag-") as temp:
        root = Path(temp)
        big = root / "big.bin"
        with big.open("wb") as file:
            for _ in range(mib):
                file.write(bytes(1 << 20))
        paths = Paths(root / "data")
        paths.ensure()
        info = certs.ensure_certificate(paths.tls_key, paths.tls_cert, hostname="lag", addresses=[])
        clock = SystemClock()
        async with Store(paths.database) as store:
            library = Library(
                store,
                LibraryPaths(root / "library"),
                clock,
                thumbs_dir=paths.thumbs,
                pc_folder="PC",
                reserve_bytes=0,
            )
            async with library:
                sock = socket.create_server(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                site = Site(
                    name="PC",
                    device_id="pc_lag",
                    hostname="lag",
                    port=port,
                    scheme="https" if use_tls else "http",
                    ip="127.0.0.1",
                    fingerprint=info.fingerprint,
                )
                pairing = Pairing(store, clock, pending_ttl_s=900, pairing_ttl_s=86400)
                app = create_app(
                    Services(
                        store=store,
                        pairing=pairing,
                        library=library,
                        hub=library.hub,
                        clock=clock,
                        site=site,
                        owner_addresses=LocalAddressSet(),
                    )
                )
                context = tls.server_context(info) if use_tls else None
                async with serving(app, [sock], context, shutdown_timeout_s=3.0):
                    pending = await pairing.generate("127.0.0.1")
                    device = await pairing.confirm(pending.token, "lag", "lag", "127.0.0.1")
                    base = f"https://localhost:{port}" if use_tls else f"http://127.0.0.1:{port}"
                    auth = ["-H", f"Authorization: Bearer {device.device_token}"]
                    ca = ["--cacert", str(paths.tls_cert)] if use_tls else []
                    for phase in ("upload", "download"):
                        lateness: list[float] = []
                        stop = asyncio.Event()
                        task = asyncio.create_task(probe(lateness, stop), name="lag-probe")
                        if phase == "upload":
                            out = await curl(
                                *ca,
                                *auth,
                                "-F",
                                f"file=@{big}",
                                "-w",
                                "\n%{speed_upload}",
                                f"{base}/api/upload",
                            )
                            lines = out.strip().splitlines()
                            file_id = json.loads(lines[0])["files"][0]["id"]
                        else:
                            out = await curl(
                                *ca,
                                *auth,
                                "-o",
                                "/dev/null",
                                "-w",
                                "%{speed_download}",
                                f"{base}/files/{file_id}",
                            )
                            lines = [out]
                        stop.set()
                        await task
                        summary(phase, lateness, float(lines[-1]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the file, in MiB")
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.mib, arguments.tls))
