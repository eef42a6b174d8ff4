"""Uploads under load: many at once, one huge one with flat memory, a disk that fills up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Daemon, StartDaemon
from support import skip_or_fail
from test_api import bearer, pair
from test_library import library_files, upload

GiB = 1 << 30
MiB = 1 << 20


async def test_fifty_concurrent_uploads_from_five_devices(daemon: Daemon) -> None:
    """Fifty uploads at once from five devices all land whole, each in its device's folder."""
    devices = [await pair(daemon, f"Phone {n}", f"client-{n}") for n in range(5)]
    payloads = {(d["device_id"], n): os.urandom(200 * 1024) for d in devices for n in range(10)}
    results = await asyncio.gather(
        *(
            upload(
                daemon,
                next(d for d in devices if d["device_id"] == device_id)["device_token"],
                (f"photo-{n}.bin", content),
            )
            for (device_id, n), content in payloads.items()
        )
    )
    assert all(status == 200 for status, _ in results)
    stored = library_files(daemon)
    assert sorted(stored.values()) == sorted(payloads.values())
    folders = {relpath.split("/")[0] for relpath in stored}
    assert len(folders) == 5


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """Mount a 16 MiB tmpfs (root only) for a library that fills up."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_disk_that_fills_up_gives_507_and_keeps_nothing(
    small_disk: Path, make_daemon: StartDaemon
) -> None:
    """When the disk fills mid-upload (no Content-Length warning), 507; the partial is gone."""
    daemon = await make_daemon(library_root=small_disk / "library")
    device = await pair(daemon)

    async def body() -> Any:
        for _ in range(32):
            yield os.urandom(MiB)

    async with daemon.session(headers=bearer(device["device_token"])) as session:
        form = aiohttp.FormData()
        form.add_field("file", body(), filename="huge.bin")
        async with session.post("/api/upload", data=form) as response:
            assert response.status == 507
            assert (await response.json())["error"] == "insufficient_storage"
    assert library_files(daemon) == {}
    assert list(daemon.library.paths.staging.iterdir()) == []
    status, _ = await upload(daemon, device["device_token"], ("small.bin", b"x" * 1000))
    assert status == 200


@pytest.mark.slow
def test_a_1_gib_upload_streams_with_flat_memory(tmp_path: Path) -> None:
    """A 1 GiB upload through the real daemon keeps its peak RSS under 80 MiB."""
    from test_daemon import pair as pair_running
    from test_daemon import serving

    big = tmp_path / "big.bin"
    with big.open("wb") as file:
        file.truncate(GiB)

    with serving(tmp_path / "data", tmp_path / "log", "--reserve", "0") as running:
        device = pair_running(running)
        cert = tmp_path / "data" / "tls" / "cert.pem"
        port = running.url.rsplit(":", 1)[1]
        result = subprocess.run(
            [
                "curl",
                "-sS",
                "--cacert",
                str(cert),
                f"https://localhost:{port}/api/upload",
                "-H",
                f"Authorization: Bearer {device['device_token']}",
                "-F",
                f"file=@{big}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        peak_kib = _peak_rss_kib(running.process.pid)
    stored = list((tmp_path / "data" / "uploads").rglob("big.bin"))
    assert [p.stat().st_size for p in stored] == [GiB]
    assert peak_kib < 80 * 1024, f"peak RSS {peak_kib // 1024} MiB"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="reads /proc and mounts tmpfs: Linux only")
