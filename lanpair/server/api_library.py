"""Uploads, the gallery, sync manifests and downloads: /api/upload, /api/gallery, /files…"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from lanpair import errors
from lanpair.clock import from_iso, to_iso
from lanpair.events import UploadProgress
from lanpair.library import PC_OWNER as PC_DEVICE
from lanpair.library import TRASH_KEPT, Library, item_json
from lanpair.models import Kind, TrashedFile
from lanpair.names import UnsafeName, safe_relpath
from lanpair.paths import web_dir
from lanpair.server.keys import HUB_KEY, LIBRARY_KEY, SERVICES_KEY
from lanpair.server.middleware import (
    Access,
    access,
    caller,
    field,
    json_response,
    media_type,
    read_json,
    sender,
    whole_number,
)
from lanpair.server.multipart import FormPart, FormReader
from lanpair.spool import human_size
from lanpair.store import FileQuery
from lanpair.zipstream import ZipCutShort

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SENDFILE_BYTES = 4 << 20  # a plain-HTTP download hands the kernel this much per sendfile()
TLS_READ_BYTES = 1 << 20  # a download over TLS reads this much per trip to a thread
TLS_WRITE_BYTES = 256 << 10  # and hands it to TLS this much at a time
SYNC_LIMIT_BYTES = 8 << 20
MAX_ZIP_FILES = 10_000
MAX_MANIFEST_ENTRIES = 100_000
PLACEHOLDERS = {
    Kind.IMAGE: "placeholder-image.svg",
    Kind.VIDEO: "placeholder-video.svg",
    Kind.FILE: "placeholder-file.svg",
}


@routes.post("/api/upload")
@routes.post("/api/storage/upload/{token}")
@access(Access.DEVICE, body="multipart")
async def upload(request: web.Request) -> web.Response:
    """Store every file of a multipart upload in the caller's folder."""
    library = request.app[LIBRARY_KEY]
    if media_type(request) != "multipart/form-data":
        raise errors.UnsupportedMediaType("Uploads are multipart/form-data.")
    if request.content_length is not None:
        await asyncio.to_thread(library.check_space, request.content_length, whole_request=True)
    reader = FormReader(request.content, request.headers.get(hdrs.CONTENT_TYPE, ""))
    results: list[dict[str, Any]] = []
    modified: float | None = None
    size: int | None = None
    with request.app[SERVICES_KEY].pairing.uploading(caller(request).device):
        while (part := await reader.next()) is not None:
            if part.filename is None:
                if part.name == "modified":
                    modified = _modified(await part.text())
                elif part.name == "size":
                    size = _size(await part.text())
                continue
            results.append(await _receive(library, request, part, part.filename, modified, size))
            modified = size = None
    if not results:
        raise errors.BadRequest("The upload holds no files.")
    log.info("received from %s: %s", sender(request), _outcome(results))
    refused = all(not r["ok"] for r in results)
    return json_response({"files": results}, status=400 if refused else 200)


async def _receive(
    library: Library,
    request: web.Request,
    part: FormPart,
    raw_name: str,
    modified: float | None,
    size: int | None,
) -> dict[str, Any]:
    who = caller(request)
    progress = UploadProgress(request.app[HUB_KEY], who.device, name=raw_name, total=size)
    try:
        name = safe_relpath(raw_name)[-1]  # browser uploads keep the base name only
        # Closed here even when the upload stops part-way: a suspended generator would keep
        # the request alive until it is finalized.
        async with contextlib.aclosing(part.chunks()) as chunks:
            stored = await library.receive(
                who, (name,), chunks, modified=modified, on_bytes=progress.add
            )
    except (UnsafeName, errors.BadRequest) as exc:
        progress.end("failed")
        if isinstance(exc, errors.BodyTooLarge):
            raise
        return {"name": raw_name, "ok": False, "error": exc.code, "message": exc.message}
    except BaseException:
        progress.end("failed")
        raise
    progress.end("done")
    record = stored.record
    return {
        "name": raw_name,
        "ok": True,
        "stored_as": record.relpath,
        "size": record.size,
        "sha256": record.sha256,
        "type": record.kind.value,
        "duplicate": stored.duplicate,
        "id": record.id,
        "item": item_json(record),
    }


@routes.get("/api/gallery")
@routes.get("/api/gallery/{token}")
@access(Access.DEVICE)
async def gallery(request: web.Request) -> web.Response:
    """List files newest first, a page at a time."""
    text = await request.app[LIBRARY_KEY].page_json(_query(request))
    return web.Response(
        text=text, content_type="application/json", headers={hdrs.CACHE_CONTROL: "no-store"}
    )


