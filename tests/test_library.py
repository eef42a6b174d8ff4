"""Uploads, dedup, sync, the gallery and downloads over real HTTPS, on a real library folder."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Daemon, StartDaemon
from PIL import Image
from test_api import bearer, pair, status_of
from yarl import URL

from lanpair.errors import WorkerPoolStopped
from lanpair.library import item_json
from lanpair.models import FileRecord, ThumbState
from lanpair.server import api_library


def jpeg(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    """Return a small real JPEG."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "JPEG")
    return out.getvalue()


def form(*files: tuple[str, bytes], modified_ms: int | None = None) -> aiohttp.FormData:
    """Build a multipart upload the way the page does: optional modified, then each file."""
    data = aiohttp.FormData(quote_fields=False)
    for name, content in files:
        if modified_ms is not None:
            data.add_field("modified", str(modified_ms))
        data.add_field(
            "file", io.BytesIO(content), filename=name, content_type="application/octet-stream"
        )
    return data


async def upload(
    daemon: Daemon, token: str, *files: tuple[str, bytes], modified_ms: int | None = None
) -> tuple[int, dict[str, Any]]:
    """Upload files as a device; return the status and the JSON answer."""
    async with (
        daemon.session(headers=bearer(token)) as device,
        device.post("/api/upload", data=form(*files, modified_ms=modified_ms)) as response,
    ):
        return response.status, await response.json()


async def thumbnail_drawn(daemon: Daemon, file_id: int) -> FileRecord:
    """Wait for the thumbnail drawn on a file's arrival; return the file's record."""
    async with asyncio.timeout(10):
        while True:
            record = await daemon.store.files.get(file_id)
            if record is not None and record.thumb is ThumbState.READY:
                return record
            await asyncio.sleep(0.02)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Poll ``condition`` until it holds (failing after ``timeout_s``). Blocking."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def library_files(daemon: Daemon) -> dict[str, bytes]:
    """Return every file under the library (lanpair's own folder excluded) with its bytes."""
    root = daemon.library.paths.root
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".lanpair" not in path.relative_to(root).parts
    }


@pytest.fixture
async def phone(daemon: Daemon) -> dict[str, Any]:
    """Return a paired device of the daemon."""
    return await pair(daemon, "Anna's phone", "anna")


