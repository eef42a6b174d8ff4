"""Uploads under load and on other disks: many at once, one huge one with flat memory, a disk
that fills up, an exFAT disk (no hard links)."""

from __future__ import annotations

import asyncio
import os
import shutil
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


@pytest.fixture
def exfat_disk(tmp_path: Path) -> Iterator[Path]:
    """Mount a 64 MiB exFAT image (FUSE, over a loop device; root only): a filesystem
    without hard links, as USB disks and some network shares are."""
    if os.geteuid() != 0:
        skip_or_fail("mounting an exFAT image needs root")
    if not (shutil.which("mkfs.exfat") and shutil.which("mount.exfat-fuse")):
        skip_or_fail("needs exfatprogs and exfat-fuse (apt-get install exfatprogs exfat-fuse)")
    image, mount = tmp_path / "exfat.img", tmp_path / "exfat"
    mount.mkdir()
    with image.open("wb") as out:
        out.truncate(64 * MiB)
    subprocess.run(["mkfs.exfat", str(image)], check=True, capture_output=True)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mount.exfat-fuse", loop, str(mount)], check=True, capture_output=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)


async def test_uploads_renames_and_restores_work_on_a_disk_without_hard_links(
    exfat_disk: Path, make_daemon: StartDaemon
) -> None:
    """On exFAT, link() is refused: files are then moved in under a name taken exclusively
    first, still never over another file (every upload there once failed with a 500)."""
    library = exfat_disk / "library"
    daemon = await make_daemon(library_root=library)
    await asyncio.wait_for(daemon.library._scanned.wait(), 10)
    device = await pair(daemon)
    token = device["device_token"]
    (exfat_disk / "probe").touch()
    with pytest.raises(PermissionError):  # what this test is about
        os.link(exfat_disk / "probe", exfat_disk / "probe-link")

    first = await upload(daemon, token, ("a.txt", b"first"), ("b.txt", b"second"))
    same_name = await upload(daemon, token, ("a.txt", b"another a"))
    a_id, b_id = (f["id"] for f in first[1]["files"])
    async with daemon.session(headers=bearer(token)) as session:
        async with session.post(f"/api/files/{a_id}/rename", json={"name": "b.txt"}) as taken:
            assert taken.status == 409
        async with session.post(f"/api/files/{a_id}/rename", json={"name": "c.txt"}) as renamed:
            assert renamed.status == 200
        async with session.delete(f"/api/files/{b_id}") as deleted:
            assert deleted.status == 200
        async with session.post(f"/api/files/{b_id}/restore", json={}) as restored:
            assert restored.status == 200

    assert (first[0], same_name[0]) == (200, 200)
    assert same_name[1]["files"][0]["stored_as"].endswith("/a (1).txt")
    assert sorted(library_files(daemon).values()) == [b"another a", b"first", b"second"]
    names = sorted(Path(relpath).name for relpath in library_files(daemon))
    assert names == ["a (1).txt", "b.txt", "c.txt"]
    assert list(daemon.library.paths.staging.iterdir()) == []


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