@routes.post("/api/sync")
@routes.post("/api/sync/{token}")
@access(Access.DEVICE)
async def sync(request: web.Request) -> web.Response:
    """Compare a device's list of files with the library: which does the PC lack?"""
    services = request.app[SERVICES_KEY]
    library = request.app[LIBRARY_KEY]
    entries = await _read_manifest(request)
    folder, device_id = await library.folder_of(caller(request))
    for e in entries:
        e["relpath"] = "/".join((folder, *e["relparts"]))
    have_paths, have_hashes = await services.store.files.present(
        folder,
        [(e["relpath"], e["size"]) for e in entries],
        [e["sha256"] for e in entries if e.get("sha256")],
    )
    present: list[str] = []
    missing: list[str] = []
    for e in entries:
        # The content decides when the device says it; else the same path and size.
        if e["sha256"]:
            have = e["sha256"] in have_hashes
        else:
            have = (e["relpath"], e["size"]) in have_paths
        (present if have else missing).append(e["original"])
    if device_id is not None:
        now = services.clock.now()
        await services.store.pairings.record_sync(device_id, now)
        request.app[HUB_KEY].publish(
            "device.synced", {"device_id": device_id, "last_sync": to_iso(now)}
        )
    return json_response({"missing": missing, "present": present})


@routes.get("/files/{id}")
@access(Access.DEVICE)
async def download(request: web.Request) -> web.StreamResponse:
    """Send a file's original bytes (Range, ETag and Last-Modified included)."""
    record, path = await request.app[LIBRARY_KEY].open(_file_id(request))
    response = _FileResponse(path)
    inline = record.kind is not Kind.FILE
    response.content_type = record.mime if inline else "application/octet-stream"
    disposition = "inline" if inline else "attachment"
    response.headers[hdrs.CONTENT_DISPOSITION] = (
        f"{disposition}; filename*=UTF-8''{quote(record.name, safe='')}"
    )
    # Whatever the file holds, it never runs script in lanpair's origin.
    response.headers["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; img-src 'self'; media-src 'self'"
    )
    response.headers[hdrs.CACHE_CONTROL] = "private, no-cache"
    return response


@routes.get("/thumbs/{id}")
@access(Access.DEVICE)
async def thumbnail(request: web.Request) -> web.StreamResponse:
    """Send a file's thumbnail, drawing it now if needed; a placeholder if there is none."""
    library = request.app[LIBRARY_KEY]
    record, _ = await library.open(_file_id(request))
    path = await library.thumbnail(record)
    if path is None:
        response = web.FileResponse(web_dir() / PLACEHOLDERS[record.kind])
        response.headers[hdrs.CACHE_CONTROL] = "no-cache"
        return response
    response = web.FileResponse(path)
    response.content_type = "image/webp"
    # Asked again each time (a 304 while unchanged): a file edited in place keeps its URL.
    response.headers[hdrs.CACHE_CONTROL] = "private, no-cache"
    return response


@routes.delete("/api/files/{id}")
@access(Access.DEVICE, body="any")
async def delete(request: web.Request) -> web.Response:
    """Move a file to the trash; it can be restored for 30 days."""
    trashed = await request.app[LIBRARY_KEY].delete(caller(request), _file_id(request))
    return json_response(trash_item(trashed))


@routes.post("/api/files/{id}/restore")
@access(Access.DEVICE)
async def restore(request: web.Request) -> web.Response:
    """Bring a file back from the trash."""
    if request.can_read_body:
        await read_json(request)
    record = await request.app[LIBRARY_KEY].restore(caller(request), _file_id(request))
    return json_response(item_json(record))


@routes.post("/api/files/{id}/rename")
@access(Access.DEVICE)
async def rename(request: web.Request) -> web.Response:
    """Give a file a new name in its folder."""
    name = field(await read_json(request), "name", str)
    record = await request.app[LIBRARY_KEY].rename(caller(request), _file_id(request), name)
    return json_response(item_json(record))


@routes.get("/api/trash")
@access(Access.DEVICE)
async def trash(request: web.Request) -> web.Response:
    """List the trash: a device sees its own files, the owner every file."""
    return json_response(
        [trash_item(t) for t in await request.app[LIBRARY_KEY].trash(caller(request))]
    )


@routes.post("/api/download.zip")
@access(Access.DEVICE)
async def download_zip(request: web.Request) -> web.StreamResponse:
    """Stream a zip of the chosen files, written as it is sent."""
    ids = field(await read_json(request), "ids", list)
    if (
        not ids
        or len(ids) > MAX_ZIP_FILES
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids)
    ):
        raise errors.BadRequest(f"ids must be a list of 1 to {MAX_ZIP_FILES} file ids.")
    async with contextlib.aclosing(request.app[LIBRARY_KEY].zip_stream(ids)) as chunks:
        try:
            first = await anext(chunks)  # a missing file answers 404 before anything is sent
        except ZipCutShort:
            raise errors.NotFound("A chosen file can no longer be read; it may be gone.") from None
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: "application/zip",
                hdrs.CONTENT_DISPOSITION: 'attachment; filename="lanpair.zip"',
                hdrs.CACHE_CONTROL: "no-store",
            }
        )
        await response.prepare(request)
        await response.write(first)
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except ZipCutShort:  # end the connection: the client must see a broken download
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response


