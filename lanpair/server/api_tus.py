"""Resumable uploads: tus 1.0.0 (core, creation, termination, checksum, expiration) at /api/tus/.

An upload belongs to the device that created it; to anyone else it does not exist. Its
bytes and a small JSON description live in the library's resumable folder, so an upload
survives a daemon restart; untouched for 24 hours, it is deleted. A finished upload goes
through the same ingest as a multipart one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from lanpair import errors
from lanpair.clock import from_iso, to_iso
from lanpair.events import UploadProgress
from lanpair.library import Library, Stored
from lanpair.names import safe_relpath
from lanpair.paths import replace_file
from lanpair.server.keys import HUB_KEY, LIBRARY_KEY, SERVICES_KEY, TUS_KEY
from lanpair.server.middleware import (
    Access,
    access,
    caller,
    media_type,
    next_chunk,
    sender,
    whole_number,
)
from lanpair.spool import FILE_MODE, Spool, human_size, pump
from lanpair.tasks import spawn

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
LIFETIME = timedelta(hours=24)
PURGE_EVERY_S = 3600.0
TAKE_OVER_WAIT_S = 10.0  # how long a new PATCH waits for the old one to let go
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX_RELPATH_PARTS = 16
MAX_RELPATH_BYTES = 1024


@dataclass
class Upload:
    """What the server keeps about one resumable upload, next to its bytes."""

    id: str
    owner: str  # a device id, or "pc" for the owner
    length: int
    filename: str
    relpath: str | None
    modified: float | None
    sha256: str | None
    metadata: str
    expires_at: str


class SendLock(asyncio.Lock):
    """One request at a time sends an upload's bytes; ``sender`` is its task while it does."""

    def __init__(self) -> None:
        super().__init__()
        self.sender: asyncio.Task[Any] | None = None


