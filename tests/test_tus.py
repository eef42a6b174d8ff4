"""Resumable uploads through the stock tuspy client: create, resume, terminate, ownership."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Daemon
from test_api import bearer, pair, status_of
from tusclient import client as tus_client

from lanpair.server.api_tus import SendLock
from lanpair.server.keys import TUS_KEY

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


OPEN: list[Any] = []


def uploader(server: Any, token: str, path: Path, **kwargs: Any) -> Any:
    """Return a tuspy uploader for ``path`` talking to a daemon (anything with .url)."""
    tus = tus_client.TusClient(f"{server.url}/api/tus/", headers=bearer(token))
    stream = path.open("rb")  # tuspy leaks the files it opens itself; this one is closed
    OPEN.append(stream)
    # tuspy can neither pin a key nor trust a self-signed leaf as its own CA (OpenSSL wants
    # a CA certificate); on loopback, in a test, it skips verification.
    return tus.uploader(file_stream=stream, verify_tls_cert=False, **kwargs)


@pytest.fixture(autouse=True)
def _close_streams() -> Any:
    """Close the files handed to tuspy."""
    yield
    while OPEN:
        OPEN.pop().close()


@pytest.fixture
async def phone(daemon: Daemon) -> dict[str, Any]:
    """Return a paired device."""
    return await pair(daemon, "Tus phone", "tus")


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """Return a 5 MiB file of random bytes."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(5 * MiB))
    return path


def stored_bytes(daemon: Daemon, name: str) -> bytes:
    """Return the bytes of the one library file called ``name``."""
    (found,) = [p for p in daemon.library.paths.root.rglob(name) if ".lanpair" not in p.parts]
    return found.read_bytes()


async def test_tuspy_uploads_a_file_into_the_library(
    daemon: Daemon, phone: dict[str, Any], video: Path
) -> None:
    """A stock tuspy upload in 1 MiB chunks lands whole in the device's folder."""
    up = uploader(
        daemon,
        phone["device_token"],
        video,
        chunk_size=MiB,
        metadata={"filename": "clip.mp4", "modified": "1600000000000"},
    )
    await asyncio.to_thread(up.upload)
    assert stored_bytes(daemon, "clip.mp4") == await asyncio.to_thread(video.read_bytes)
    assert not list(daemon.library.paths.resumable.iterdir())
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.get("/api/gallery") as response,
    ):
        (item,) = (await response.json())["items"]
    assert item["name"] == "clip.mp4"
    assert item["size"] == 5 * MiB