class _FileResponse(web.FileResponse):
    """A FileResponse that bounds each sendfile() over HTTP, and over TLS reads big blocks
    and encrypts them in slices.

    One non-blocking sendfile() copies for as long as the receiver keeps the socket drained.
    A client on this PC drains it as fast as it fills: a 512 MiB download held the event
    loop for 43-146 ms at a time (bench/loop_lag.py --no-tls); in pieces of SENDFILE_BYTES,
    5-19 ms (5 runs), for the same CPU (9 downloads each, alternating: 0.49 CPU-s per GiB).

    sendfile() cannot encrypt, so under TLS asyncio falls back to copying through small
    writes. Reading 1 MiB blocks in a thread was measured faster; encrypting them whole was
    not. The block and its 1 MiB of ciphertext taken out of the memory BIO are freed
    together, glibc hands the heap's top back to the kernel, and the next block faults it
    in again: ~240k page faults per GiB. In 256 KiB slices, none: 0.95 -> 0.52 CPU-s per
    GiB to read, encrypt and take out (in-process). Served, 1 GiB over TLS, 9 each,
    alternating: medians 819 -> 929 MiB/s, 1.19 -> 1.06 server CPU-s.
    """

    async def _prepare_open_file(
        self, request: web.BaseRequest, fobj: Any, st: os.stat_result, file_encoding: Any
    ) -> Any:
        # aiohttp reads If-Range only as a date and takes any Range it can parse. Here: an
        # If-Range entity tag that is not this file's (it changed since) sends the whole
        # file; a Range of another unit or of several ranges is ignored (RFC 9110 allows
        # that, and a whole file is what such a client can use); "bytes=-0" asks for
        # nothing, which no file can satisfy.
        wanted = request.headers.get(hdrs.RANGE)
        if wanted is not None:
            unit, _, ranges = wanted.partition("=")
            if ranges.strip() == "-0":
                self.headers[hdrs.CONTENT_RANGE] = f"bytes */{st.st_size}"
                self.set_status(web.HTTPRequestRangeNotSatisfiable.status_code)
                return await web.StreamResponse.prepare(self, request)
            if unit.strip().lower() != "bytes" or "," in ranges or _stale(request, st):
                request = request.clone(
                    headers=[(k, v) for k, v in request.headers.items() if k.lower() != "range"]
                )
        return await super()._prepare_open_file(request, fobj, st, file_encoding)

    def _get_file_path_stat_encoding(self, accept_encoding: str) -> Any:
        # Never swap in a "<name>.gz" or "<name>.br" lying beside the file: that is another
        # file of the library, not this one compressed.
        return super()._get_file_path_stat_encoding("")

    async def _sendfile(self, request: web.BaseRequest, fobj: Any, offset: int, count: int) -> Any:
        writer = await web.StreamResponse.prepare(self, request)
        if writer is None:  # the response was sent already
            return None
        if not request.secure:
            try:
                await self._send_pieces(request, fobj, offset, count)
                return writer
            except NotImplementedError:  # an event loop without sendfile(): copy, as for TLS
                pass
        await self._send_blocks(writer, fobj, offset, count)
        return writer

    async def _send_pieces(
        self, request: web.BaseRequest, fobj: Any, offset: int, count: int
    ) -> None:
        loop = asyncio.get_running_loop()
        while count > 0:
            if request.transport is None:
                raise ConnectionResetError("Connection lost")
            sent = await loop.sendfile(request.transport, fobj, offset, min(SENDFILE_BYTES, count))
            if not sent:
                break  # the file shrank since it was measured
            offset, count = offset + sent, count - sent
        await web.StreamResponse.write_eof(self)

    @staticmethod
    async def _send_blocks(
        writer: AbstractStreamWriter, fobj: Any, offset: int, count: int
    ) -> None:
        fobj.seek(offset)  # the file was opened in a thread; a seek does no I/O
        while count > 0:
            block = await asyncio.to_thread(fobj.read, min(TLS_READ_BYTES, count))
            if not block:
                break  # the file shrank since it was measured
            count -= len(block)
            view = memoryview(block)
            for start in range(0, len(view), TLS_WRITE_BYTES):
                await writer.write(view[start : start + TLS_WRITE_BYTES])
        await writer.drain()