class TusStore:
    """The resumable folder: one ``<id>.part`` and one ``<id>.json`` per upload."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.locks: dict[str, SendLock] = {}
        self.spools: dict[str, Spool] = {}  # open partials, so bytes are hashed only once

    def part(self, upload_id: str) -> Path:
        """Return where an upload's bytes are."""
        return self.folder / f"{upload_id}.part"

    def _meta(self, upload_id: str) -> Path:
        return self.folder / f"{upload_id}.json"

    def save(self, upload: Upload) -> None:
        """Write an upload's description (atomically). Blocking."""
        replace_file(self._meta(upload.id), json.dumps(asdict(upload)).encode(), mode=FILE_MODE)

    def load(self, upload_id: str) -> Upload | None:
        """Read an upload's description. Blocking."""
        if not upload_id.isalnum() or len(upload_id) > 64:
            return None
        try:
            return Upload(**json.loads(self._meta(upload_id).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def delete(self, upload_id: str) -> None:
        """Remove an upload's bytes and description. Blocking."""
        self.part(upload_id).unlink(missing_ok=True)
        self._meta(upload_id).unlink(missing_ok=True)

    def expired(self, now: datetime) -> list[str]:
        """Return the ids of uploads past their expiry. Blocking."""
        found = []
        for meta in self.folder.glob("*.json"):
            upload = self.load(meta.stem)
            expires = from_iso(upload.expires_at) if upload else None
            if expires is None or expires <= now:
                found.append(meta.stem)
        return found

    def offset(self, upload_id: str) -> int:
        """Return how many bytes have arrived. Blocking."""
        try:
            return self.part(upload_id).stat().st_size
        except FileNotFoundError:
            return 0


@routes.options("/api/tus/")
@routes.options("/api/tus/{upload_id}")
@access(Access.ANYONE)
async def options(request: web.Request) -> web.Response:
    """Tell tus clients what this server speaks."""
    return web.Response(
        status=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        },
    )


@routes.post("/api/tus/")
@access(Access.DEVICE, body="any")
async def create(request: web.Request) -> web.Response:
    """Create an upload of Upload-Length bytes described by Upload-Metadata."""
    _check_version(request)
    library, tus, clock = _parts(request)
    length = _header_int(request, "Upload-Length")
    metadata = _parse_metadata(request.headers.get("Upload-Metadata", ""))
    filename = metadata.get("filename") or metadata.get("name")
    if not filename:
        raise errors.BadRequest("Upload-Metadata must carry the file's name (filename).")
    relpath = metadata.get("relpath")
    parts = safe_relpath(relpath or filename)  # refuse a name that leaves its folder, up front
    if len(parts) > MAX_RELPATH_PARTS or len("/".join(parts).encode()) > MAX_RELPATH_BYTES:
        raise errors.BadRequest(
            f"relpath may have at most {MAX_RELPATH_PARTS} folders and {MAX_RELPATH_BYTES} bytes."
        )
    await asyncio.to_thread(library.check_space, length)
    who = caller(request)
    upload = Upload(
        id="".join(secrets.choice(ID_ALPHABET) for _ in range(24)),
        owner=who.device.device_id if who.device else "pc",
        length=length,
        filename=filename,
        relpath=relpath,
        modified=_modified(metadata.get("modified")),
        sha256=(metadata.get("sha256") or "").lower() or None,
        metadata=request.headers.get("Upload-Metadata", ""),
        expires_at=to_iso(clock.now() + LIFETIME) or "",
    )
    await asyncio.to_thread(tus.part(upload.id).touch, mode=FILE_MODE)
    await asyncio.to_thread(tus.save, upload)
    log.info("resumable upload %s started: %s (%d bytes)", upload.id, filename, length)
    return web.Response(
        status=201,
        headers={"Location": f"/api/tus/{upload.id}", "Upload-Expires": _http_date(upload)},
    )


@routes.head("/api/tus/{upload_id}")
@access(Access.DEVICE, body="any")
async def status(request: web.Request) -> web.Response:
    """Say how many bytes of an upload have arrived."""
    _check_version(request)
    _library, tus, _clock = _parts(request)
    upload = await _own(request, tus)
    offset = await asyncio.to_thread(tus.offset, upload.id)
    return web.Response(
        status=200,
        headers={
            "Upload-Offset": str(offset),
            "Upload-Length": str(upload.length),
            "Upload-Metadata": upload.metadata,
            "Upload-Expires": _http_date(upload),
            "Cache-Control": "no-store",
        },
    )


@routes.patch("/api/tus/{upload_id}")
@access(Access.DEVICE, body="any")
async def append(request: web.Request) -> web.Response:
    """Append bytes at Upload-Offset; the last bytes complete and store the file."""
    _check_version(request)
    if media_type(request) != "application/offset+octet-stream":
        raise errors.UnsupportedMediaType(
            "PATCH takes Content-Type: application/offset+octet-stream."
        )
    library, tus, clock = _parts(request)
    upload = await _own(request, tus)
    offset = _header_int(request, "Upload-Offset")
    checksum = _checksum(request.headers.get("Upload-Checksum"))
    async with _taken_over(tus, upload.id) as lock:
        try:
            spool = tus.spools.get(upload.id) or await library.resume_spool(tus.part(upload.id))
        except FileNotFoundError:  # finished, ended or expired while this request waited
            raise errors.NotFound("There is no such upload (it may have expired).") from None
        tus.spools[upload.id] = spool
        if offset != spool.size:
            raise errors.OffsetMismatch(f"The upload is at offset {spool.size}, not {offset}.")
        lock.sender = asyncio.current_task()
        try:
            with request.app[SERVICES_KEY].pairing.uploading(caller(request).device):
                progress = await _receive(request, spool, upload, checksum)
        finally:
            lock.sender = None  # filing the finished file is never cut short
        upload.expires_at = to_iso(clock.now() + LIFETIME) or ""
        await asyncio.to_thread(tus.save, upload)
        headers = {"Upload-Offset": str(spool.size), "Upload-Expires": _http_date(upload)}
        if spool.size == upload.length:
            try:
                stored = await _complete(request, library, tus, upload, spool)
            except BaseException:
                progress.end("failed")
                raise
            progress.end("done")
            record = stored.record
            log.info(
                "received from %s: %s (%s, %s, resumable)%s",
                sender(request),
                record.relpath,
                record.kind.value,
                human_size(record.size),
                ", already there" if stored.duplicate else "",
            )
            headers["Lanpair-File-Id"] = str(stored.record.id)
            headers["Lanpair-Sha256"] = stored.record.sha256 or ""  # to check end to end
            headers["Lanpair-Duplicate"] = "true" if stored.duplicate else "false"
        return web.Response(status=204, headers=headers)


@routes.delete("/api/tus/{upload_id}")
@access(Access.DEVICE, body="any")
async def terminate(request: web.Request) -> web.Response:
    """Abandon an upload and delete its bytes."""
    _check_version(request)
    _library, tus, _clock = _parts(request)
    upload = await _own(request, tus)
    async with _taken_over(tus, upload.id):
        _forget(tus, upload.id)
        await asyncio.to_thread(tus.delete, upload.id)
    return web.Response(status=204)


async def tus_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Put Tus-Resumable on every answer under /api/tus/, errors included."""
    if request.path.startswith("/api/tus/"):
        response.headers["Tus-Resumable"] = TUS_VERSION


async def purge_expired(app: web.Application) -> int:
    """Delete uploads untouched for 24 hours; return how many."""
    tus = app[TUS_KEY]
    gone = await asyncio.to_thread(tus.expired, app[SERVICES_KEY].clock.now())
    for upload_id in gone:
        _forget(tus, upload_id)
        await asyncio.to_thread(tus.delete, upload_id)
    if gone:
        log.info("deleted %d resumable upload(s) untouched for a day", len(gone))
    return len(gone)


async def purge_hourly(app: web.Application) -> AsyncIterator[None]:
    """Purge expired uploads at start and every hour while the daemon runs."""

    async def loop() -> None:
        while True:
            try:
                await purge_expired(app)
            except Exception:
                log.exception("purging expired uploads failed; trying again in an hour")
            await asyncio.sleep(PURGE_EVERY_S)

    task = spawn(loop(), "tus-purge")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _receive(
    request: web.Request, spool: Spool, upload: Upload, checksum: tuple[str, bytes] | None
) -> UploadProgress:
    """Append a PATCH's bytes; return its progress, for the caller to end once the upload
    is filed (``done``) or refused (``failed``) if these were its last bytes."""
    start = spool.size
    room = upload.length - start
    if request.content_length is not None and request.content_length > room:
        raise errors.BadRequest(f"Only {room} more bytes fit in this upload (Upload-Length).")
    digest = CHECKSUMS[checksum[0]]() if checksum else None
    progress = UploadProgress(
        request.app[HUB_KEY],
        caller(request).device,
        name=upload.filename,
        total=upload.length,
        upload="tus-" + hashlib.sha256(upload.id.encode()).hexdigest()[:12],
        arrived=start,
    )

    async def body() -> AsyncIterator[bytes]:
        seen = 0  # counted here: the spool's own size lags by what is still being written
        while chunk := await next_chunk(request.content):
            seen += len(chunk)
            if seen > room:
                raise errors.BadRequest("More bytes arrived than Upload-Length announced.")
            if digest is not None:
                digest.update(chunk)
            yield chunk

    try:
        await pump(body(), spool, progress.add)
    except BaseException:
        progress.end("paused")  # what arrived is kept: the client can resume
        # The connection died mid-chunk: keep every byte that arrived, durably, for a resume.
        await asyncio.shield(asyncio.to_thread(spool.sync))
        raise
    if checksum and digest is not None and digest.digest() != checksum[1]:
        progress.bytes = start
        progress.end("paused")  # the chunk is dropped: the client sends it again
        await asyncio.to_thread(spool.truncate, start)
        raise errors.ChecksumMismatch()
    if progress.bytes < upload.length:
        progress.end("sending")
    await asyncio.to_thread(spool.sync)
    return progress


async def _complete(
    request: web.Request, library: Library, tus: TusStore, upload: Upload, spool: Spool
) -> Stored:
    relparts = safe_relpath(upload.relpath or upload.filename)
    if upload.relpath is None:
        relparts = relparts[-1:]
    sha256 = await asyncio.to_thread(spool.finish, upload.modified)
    _forget(tus, upload.id)
    try:
        if upload.sha256 and upload.sha256 != sha256:
            raise errors.ChecksumMismatch("The file does not match the sha256 it was sent with.")
        folder, device_id = await library.folder_of(caller(request))
        return await library.settle(spool, folder, device_id, relparts, sha256=sha256)
    finally:
        await asyncio.to_thread(tus.delete, upload.id)


@contextlib.asynccontextmanager
async def _taken_over(tus: TusStore, upload_id: str) -> AsyncIterator[SendLock]:
    """Hold the upload's lock, stopping a request that is still sending its bytes first.

    Only the device that made an upload can reach it, so a new PATCH means the old one's
    connection is gone (a phone off Wi-Fi and back) even where TCP has not noticed: a
    server that only receives never does, without keepalive. Waiting for it would hold
    the resume off indefinitely; tusd releases its upload locks the same way.
    """
    lock = tus.locks.setdefault(upload_id, SendLock())
    if lock.sender is not None and not lock.sender.done():
        log.info("resumable upload %s: a new request takes over from one still open", upload_id)
        lock.sender.cancel()
    try:
        async with asyncio.timeout(TAKE_OVER_WAIT_S):
            await lock.acquire()
    except TimeoutError:
        raise errors.OffsetMismatch("Another request is still filing this upload.") from None
    try:
        yield lock
    finally:
        lock.release()


def _forget(tus: TusStore, upload_id: str) -> None:
    spool = tus.spools.pop(upload_id, None)
    if spool is not None:
        spool.close()
    tus.locks.pop(upload_id, None)


async def _own(request: web.Request, tus: TusStore) -> Upload:
    """Return the upload named in the path if the caller created it; else NotFound."""
    upload = await asyncio.to_thread(tus.load, request.match_info["upload_id"])
    who = caller(request)
    owner = who.device.device_id if who.device else "pc"
    if upload is None or upload.owner != owner:
        raise errors.NotFound("There is no such upload (it may have expired).")
    return upload


def _parts(request: web.Request) -> tuple[Library, TusStore, Any]:
    return request.app[LIBRARY_KEY], request.app[TUS_KEY], request.app[SERVICES_KEY].clock


def _check_version(request: web.Request) -> None:
    version = request.headers.get("Tus-Resumable")
    if version != TUS_VERSION:
        raise errors.BadRequest(f"Send Tus-Resumable: {TUS_VERSION} (got {version!r}).")


def _header_int(request: web.Request, name: str) -> int:
    value = whole_number(request.headers.get(name, ""))
    if value is None:
        raise errors.BadRequest(f"{name} must be a whole number of bytes.")
    return value


def _parse_metadata(header: str) -> dict[str, str]:
    """Decode Upload-Metadata: comma-separated ``key base64value`` pairs."""
    found: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        try:
            found[key] = base64.b64decode(value, validate=True).decode() if value else ""
        except (binascii.Error, UnicodeDecodeError):
            raise errors.BadRequest(f"Upload-Metadata {key!r} is not base64 text.") from None
    return found


def _checksum(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    algorithm, _, value = header.partition(" ")
    if algorithm not in CHECKSUMS:
        raise errors.BadRequest(f"Upload-Checksum algorithm must be one of {', '.join(CHECKSUMS)}.")
    try:
        return algorithm, base64.b64decode(value, validate=True)
    except binascii.Error:
        raise errors.BadRequest("Upload-Checksum must be base64.") from None


def _modified(text: str | None) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        value = float(text)  # type: ignore[arg-type]
        seconds = value / 1000 if value > 1e11 else value  # milliseconds, like File.lastModified
        if 0 < seconds < 32503680000:
            return seconds
    return None


def _http_date(upload: Upload) -> str:
    expires = from_iso(upload.expires_at)
    return expires.strftime("%a, %d %b %Y %H:%M:%S GMT") if expires else ""