async def test_an_upload_resumes_after_the_connection_dies_mid_chunk(
    daemon: Daemon, phone: dict[str, Any], video: Path
) -> None:
    """Bytes that arrived before a dropped connection count; tuspy resumes from there."""
    up = uploader(
        daemon, phone["device_token"], video, chunk_size=MiB, metadata={"filename": "clip.mp4"}
    )
    await asyncio.to_thread(up.upload_chunk)
    url = up.url
    data = await asyncio.to_thread(video.read_bytes)
    cut = await asyncio.to_thread(
        _send_half_a_patch, daemon, phone["device_token"], url, MiB, data[MiB : MiB + 3 * MiB]
    )

    async def offset() -> int:
        async with (
            daemon.session(headers={**bearer(phone["device_token"]), **TUS}) as device,
            device.head(url) as response,
        ):
            return int(response.headers["Upload-Offset"])

    async def offset_reaches(least: int) -> int:
        for _ in range(100):
            if (now := await offset()) >= least:
                return now
            await asyncio.sleep(0.1)
        return await offset()

    # While the connection is open the server stores what it reads; then the cable goes.
    assert await offset_reaches(2 * MiB) >= 2 * MiB
    await asyncio.to_thread(cut.close)
    assert 2 * MiB <= await offset_reaches(MiB + 3 * MiB // 2) <= MiB + 3 * MiB // 2
    # With a url, tuspy asks the server for the offset while it is being built: off the loop.
    again = await asyncio.to_thread(
        uploader, daemon, phone["device_token"], video, chunk_size=MiB, url=url
    )
    await asyncio.to_thread(again.upload)
    assert stored_bytes(daemon, "clip.mp4") == data


async def test_a_resume_takes_over_from_a_connection_that_went_silent(
    daemon: Daemon, phone: dict[str, Any], video: Path
) -> None:
    """A phone that drops off Wi-Fi leaves its PATCH open on the PC (no FIN, no RST ever
    comes): its next PATCH stops that one, and the upload goes on from where it stands."""
    up = uploader(
        daemon, phone["device_token"], video, chunk_size=MiB, metadata={"filename": "clip.mp4"}
    )
    await asyncio.to_thread(up.upload_chunk)
    url = up.url
    data = await asyncio.to_thread(video.read_bytes)
    silent = await asyncio.to_thread(
        _send_half_a_patch, daemon, phone["device_token"], url, MiB, data[MiB : MiB + 4 * MiB]
    )
    headers = {**bearer(phone["device_token"]), **TUS}
    answers = []
    try:
        async with daemon.session(headers=headers) as device:
            for _ in range(100):  # the old request is storing what it got
                async with device.head(url) as response:
                    if int(response.headers["Upload-Offset"]) >= 2 * MiB:
                        break
                await asyncio.sleep(0.05)
            async with asyncio.timeout(10):  # not: whenever TCP gives up on the old one
                while not answers or answers[-1] == 409:  # as a tus client does: ask, send
                    async with device.head(url) as response:
                        offset = int(response.headers["Upload-Offset"])
                    patch = {
                        **headers,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    }
                    body = io.BytesIO(data[offset:])
                    async with device.patch(url, data=body, headers=patch) as response:
                        answers.append(response.status)
        # 409 at most once: the stopped request stores the bytes it still held, which
        # moves the offset past what was asked a moment before.
        assert answers in ([204], [409, 204])
        assert stored_bytes(daemon, "clip.mp4") == data
    finally:
        silent.close()


def _send_half_a_patch(
    daemon: Daemon, token: str, url: str, offset: int, body: bytes
) -> ssl.SSLSocket:
    """Announce ``body`` in a PATCH and send half of it; return the open socket to cut."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", daemon.port)))
    head = (
        f"PATCH {url.split(str(daemon.port), 1)[1]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    tls.sendall(head.encode() + body[: len(body) // 2])
    return tls


async def test_another_device_cannot_touch_an_upload(
    daemon: Daemon, phone: dict[str, Any], video: Path
) -> None:
    """To a device that did not create it, an upload does not exist; revoked → 401."""
    up = uploader(
        daemon, phone["device_token"], video, chunk_size=MiB, metadata={"filename": "clip.mp4"}
    )
    await asyncio.to_thread(up.upload_chunk)
    other = await pair(daemon, "Other", "other")
    async with daemon.session(headers={**bearer(other["device_token"]), **TUS}) as device:
        assert await status_of(device, "HEAD", up.url) == 404
        assert (
            await status_of(
                device,
                "PATCH",
                up.url,
                data=b"x",
                headers={
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Offset": str(MiB),
                },
            )
            == 404
        )
        assert await status_of(device, "DELETE", up.url) == 404
    async with daemon.session() as owner:
        await status_of(owner, "POST", f"/api/pairing/revoke/{phone['device_id']}", json={})
    async with daemon.session(headers={**bearer(phone["device_token"]), **TUS}) as device:
        assert await status_of(device, "HEAD", up.url) == 401


async def test_protocol_errors(daemon: Daemon, phone: dict[str, Any]) -> None:
    """Wrong offsets, versions, types, names and checksums get tus's statuses."""
    headers = {**bearer(phone["device_token"]), **TUS}
    meta = "filename " + base64.b64encode(b"a.bin").decode()
    async with daemon.session(headers=headers) as device:
        async with device.options("/api/tus/") as response:
            assert response.status == 204
            assert "creation" in response.headers["Tus-Extension"]
        async with device.post(
            "/api/tus/", headers={"Upload-Length": "10", "Upload-Metadata": meta}
        ) as response:
            assert response.status == 201
            assert response.headers["Tus-Resumable"] == "1.0.0"
            url = response.headers["Location"]
        patch = {"Content-Type": "application/offset+octet-stream"}
        assert (
            await status_of(
                device, "PATCH", url, data=b"abc", headers={**patch, "Upload-Offset": "5"}
            )
            == 409
        )
        assert (
            await status_of(
                device,
                "PATCH",
                url,
                data=b"abc",
                headers={"Content-Type": "text/plain", "Upload-Offset": "0"},
            )
            == 415
        )
        bad_sum = "sha1 " + base64.b64encode(hashlib.sha1(b"xyz").digest()).decode()  # noqa: S324
        assert (
            await status_of(
                device,
                "PATCH",
                url,
                data=b"abc",
                headers={**patch, "Upload-Offset": "0", "Upload-Checksum": bad_sum},
            )
            == 460
        )
        good_sum = "sha1 " + base64.b64encode(hashlib.sha1(b"abc").digest()).decode()  # noqa: S324
        async with device.patch(
            url, data=b"abc", headers={**patch, "Upload-Offset": "0", "Upload-Checksum": good_sum}
        ) as response:
            assert response.status == 204
            assert response.headers["Upload-Offset"] == "3"
        assert await status_of(device, "DELETE", url) == 204
        assert await status_of(device, "HEAD", url) == 404
        evil = "filename " + base64.b64encode(b"../../x.bin").decode()
        assert (
            await status_of(
                device, "POST", "/api/tus/", headers={"Upload-Length": "1", "Upload-Metadata": evil}
            )
            == 400
        )
        assert (
            await status_of(
                device,
                "POST",
                "/api/tus/",
                headers={"Upload-Length": "1", "Upload-Metadata": meta, "Tus-Resumable": "0.2.2"},
            )
            == 400
        )
        assert await status_of(device, "POST", "/api/tus/", headers={"Upload-Length": "1"}) == 400
    assert not list(daemon.library.paths.resumable.iterdir())


async def test_a_patch_that_waited_while_its_upload_ended_gets_404(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """A PATCH waiting for the upload's lock while another request ends the upload (the
    last bytes filed it, or a DELETE) is told the upload is gone: 404, not 500."""
    headers = {**bearer(phone["device_token"]), **TUS}
    meta = "filename " + base64.b64encode(b"raced.bin").decode()
    tus = daemon.app[TUS_KEY]
    async with daemon.session(headers=headers) as device:
        async with device.post(
            "/api/tus/", headers={"Upload-Length": "3", "Upload-Metadata": meta}
        ) as response:
            url = response.headers["Location"]
        upload_id = url.rsplit("/", 1)[1]
        lock = tus.locks.setdefault(upload_id, SendLock())
        await lock.acquire()  # another request holds the upload
        late = asyncio.create_task(
            status_of(
                device,
                "PATCH",
                url,
                data=b"abc",
                headers={"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
            )
        )
        await asyncio.sleep(0.3)  # the PATCH now waits for the lock
        tus.delete(upload_id)  # what that request did: the upload ended
        lock.release()

        assert await late == 404


async def test_a_wrong_sha256_in_the_metadata_stores_nothing(
    daemon: Daemon, phone: dict[str, Any], video: Path
) -> None:
    """A finished upload whose bytes do not match its announced sha256 is refused (460)."""
    up = uploader(
        daemon,
        phone["device_token"],
        video,
        chunk_size=8 * MiB,
        metadata={"filename": "clip.mp4", "sha256": "0" * 64},
    )
    with pytest.raises(Exception, match="460"):
        await asyncio.to_thread(up.upload)
    assert not [p for p in daemon.library.paths.root.rglob("clip.mp4")]


async def test_uploads_untouched_for_a_day_are_deleted(
    daemon: Daemon, phone: dict[str, Any], video: Path
) -> None:
    """A partial upload older than 24 hours is purged; its id then answers 404."""
    from lanpair.server.api_tus import purge_expired

    up = uploader(
        daemon, phone["device_token"], video, chunk_size=MiB, metadata={"filename": "clip.mp4"}
    )
    await asyncio.to_thread(up.upload_chunk)
    daemon.clock.advance(24 * 3600 + 1)
    assert await purge_expired(daemon.app) == 1
    async with daemon.session(headers={**bearer(phone["device_token"]), **TUS}) as device:
        assert await status_of(device, "HEAD", up.url) == 404
    assert not list(daemon.library.paths.resumable.iterdir())


async def test_multipart_and_resumable_share_dedup(
    daemon: Daemon, phone: dict[str, Any], video: Path
) -> None:
    """Content uploaded by tus is a duplicate when it arrives again by multipart."""
    up = uploader(
        daemon, phone["device_token"], video, chunk_size=4 * MiB, metadata={"filename": "clip.mp4"}
    )
    await asyncio.to_thread(up.upload)
    form = aiohttp.FormData()
    form.add_field(
        "file", io.BytesIO(await asyncio.to_thread(video.read_bytes)), filename="again.mp4"
    )
    async with (
        daemon.session(headers=bearer(phone["device_token"])) as device,
        device.post("/api/upload", data=form) as response,
    ):
        assert (await response.json())["files"][0]["duplicate"] is True


def test_an_upload_resumes_across_a_daemon_restart(tmp_path: Path) -> None:
    """Half an upload, SIGTERM, a new daemon on the same data: tuspy finishes it, byte-exact."""
    import signal

    from test_daemon import pair as pair_running
    from test_daemon import serving

    data = os.urandom(6 * MiB)
    source = tmp_path / "movie.mov"
    source.write_bytes(data)

    with serving(tmp_path / "data", tmp_path / "log") as first:
        device = pair_running(first)
        up = uploader(
            first,
            device["device_token"],
            source,
            chunk_size=2 * MiB,
            metadata={"filename": "movie.mov"},
        )
        up.upload_chunk()
        url = up.url.split("/api/tus/", 1)[1]
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=5) == 0
    with serving(tmp_path / "data", tmp_path / "log") as second:
        again = uploader(
            second,
            device["device_token"],
            source,
            chunk_size=2 * MiB,
            url=f"{second.url}/api/tus/{url}",
        )
        assert again.offset == 2 * MiB
        again.upload()
    stored = [p for p in (tmp_path / "data" / "uploads").rglob("movie.mov")]
    assert [p.read_bytes() == data for p in stored] == [True]


async def test_a_patch_longer_than_the_upload_is_refused(
    daemon: Daemon, phone: dict[str, Any]
) -> None:
    """Bytes past Upload-Length are refused up front, and the upload stays usable."""
    headers = {**bearer(phone["device_token"]), **TUS}
    meta = "filename " + base64.b64encode(b"exact.bin").decode()
    async with daemon.session(headers=headers) as device:
        async with device.post(
            "/api/tus/", headers={"Upload-Length": "100", "Upload-Metadata": meta}
        ) as response:
            url = response.headers["Location"]
        patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        assert await status_of(device, "PATCH", url, data=os.urandom(300), headers=patch) == 400
        async with device.patch(url, data=os.urandom(100), headers=patch) as response:
            assert response.status == 204
            assert response.headers["Upload-Offset"] == "100"