def _stale(request: web.BaseRequest, st: os.stat_result) -> bool:
    """Say whether If-Range names another version of the file than this one by its tag
    (the tag FileResponse gives it). A date is left to aiohttp."""
    validator = request.headers.get(hdrs.IF_RANGE, "").strip()
    if not validator.startswith(('"', "W/")):
        return False
    return validator != f'"{st.st_mtime_ns:x}-{st.st_size:x}"'  # a weak tag never matches


def trash_item(trashed: TrashedFile) -> dict[str, Any]:
    """Return a trashed file as the API shows it."""
    return {
        "id": trashed.file_id,
        "name": trashed.name,
        "folder": trashed.folder,
        "size": trashed.size,
        "device": trashed.device_id or PC_DEVICE,
        "deleted_at": to_iso(trashed.deleted_at),
        "restorable_until": to_iso(trashed.deleted_at + TRASH_KEPT),
    }


def _outcome(results: list[dict[str, Any]]) -> str:
    """Say what became of an upload's files, in one line for the log."""
    stored = [r for r in results if r["ok"]]
    new = [r for r in stored if not r["duplicate"]]
    size = human_size(sum(r["size"] for r in new))
    if len(results) == 1:
        [r] = results
        if not r["ok"]:
            return f"{r['name']!r}, refused ({r['error']})"
        return f"{r['stored_as']} ({r['type']}, {human_size(r['size'])})" + (
            ", already there" if r["duplicate"] else ""
        )
    return (
        f"{len(results)} files, {len(new)} new ({size}), "
        f"{len(stored) - len(new)} already there, {len(results) - len(stored)} refused"
    )


def _modified(text: str) -> float | None:
    """Read a File.lastModified value (milliseconds since 1970)."""
    try:
        value = float(text) / 1000
    except ValueError:
        return None
    return value if 0 < value < 32503680000 else None


def _size(text: str) -> int | None:
    """Read the byte size a client announces for the next file (for progress only)."""
    return whole_number(text.strip())


def _file_id(request: web.Request) -> int:
    file_id = whole_number(request.match_info["id"])
    if file_id is None:
        raise errors.NotFound("There is no file with that id.")
    return file_id


def _query(request: web.Request) -> FileQuery:
    params = request.query
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise errors.BadRequest("limit must be a number from 1 to 500.") from None
    if not 1 <= limit <= 500:
        raise errors.BadRequest("limit must be a number from 1 to 500.")
    kind = params.get("kind")
    if kind is not None and kind not in {k.value for k in Kind}:
        raise errors.BadRequest("kind must be image, video or file.")
    device = params.get("device")
    return FileQuery(
        limit=limit,
        cursor=params.get("cursor") or None,
        device_id=("" if device == PC_DEVICE else device) if device else None,
        kind=Kind(kind) if kind else None,
        taken_from=_date(params.get("from"), "from"),
        taken_to=_date(params.get("to"), "to"),
        name_contains=params.get("q") or None,
    )


def _date(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = from_iso(text)
        return moment.astimezone(UTC) if moment else None
    except (ValueError, OverflowError):
        raise errors.BadRequest(f"{name} must be an ISO 8601 date, like 2026-07-01.") from None


async def _read_manifest(request: web.Request) -> list[dict[str, Any]]:
    if media_type(request) != "application/json":
        raise errors.UnsupportedMediaType()
    if request.content_length is not None and request.content_length > SYNC_LIMIT_BYTES:
        raise errors.BodyTooLarge("A sync manifest may be at most 8 MiB.")
    raw = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        raw += chunk
        if len(raw) > SYNC_LIMIT_BYTES:
            raise errors.BodyTooLarge("A sync manifest may be at most 8 MiB.")
    return await asyncio.to_thread(_parse_manifest, bytes(raw))


def _parse_manifest(raw: bytes) -> list[dict[str, Any]]:
    """Parse and check a sync manifest. Blocking (CPU: a manifest can list 100k files)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise errors.BadRequest("The manifest is not valid JSON.") from None
    if isinstance(body, dict):
        body = body.get("files")
    if not isinstance(body, list):
        raise errors.BadRequest("The manifest must be a list of {name, size, modified, sha256}.")
    if len(body) > MAX_MANIFEST_ENTRIES:
        raise errors.BodyTooLarge(f"A manifest may list at most {MAX_MANIFEST_ENTRIES} files.")
    return [_manifest_entry(entry) for entry in body]


def _manifest_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise errors.BadRequest("Each manifest entry needs a name.")
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errors.BadRequest(f"The size of {entry['name']!r} must be a whole number of bytes.")
    sha = entry.get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        raise errors.BadRequest(f"The sha256 of {entry['name']!r} must be 64 hex digits.")
    return {
        "relparts": safe_relpath(entry["name"]),
        "size": size,
        "sha256": sha.lower() if sha else None,
        "original": entry["name"],
    }