async def test_an_upload_lands_in_the_devices_folder_with_its_date(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """A photo is stored byte for byte under the device's folder, dated as the phone said."""
    photo = jpeg()
    status, body = await upload(
        daemon, phone["device_token"], ("IMG_0001.jpg", photo), modified_ms=1_600_000_000_000
    )
    assert status == 200
    (result,) = body["files"]
    assert result["ok"] is True
    assert result["duplicate"] is False
    assert result["type"] == "image"
    assert result["sha256"] == hashlib.sha256(photo).hexdigest()
    assert result["stored_as"].startswith("Anna's phone (")
    stored = daemon.library.paths.root / result["stored_as"]
    assert stored.read_bytes() == photo
    assert stored.stat().st_mtime == 1_600_000_000
    item = result["item"]
    assert (item["width"], item["height"], item["device"]) == (64, 48, phone["device_id"])
    assert item["path"] == f"/files/{result['id']}"
    assert not list((daemon.library.paths.staging).iterdir())


async def test_many_files_in_one_request_and_per_file_refusals(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """A mixed request answers 200 with per-file results; an all-refused one answers 400."""
    status, body = await upload(
        daemon,
        phone["device_token"],
        ("a.jpg", jpeg(color="blue")),
        ("../../escape.jpg", b"x"),
        ("b.txt", b"hello"),
    )
    assert status == 200
    assert [r["ok"] for r in body["files"]] == [True, False, True]
    assert body["files"][1]["error"] == "unsafe_name"
    status, body = await upload(daemon, phone["device_token"], ("/etc/passwd", b"x"))
    assert status == 400
    assert body["files"][0]["ok"] is False


async def test_files_either_side_of_the_small_file_path_arrive_byte_identical(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Up to 1 MiB a file is written in one go, past it streamed; in one request, in
    parts read 64 KiB first and doubling, every size lands whole and hashed right."""
    sizes = [0, 1, 64 * 1024 - 1, 64 * 1024 + 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20]
    contents = [os.urandom(size) for size in sizes]
    status, body = await upload(
        daemon, phone["device_token"], *((f"f{n}.bin", c) for n, c in enumerate(contents))
    )
    assert status == 200
    stored = library_files(daemon)
    for result, content in zip(body["files"], contents, strict=True):
        assert result["ok"], result
        assert result["sha256"] == hashlib.sha256(content).hexdigest()
        assert stored[result["stored_as"]] == content
    assert not list(daemon.library.paths.staging.iterdir())


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("<img src=x onerror=alert(1)>.jpg", "_img src=x onerror=alert(1)_.jpg"),
        ("CON.jpg", "_CON.jpg"),
        ("\u202egpj.exe", "gpj.exe"),
        ("zero\u200bwidth.png", "zerowidth.png"),
        ("x" * 300 + ".jpg", "x" * 251 + ".jpg"),
        ("trailing. ", "trailing"),
    ],
)
async def test_hostile_names_are_stored_under_safe_names(
    daemon: Daemon, phone: dict[str, Any], name: str, stored: str
) -> None:
    """Hostile but harmless names are cleaned; the file lands inside the device folder."""
    status, body = await upload(daemon, phone["device_token"], (name, os.urandom(100)))
    assert status == 200
    assert body["files"][0]["stored_as"].split("/")[-1] == stored


@pytest.mark.parametrize(
    "name",
    ["../x.jpg", "a/../../x.jpg", "/etc/cron.d/x", "C:\\x.jpg", "..", "\\\\server\\share\\x"],
)
async def test_names_that_try_to_leave_are_refused_and_nothing_is_written(
    daemon: Daemon, phone: dict[str, Any], name: str
) -> None:
    """Traversal and absolute names get 400 and no file anywhere."""
    before = set(library_files(daemon))
    status, body = await upload(daemon, phone["device_token"], (name, b"payload"))
    assert status == 400
    assert body["files"][0]["error"] == "unsafe_name"
    assert set(library_files(daemon)) == before
    data_dir = daemon.library.paths.root.parent
    assert not [p for p in data_dir.parent.rglob("x*") if p.is_file()]


async def test_same_name_twice_keeps_both(daemon: Daemon, phone: dict[str, Any]) -> None:
    """A second file of the same name becomes 'name (1).ext'; the first is untouched."""
    first, second = jpeg(color="red"), jpeg(color="green")
    await upload(daemon, phone["device_token"], ("same.jpg", first))
    _, body = await upload(daemon, phone["device_token"], ("same.jpg", second))
    assert body["files"][0]["stored_as"].endswith("/same (1).jpg")
    names = {Path(k).name: v for k, v in library_files(daemon).items()}
    assert names["same.jpg"] == first
    assert names["same (1).jpg"] == second


async def test_racing_uploads_of_one_name_both_survive(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Twenty concurrent uploads named alike never overwrite one another."""
    contents = [os.urandom(50_000) for _ in range(20)]
    await asyncio.gather(
        *(upload(daemon, phone["device_token"], ("race.bin", c)) for c in contents)
    )
    stored = sorted(v for k, v in library_files(daemon).items() if "race" in k)
    assert stored == sorted(contents)


async def test_same_content_is_stored_once(daemon: Daemon, phone: dict[str, Any]) -> None:
    """Uploading content the library has answers duplicate with the existing item."""
    photo = jpeg(color="purple")
    _, first = await upload(daemon, phone["device_token"], ("one.jpg", photo))
    _, again = await upload(daemon, phone["device_token"], ("two.jpg", photo))
    assert again["files"][0]["duplicate"] is True
    assert again["files"][0]["id"] == first["files"][0]["id"]
    assert sum(v == photo for v in library_files(daemon).values()) == 1
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.get("/api/gallery") as response,
    ):
        items = (await response.json())["items"]
    assert [i["name"] for i in items] == ["one.jpg"]


async def test_copies_arriving_together_are_stored_once(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Eight uploads of one content at once, under eight names (a folder holding a photo
    several times, pushed files in parallel): one file, the other seven answered as its
    duplicates (they once raced past the look for a copy, and all were stored)."""
    photo = jpeg(color="teal")
    answers = await asyncio.gather(
        *(upload(daemon, phone["device_token"], (f"copy-{n}.jpg", photo)) for n in range(8))
    )

    files = [body["files"][0] for _, body in answers]
    assert sum(v == photo for v in library_files(daemon).values()) == 1
    assert len({f["id"] for f in files}) == 1
    assert sorted(f["duplicate"] for f in files) == [False] + [True] * 7


async def test_sync_manifest_says_what_the_pc_lacks(daemon: Daemon, phone: dict[str, Any]) -> None:
    """Files present by name and size, or by hash, are present; the rest are missing."""
    photo = jpeg(color="orange")
    await upload(daemon, phone["device_token"], ("have.jpg", photo))
    manifest = [
        {"name": "have.jpg", "size": len(photo), "modified": 0},
        {
            "name": "renamed.jpg",
            "size": len(photo),
            "modified": 0,
            "sha256": hashlib.sha256(photo).hexdigest(),
        },
        {"name": "new.jpg", "size": 10, "modified": 0},
        {"name": "have.jpg", "size": len(photo) + 1, "modified": 0},
    ]
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.post("/api/sync", json=manifest) as response:
            assert response.status == 200
            assert await response.json() == {
                "missing": ["new.jpg", "have.jpg"],
                "present": ["have.jpg", "renamed.jpg"],
            }
        async with device.post(f"/api/sync/{phone['device_token']}", json=[]) as response:
            assert response.status == 200
    async with daemon.session() as owner, owner.get("/api/pairing/devices") as response:
        (device_row,) = await response.json()
    assert device_row["last_sync"] is not None
    assert device_row["file_count"] == 1


async def test_gallery_pages_with_a_cursor_and_filters(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Newest first, a page at a time, filtered by kind, device and name."""
    for n in range(7):
        await upload(
            daemon,
            phone["device_token"],
            (f"p{n}.jpg", jpeg(color=f"#{n}{n}0000")),
            modified_ms=(1_700_000_000 + n * 60) * 1000,
        )
    await upload(daemon, phone["device_token"], ("notes.txt", b"text"))
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        seen: list[str] = []
        cursor = ""
        while True:
            async with device.get(
                "/api/gallery", params={"limit": "3", "kind": "image", "cursor": cursor}
            ) as response:
                page = await response.json()
            seen += [i["name"] for i in page["items"]]
            if not page["next_cursor"]:
                break
            cursor = page["next_cursor"]
        assert seen == [f"p{n}.jpg" for n in reversed(range(7))]
        async with device.get("/api/gallery", params={"q": "note"}) as response:
            assert [i["name"] for i in (await response.json())["items"]] == ["notes.txt"]
        async with device.get("/api/gallery", params={"device": "pc"}) as response:
            assert (await response.json())["items"] == []
        for bad in ({"limit": "0"}, {"kind": "pdf"}, {"cursor": "garbage!"}, {"from": "soon"}):
            assert await status_of(device, "GET", "/api/gallery", params=bad) == 400


async def test_downloads_support_ranges_and_never_run_content(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Originals come back whole or by Range; HTML is an attachment under a sandbox CSP."""
    photo = jpeg(color="yellow")
    page = b"<html><script>alert(document.cookie)</script></html>"
    _, body = await upload(daemon, phone["device_token"], ("y.jpg", photo), ("evil.html", page))
    photo_id, page_id = (r["id"] for r in body["files"])
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.get(f"/files/{photo_id}") as response:
            assert await response.read() == photo
            assert response.content_type == "image/jpeg"
            assert "sandbox" in response.headers["Content-Security-Policy"]
            etag = response.headers["ETag"]
        async with device.get(f"/files/{photo_id}", headers={"Range": "bytes=10-19"}) as r:
            assert r.status == 206
            assert await r.read() == photo[10:20]
        async with device.get(f"/files/{photo_id}", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        # If-Range: the same version by its tag gets the range, another the whole file
        for validator, status, part in ((etag, 206, photo[10:20]), ('"other"', 200, photo)):
            headers = {"Range": "bytes=10-19", "If-Range": validator}
            async with device.get(f"/files/{photo_id}", headers=headers) as r:
                assert (r.status, await r.read()) == (status, part)
        # Several ranges, or another unit: ignored; a suffix of no bytes: unsatisfiable
        for wanted in ("bytes=0-1,5-6", "items=0-1"):
            async with device.get(f"/files/{photo_id}", headers={"Range": wanted}) as r:
                assert (r.status, await r.read()) == (200, photo)
        async with device.get(f"/files/{photo_id}", headers={"Range": "bytes=-0"}) as r:
            assert r.status == 416
            assert r.headers["Content-Range"] == f"bytes */{len(photo)}"
        async with device.get(f"/files/{page_id}") as response:
            assert response.content_type == "application/octet-stream"
            assert response.headers["Content-Disposition"].startswith("attachment;")
            assert "sandbox" in response.headers["Content-Security-Policy"]
        assert await status_of(device, "GET", "/files/999999") == 404
        assert await status_of(device, "GET", "/files/abc") == 404


async def test_big_downloads_over_tls_come_back_whole_and_by_range(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """A file of several read blocks and TLS slices: whole, and by ranges across blocks."""
    content = os.urandom(api_library.TLS_READ_BYTES * 2 + api_library.TLS_WRITE_BYTES + 3)
    _, body = await upload(daemon, phone["device_token"], ("big.bin", content))
    file_id = body["files"][0]["id"]
    block = api_library.TLS_READ_BYTES
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.get(f"/files/{file_id}") as response:
            assert await response.read() == content
        end = len(content) - 1
        for first, last in [(block - 7, 2 * block + 9), (5, 5), (end - 1, end)]:
            headers = {"Range": f"bytes={first}-{last}"}
            async with device.get(f"/files/{file_id}", headers=headers) as response:
                assert response.status == 206
                assert await response.read() == content[first : last + 1]


async def test_a_thumbnail_cut_off_by_a_stop_is_drawn_later_not_failed(
    make_daemon: StartDaemon,
) -> None:
    """The worker pool stopping under a draw (the daemon stopping) leaves the thumbnail to
    draw at the next start; it once marked it failed for good (a placeholder forever)."""
    daemon = await make_daemon()
    phone = await pair(daemon, "Phone", "stop-phone")

    async def stopped(*args: Any, **kwargs: Any) -> Any:
        raise WorkerPoolStopped("The worker pool has stopped.")

    daemon.library._thumbs._run = stopped  # the runner the library is given: the pool's seam
    _, body = await upload(daemon, phone["device_token"], ("cut.jpg", jpeg(color="olive")))
    record = await daemon.store.files.get(body["files"][0]["id"])
    assert record is not None
    assert await daemon.library.thumbnail(record) is None

    record = await daemon.store.files.get(record.id)
    assert record is not None
    assert record.thumb is ThumbState.PENDING


async def test_a_picture_edited_while_its_thumbnail_is_drawn_gets_the_new_one(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """The file changes while its thumbnail is drawn (an editor saving over it): that
    drawing is of the old picture and is dropped; the thumbnail shown is of the new one
    (the old one once stayed for good)."""
    _, body = await upload(daemon, phone["device_token"], ("edit.png", jpeg(64, 48)))
    record = await thumbnail_drawn(daemon, body["files"][0]["id"])
    source = daemon.library.paths.root / record.relpath
    thumbs = daemon.library._thumbs
    drawing = thumbs._run

    async def edited_meanwhile(job: Any, *args: Any) -> Any:
        drawn = await drawing(job, *args)
        Image.new("RGB", (30, 60), "red").save(source, "PNG")  # saved over, as it was drawn
        return drawn

    thumbs._run = edited_meanwhile
    await asyncio.to_thread(thumbs.forget, record)
    assert await daemon.library.thumbnail(record) is None
    thumbs._run = drawing
    fresh = None
    for _ in range(200):  # the watcher indexes the edit
        fresh = await daemon.store.files.get(record.id)
        if fresh is not None and fresh.mtime_ns != record.mtime_ns:
            break
        await asyncio.sleep(0.02)
    assert fresh is not None

    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.get(f"/thumbs/{record.id}") as response,
    ):
        thumb = Image.open(io.BytesIO(await response.read()))
    assert thumb.size == (30, 60)


async def test_thumbnails_are_drawn_again_when_their_cache_folder_went_away(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """The thumbnail cache deleted while the daemon runs: thumbnails are drawn again (a 500
    and a traceback each, until a restart, before)."""
    _, body = await upload(daemon, phone["device_token"], ("again.jpg", jpeg(color="teal")))
    await thumbnail_drawn(daemon, body["files"][0]["id"])
    shutil.rmtree(daemon.library._thumbs.dir)
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.get(f"/thumbs/{body['files'][0]['id']}") as response,
    ):
        assert response.status == 200
        assert response.content_type == "image/webp"


async def test_thumbnails_are_drawn_and_bad_images_get_a_placeholder(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """A JPEG gets a WebP thumbnail of at most 400 px; a corrupt one gets the placeholder."""
    _, body = await upload(
        daemon, phone["device_token"], ("big.jpg", jpeg(1200, 800)), ("broken.jpg", jpeg()[:200])
    )
    good, broken = (r["id"] for r in body["files"])
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.get(f"/thumbs/{good}") as response:
            assert response.content_type == "image/webp"
            thumb = Image.open(io.BytesIO(await response.read()))
            assert max(thumb.size) == 400
        async with device.get(f"/thumbs/{broken}") as response:
            assert response.status == 200
            assert response.content_type == "image/svg+xml"


async def test_library_routes_need_a_paired_device(daemon: Daemon, phone: dict[str, Any]) -> None:
    """Without a token, or with a revoked one, every library route answers 401."""
    _, body = await upload(daemon, phone["device_token"], ("x.jpg", jpeg()))
    file_id = body["files"][0]["id"]
    paths = [
        ("GET", "/api/gallery"),
        ("GET", f"/files/{file_id}"),
        ("GET", f"/thumbs/{file_id}"),
        ("POST", "/api/sync"),
    ]
    async with daemon.session(headers=bearer("Z" * 32)) as stranger:
        for method, path in paths:
            assert await status_of(stranger, method, path, json=[]) == 401
    async with daemon.session() as owner:
        await status_of(owner, "POST", f"/api/pairing/revoke/{phone['device_id']}", json={})
    async with daemon.session(headers=bearer(phone["device_token"])) as revoked:
        for method, path in paths:
            assert await status_of(revoked, method, path, json=[]) == 401


async def test_disk_space_reserve_gives_507_and_leaves_nothing(make_daemon: StartDaemon) -> None:
    """An upload that would eat into the reserve is refused with 507; no partial remains."""
    daemon = await make_daemon(reserve_bytes=1 << 60)
    device = await pair(daemon)
    status, body = await upload(daemon, device["device_token"], ("x.jpg", jpeg()))
    assert status == 507
    assert body["error"] == "insufficient_storage"
    assert library_files(daemon) == {}
    assert not list(daemon.library.paths.staging.iterdir())


async def test_size_limit_gives_413(make_daemon: StartDaemon) -> None:
    """A file over --max-upload is refused with 413 and nothing is kept."""
    daemon = await make_daemon(max_upload_bytes=1000)
    device = await pair(daemon)
    status, _body = await upload(daemon, device["device_token"], ("big.bin", os.urandom(5000)))
    assert status == 413
    assert library_files(daemon) == {}
    assert not list(daemon.library.paths.staging.iterdir())


async def test_symlinks_in_the_library_are_neither_served_nor_followed(
    daemon: Daemon, phone: dict[str, Any], tmp_path: Path
) -> None:
    """A symlink pointing outside is not indexed; a device folder swapped for one refuses writes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg())
    _, body = await upload(daemon, phone["device_token"], ("first.jpg", jpeg(color="white")))
    folder = daemon.library.paths.root / body["files"][0]["stored_as"].split("/")[0]
    (folder / "link.jpg").symlink_to(outside / "secret.jpg")
    await daemon.library.scan()
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.get("/api/gallery") as response,
    ):
        names = [i["name"] for i in (await response.json())["items"]]
    assert "link.jpg" not in names
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.symlink_to(outside, target_is_directory=True)
    status, body = await upload(daemon, phone["device_token"], ("sneaky.jpg", b"payload"))
    assert status == 400
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jpg"]


async def test_delete_restore_and_rename(daemon: Daemon, phone: dict[str, Any]) -> None:
    """A device trashes, restores (same id) and renames its own file; others may not."""
    photo = jpeg(color="navy")
    _, body = await upload(daemon, phone["device_token"], ("keep.jpg", photo))
    file_id = body["files"][0]["id"]
    other = await pair(daemon, "Other", "other")
    async with daemon.session(headers=bearer(other["device_token"])) as stranger:
        assert await status_of(stranger, "DELETE", f"/files/{file_id}") == 405
        assert await status_of(stranger, "DELETE", f"/api/files/{file_id}") == 403
        assert (
            await status_of(
                stranger, "POST", f"/api/files/{file_id}/rename", json={"name": "x.jpg"}
            )
            == 403
        )
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.delete(f"/api/files/{file_id}") as response:
            assert response.status == 200
            trashed = await response.json()
        assert trashed["restorable_until"] > trashed["deleted_at"]
        assert await status_of(device, "GET", f"/files/{file_id}") == 404
        assert not any(Path(k).name == "keep.jpg" for k in library_files(daemon))
        async with device.get("/api/trash") as response:
            assert [t["id"] for t in await response.json()] == [file_id]
        async with device.post(f"/api/files/{file_id}/restore", json={}) as response:
            assert response.status == 200
            assert (await response.json())["id"] == file_id
        async with device.get(f"/files/{file_id}") as response:
            assert await response.read() == photo
        async with device.post(
            f"/api/files/{file_id}/rename", json={"name": "Holiday <1>.jpg"}
        ) as response:
            assert (await response.json())["name"] == "Holiday _1_.jpg"
        await upload(daemon, phone["device_token"], ("taken.jpg", jpeg(color="lime")))
        assert (
            await status_of(
                device, "POST", f"/api/files/{file_id}/rename", json={"name": "taken.jpg"}
            )
            == 409
        )
        assert (
            await status_of(
                device, "POST", f"/api/files/{file_id}/rename", json={"name": "../escape.jpg"}
            )
            == 400
        )
        async with device.get(f"/files/{file_id}") as response:
            assert await response.read() == photo
    async with daemon.session() as owner:
        assert await status_of(owner, "DELETE", f"/api/files/{file_id}") == 200


async def test_the_trash_is_purged_after_30_days(daemon: Daemon, phone: dict[str, Any]) -> None:
    """Trashed files older than 30 days are deleted for good."""
    _, body = await upload(daemon, phone["device_token"], ("old.jpg", jpeg(color="grey")))
    file_id = body["files"][0]["id"]
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        await status_of(device, "DELETE", f"/api/files/{file_id}")
        daemon.clock.advance(29 * 86400)
        assert await daemon.library.purge_trash() == 0
    daemon.clock.advance(2 * 86400)
    assert await daemon.library.purge_trash() == 1
    async with daemon.session() as owner:  # the pairing itself has expired by now
        assert await status_of(owner, "POST", f"/api/files/{file_id}/restore", json={}) == 404
    assert list(daemon.library.paths.trash.iterdir()) == []


async def test_a_rename_onto_a_name_whose_file_was_deleted_by_hand(
    make_daemon: StartDaemon,
) -> None:
    """The index still lists a file deleted by hand (no watcher here, as between rescans on
    a network share): renaming another file to its name works, and the stale item goes,
    announced (it once answered 500 after renaming on disk, leaving the index wrong)."""
    daemon = await make_daemon(watch=None)
    await asyncio.wait_for(daemon.library._scanned.wait(), 10)
    phone = await pair(daemon, "Phone", "phone-client")
    _, body = await upload(daemon, phone["device_token"], ("a.txt", b"A"), ("b.txt", b"B"))
    a, b = body["files"]
    (daemon.library.paths.root / b["stored_as"]).unlink()
    events = daemon.library.hub.subscribe()

    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.post(f"/api/files/{a['id']}/rename", json={"name": "b.txt"}) as response:
            assert response.status == 200
            assert (await response.json())["id"] == a["id"]
        async with device.get("/api/gallery") as response:
            items = (await response.json())["items"]

    assert [(i["id"], i["name"]) for i in items] == [(a["id"], "b.txt")]
    said = [await asyncio.wait_for(events.next(), 5) for _ in range(2)]
    assert [(e.type, e.data["id"]) for e in said] == [
        ("file.removed", b["id"]),
        ("file.moved", a["id"]),
    ]


async def test_revoking_a_device_aborts_its_upload_in_flight(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """The owner revokes a device while its upload is half sent: the upload ends there,
    and nothing of it is kept (the rest once arrived and was stored)."""
    boundary = "lanpairtest"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="revoked.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body = head + os.urandom(3 << 20) + f"\r\n--{boundary}--\r\n".encode()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def connect_and_send_half() -> ssl.SSLSocket:  # blocking: in a thread, the daemon is here
        tls = context.wrap_socket(socket.create_connection(("127.0.0.1", daemon.port), 10))
        tls.sendall(
            "POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {phone['device_token']}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        return tls

    def send_the_rest(tls: ssl.SSLSocket) -> bytes:
        with contextlib.suppress(OSError):
            tls.sendall(body[len(body) // 2 :])
        try:
            return tls.recv(65536)
        except OSError:
            return b""

    staging = daemon.library.paths.staging
    with await asyncio.to_thread(connect_and_send_half) as sending:
        await asyncio.to_thread(wait_until, lambda: any(staging.iterdir()))  # under way
        async with daemon.session() as owner:
            path = f"/api/pairing/revoke/{phone['device_id']}"
            assert await status_of(owner, "POST", path, json={}) == 200
        answer = await asyncio.to_thread(send_the_rest, sending)

    assert not answer.startswith(b"HTTP/1.1 200")
    assert not any(Path(k).name == "revoked.bin" for k in library_files(daemon))
    assert list(staging.iterdir()) == []


async def test_a_zip_of_chosen_files_streams_back(daemon: Daemon, phone: dict[str, Any]) -> None:
    """POST /api/download.zip streams a valid zip holding exactly the chosen files."""
    import zipfile

    files = {"a.jpg": jpeg(color="red"), "b.bin": os.urandom(3 << 20), "c.txt": b"hello"}
    _, body = await upload(daemon, phone["device_token"], *files.items())
    ids = [r["id"] for r in body["files"]]
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.post("/api/download.zip", json={"ids": ids}) as response:
            assert response.status == 200
            assert response.content_type == "application/zip"
            archive = zipfile.ZipFile(io.BytesIO(await response.read()))
        assert archive.testzip() is None
        assert {Path(n).name: archive.read(n) for n in archive.namelist()} == files
        assert await status_of(device, "POST", "/api/download.zip", json={"ids": [999999]}) == 404
        assert await status_of(device, "POST", "/api/download.zip", json={"ids": []}) == 400
        assert await status_of(device, "POST", "/api/download.zip", json={"ids": ["1"]}) == 400


async def test_a_zip_holds_files_dated_outside_what_zip_can_say(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Files dated 1970 or 2200 are in the zip, their dates clamped to the format's range
    (such a file was once left out, and the zip still looked whole)."""
    import zipfile

    _, old = await upload(daemon, phone["device_token"], ("old.txt", b"1970"), modified_ms=1000)
    _, far = await upload(
        daemon, phone["device_token"], ("far.txt", b"2200"), modified_ms=7_258_118_400_000
    )
    ids = [old["files"][0]["id"], far["files"][0]["id"]]
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.post("/api/download.zip", json={"ids": ids}) as response,
    ):
        archive = zipfile.ZipFile(io.BytesIO(await response.read()))

    assert {Path(n).name: archive.read(n) for n in archive.namelist()} == {
        "old.txt": b"1970",
        "far.txt": b"2200",
    }
    assert [archive.getinfo(n).date_time[0] for n in archive.namelist()] == [1980, 2107]


async def test_a_zip_whose_file_cannot_be_read_midway_ends_broken_not_whole(
    daemon: Daemon, phone: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A chosen file that turns into a folder while the zip streams: the download ends
    broken (the client sees it failed), not as a well-formed zip lacking that file; the log
    says which; chosen that way from the start, it is a JSON 404."""
    big, small = os.urandom(40 << 20), b"small"
    _, body = await upload(daemon, phone["device_token"], ("big.bin", big), ("small.txt", small))
    ids = [r["id"] for r in body["files"]]
    small_path = daemon.library.paths.root / body["files"][1]["stored_as"]
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.post("/api/download.zip", json={"ids": ids}) as response:
            assert response.status == 200
            await response.content.readexactly(1 << 20)  # the writer is inside big.bin
            small_path.unlink()
            small_path.mkdir()
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert "zip download cut short: cannot read" in caplog.text
        async with device.post("/api/download.zip", json={"ids": ids[1:]}) as response:
            assert response.status == 404
            assert (await response.json())["error"] == "not_found"


async def test_a_rescan_indexes_hand_copied_files_and_forgets_deleted_ones(
    make_daemon: StartDaemon,
) -> None:
    """Files put in the library by hand appear after a scan; files removed by hand vanish.

    The watcher is off: this is what a restart, or a watcher that lost events, relies on.
    """
    daemon = await make_daemon(watch=None)
    phone = await pair(daemon, "Phone", "phone")
    _, body = await upload(daemon, phone["device_token"], ("uploaded.jpg", jpeg()))
    device_folder = body["files"][0]["stored_as"].split("/")[0]
    root = daemon.library.paths.root
    pc = root / "Test PC" / "Holiday"
    pc.mkdir(parents=True)
    for n in range(300):
        (pc / f"note-{n}.txt").write_text(f"note {n}")
    (pc / "photo.jpg").write_bytes(jpeg(800, 600))
    (root / "loose.txt").write_text("no folder")
    (root / device_folder / "uploaded.jpg").unlink()
    report = await daemon.library.scan()
    assert (report.added, report.removed) == (301, 1)
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.get("/api/gallery", params={"device": "pc", "kind": "image"}) as r:
            (photo,) = (await r.json())["items"]
        assert (photo["name"], photo["width"], photo["folder"]) == ("photo.jpg", 800, "Test PC")
        async with device.get("/api/gallery", params={"limit": "500"}) as r:
            names = {i["name"] for i in (await r.json())["items"]}
    assert "uploaded.jpg" not in names
    assert "loose.txt" not in names
    assert len(names) == 301
    again = await daemon.library.scan()
    assert (again.added, again.removed) == (0, 0)


async def test_a_video_gets_a_poster_and_its_duration(
    daemon: Daemon, phone: dict[str, Any], tmp_path: Path
) -> None:
    """With ffmpeg on the PC, a video's thumbnail is a frame of it and its length is indexed."""
    import shutil

    if not shutil.which("ffmpeg"):
        from support import skip_or_fail

        skip_or_fail("ffmpeg is not installed (apt-get install ffmpeg)")
    clip = tmp_path / "clip.mp4"
    await asyncio.to_thread(
        subprocess.run,
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=10",
            "-t",
            "2",
            "-c:v",
            "mpeg4",
            str(clip),
        ],
        check=True,
    )
    _, body = await upload(daemon, phone["device_token"], ("clip.mp4", clip.read_bytes()))
    (result,) = body["files"]
    assert result["type"] == "video"
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.get(f"/thumbs/{result['id']}") as response:
            assert response.content_type == "image/webp"
            assert max(Image.open(io.BytesIO(await response.read())).size) == 320
        async with device.get("/api/gallery") as response:
            (item,) = (await response.json())["items"]
    assert item["duration"] == pytest.approx(2.0, abs=0.2)


async def test_gallery_pages_and_pushed_items_have_one_shape(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """The fast page writer and item_json give the same item for the same file."""
    from lanpair.library import item_json

    _, body = await upload(daemon, phone["device_token"], ("same.jpg", jpeg()), ("n.txt", b"x"))
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.get("/api/gallery") as response,
    ):
        items = {i["id"]: i for i in (await response.json())["items"]}
    for result in body["files"]:
        record = await daemon.store.files.get(result["id"])
        assert record is not None
        assert item_json(record) == items[result["id"]]


async def test_zips_abandoned_midway_leave_the_daemon_serving(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Clients that drop zip downloads after a few bytes do not stall later requests."""
    big = {f"z{n}.bin": os.urandom(8 << 20) for n in range(3)}
    _, body = await upload(daemon, phone["device_token"], *big.items())
    ids = [r["id"] for r in body["files"]]
    for _ in range(8):
        async with (
            daemon.session(headers=bearer(phone["device_token"])) as device,
            device.post("/api/download.zip", json={"ids": ids}) as response,
        ):
            await response.content.read(1000)
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        async with device.get(f"/files/{ids[0]}") as response:
            assert await asyncio.wait_for(response.read(), 10) == big["z0.bin"]
        status, _ = await asyncio.wait_for(
            upload(daemon, phone["device_token"], ("after.bin", b"still here")), 10
        )
        assert status == 200


async def test_a_re_paired_phone_keeps_its_folder_and_its_files(daemon: Daemon) -> None:
    """Pairing again with the same client id: same folder, and the old files are its own."""
    first = await pair(daemon, "Phone", "same-client")
    _, body = await upload(daemon, first["device_token"], ("mine.jpg", jpeg()))
    file_id = body["files"][0]["id"]
    second = await pair(daemon, "Phone", "same-client")
    _, again = await upload(daemon, second["device_token"], ("later.jpg", jpeg(color="pink")))
    assert (
        again["files"][0]["stored_as"].split("/")[0] == body["files"][0]["stored_as"].split("/")[0]
    )
    async with daemon.session(headers=bearer(second["device_token"])) as device:
        async with device.get("/api/devices") as response:
            (row,) = await response.json()
        assert row["file_count"] == 2
        assert await status_of(device, "DELETE", f"/api/files/{file_id}") == 200


async def test_uploads_landing_during_a_scan_keep_their_ids(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """A rescan racing with uploads never re-indexes or drops what they just stored."""
    root = daemon.library.paths.root / "Test PC"
    root.mkdir(parents=True)
    for n in range(3000):
        (root / f"hand-{n}.txt").write_text(str(n))
    scan = asyncio.create_task(daemon.library.scan())
    results = [
        await upload(daemon, phone["device_token"], (f"up-{n}.bin", os.urandom(64)))
        for n in range(30)
    ]
    await scan
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        for _, body in results:
            item = body["files"][0]
            async with device.get(f"/files/{item['id']}") as response:
                assert response.status == 200
            record = await daemon.store.files.get(item["id"])
            assert record is not None
            assert record.sha256 == item["sha256"]


async def test_odd_requests_get_4xx_never_500(daemon: Daemon, phone: dict[str, Any]) -> None:
    """Wrong types, missing boundaries and out-of-range numbers are client errors."""
    import base64
    import json as json_module

    huge_cursor = base64.urlsafe_b64encode(
        json_module.dumps(["2026-01-01T00:00:00Z", 2**63]).encode()
    ).decode()
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        assert (
            await status_of(
                device, "POST", "/api/upload", data=b"x", headers={"Content-Type": "text/plain"}
            )
            == 415
        )
        assert (
            await status_of(
                device,
                "POST",
                "/api/upload",
                data=b"x",
                headers={"Content-Type": "multipart/form-data"},
            )
            == 400
        )
        assert await status_of(device, "GET", "/api/gallery", params={"cursor": huge_cursor}) == 400
        for date in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"):
            assert await status_of(device, "GET", "/api/gallery", params={"from": date}) == 400
        assert await status_of(device, "POST", "/api/download.zip", json={"ids": [2**63]}) == 400
        # Digits that are not ASCII: "²" (int() refuses it) and Arabic-Indic one (int() reads it)
        for odd_id in ("%C2%B2", "%D9%A1"):
            for method, path in (
                ("GET", f"/files/{odd_id}"),
                ("GET", f"/thumbs/{odd_id}"),
                ("DELETE", f"/api/files/{odd_id}"),
            ):
                async with device.request(
                    method, URL(path, encoded=True), headers={"Accept": "application/json"}
                ) as response:
                    assert response.status == 404, (method, path)
                    assert (await response.json())["error"] == "not_found"
        async with device.get("/api/events", params={"since": "²"}) as response:
            assert response.status == 400
        odd_size = aiohttp.FormData(quote_fields=False)
        odd_size.add_field("size", "²")
        odd_size.add_field("file", b"sized oddly", filename="odd.txt")
        async with device.post("/api/upload", data=odd_size) as response:
            assert response.status == 200  # the size is a hint for progress: ignored
            assert (await response.json())["files"][0]["ok"]


async def test_an_upload_is_one_plain_log_line(
    daemon: Daemon, phone: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """However many files a request carries, the log says what became of them in one line."""
    caplog.set_level(logging.INFO, logger="lanpair")
    same = os.urandom(1000)
    await upload(daemon, phone["device_token"], ("a.bin", same))
    caplog.clear()
    await upload(
        daemon,
        phone["device_token"],
        ("b.bin", os.urandom(2048)),
        ("again.bin", same),
        ("../up.bin", b"x"),
    )
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("lanpair.server")]
    said = "3 files, 1 new (2.0 KiB), 1 already there, 1 refused"
    assert lines == [f'received from "Anna\'s phone": {said}']


async def test_malformed_multipart_bodies_get_400_and_leave_nothing(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Truncated, nested, garbled or header-stuffed bodies are refused; a well-formed one
    with a preamble, an epilogue and an RFC 2231 name is read as meant."""
    boundary = "b0undary"
    kind = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def part(headers: str, body: bytes) -> bytes:
        return f"--{boundary}\r\n{headers}\r\n\r\n".encode() + body + b"\r\n"

    photo = part(
        'Content-Disposition: form-data; name="file"; filename="a.bin"', os.urandom(300_000)
    )
    end = f"--{boundary}--\r\n".encode()
    refused = {
        "truncated": photo[:-50_000],
        "no closing boundary": photo,
        "nested": part(
            'Content-Disposition: form-data; name="file"\r\n'
            "Content-Type: multipart/mixed; boundary=inner",
            b"--inner--",
        )
        + end,
        "garbled": f"--{boundary}\r\nno colon here\r\n\r\nx\r\n".encode() + end,
        "too many headers": part("\r\n".join(f"X-{n}: {n}" for n in range(50)), b"x") + end,
    }
    async with daemon.session(headers=bearer(phone["device_token"])) as device:
        for why, body in refused.items():
            async with device.post("/api/upload", data=body, headers=kind) as response:
                assert response.status == 400, why
                assert (await response.json())["error"] == "bad_request", why
        assert library_files(daemon) == {}
        assert not list(daemon.library.paths.staging.iterdir())
        fine = (
            b"a preamble, ignored\r\n"
            + part(
                "Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%C3%A9t%C3%A9.txt",
                b"summer",
            )
            + end
            + b"an epilogue, ignored"
        )
        async with device.post("/api/upload", data=fine, headers=kind) as response:
            assert response.status == 200
            [stored] = (await response.json())["files"]
    assert stored["stored_as"].endswith("/\u00e9t\u00e9.txt")
    assert library_files(daemon) == {stored["stored_as"]: b"summer"}


async def test_a_multipart_body_sent_in_http_chunks_is_read_whole(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Transfer-Encoding: chunked, in pieces that split the boundaries."""
    boundary = "b0undary"
    content = os.urandom(700_000)
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.bin"'
        f"\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65_531):  # odd sizes: boundaries fall across them
            yield body[start : start + 65_531]

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.post("/api/upload", data=pieces(), headers=headers) as response,
    ):
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 200
        [stored] = (await response.json())["files"]
    assert library_files(daemon) == {stored["stored_as"]: content}


async def test_a_compressed_sibling_is_never_served_in_place_of_a_file(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """notes.txt is sent as itself even when notes.txt.gz sits beside it."""
    _, body = await upload(
        daemon,
        phone["device_token"],
        ("notes.txt", b"plain text"),
        ("notes.txt.gz", b"not really gzip"),
    )
    file_id = body["files"][0]["id"]
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.get(
            f"/files/{file_id}", headers={"Accept-Encoding": "gzip, br"}, auto_decompress=False
        ) as response,
    ):
        assert "Content-Encoding" not in response.headers
        assert await response.read() == b"plain text"


async def test_a_gallery_page_shows_items_exactly_as_events_do(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """SQLite writes the page's items; item_json writes the events'; they must agree."""
    await upload(daemon, phone["device_token"], ("a.jpg", jpeg(640, 480)), ("b.txt", b"text"))
    async with daemon.session() as owner:
        async with owner.post("/api/upload", data=form(("pc's <photo>.jpg", jpeg(30, 20)))) as r:
            assert r.status == 200
        async with owner.get("/api/gallery", params={"limit": "2"}) as r:
            first = await r.json()
        async with owner.get("/api/gallery", params={"cursor": first["next_cursor"]}) as r:
            rest = await r.json()
    assert rest["next_cursor"] is None
    items = first["items"] + rest["items"]
    assert len(items) == 3
    for item in items:
        record = await daemon.store.files.get(item["id"])
        assert record is not None
        assert item == item_json(record)


async def test_sync_goes_by_content_when_told_and_by_path_otherwise(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """An edited file of the same size, or a namesake in another subfolder, is missing."""
    photo = jpeg(64, 48)
    await upload(daemon, phone["device_token"], ("a.jpg", photo))
    edited = hashlib.sha256(b"x" * len(photo)).hexdigest()
    manifest = [
        {"name": "a.jpg", "size": len(photo)},
        {"name": "a.jpg", "size": len(photo), "sha256": edited},
        {"name": "Trip/a.jpg", "size": len(photo)},
        {"name": "elsewhere.jpg", "size": 1, "sha256": hashlib.sha256(photo).hexdigest()},
    ]
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.post("/api/sync", json=manifest) as response,
    ):
        answer = await response.json()
    assert answer == {"present": ["a.jpg", "elsewhere.jpg"], "missing": ["a.jpg", "Trip/a.jpg"]}
