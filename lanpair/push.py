"""Send files and folders to a paired PC: skipping what it has, resumable over tus.

A folder keeps its own name as the first part of each file's relative path
(``lanpair push ~/Photos/Trip`` sends ``Trip/day 1/a.jpg``, stored under the device's
folder on the PC); hidden files inside folders are left out. ``/api/sync`` first says
which files the PC lacks; those go over tus, one PATCH per file from wherever the PC's
copy stands, read from disk and sent a MiB at a time by one thread per file. Each
upload's URL is written to the push state file as soon as it exists, so a run that was
cut off asks the PC (HEAD) how far it got and goes on from there; finished files are
found by the sync and never sent again.

Hashes. The manifest and the upload's metadata carry each file's SHA-256 when it is
known before sending: files up to ``PREHASH_MAX_BYTES`` are hashed first (then a copy
under another name is skipped too, and the PC refuses a copy that arrives different).
Bigger ones are not hashed here at all: hashing 1 GiB costs ~0.8 s of CPU (4% of a
push, measured), the PC hashes what it stores anyway and answers with it, and TLS
already guards the bytes on the way. Every hash is kept in the state file (by path,
size and mtime) for the next run's manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lanpair.client import ApiClient, TusAnswer
from lanpair.errors import BadRequest, LanpairError, RemoteError, Unreachable
from lanpair.names import UnsafeName, safe_name
from lanpair.transfer import (
    CHUNK_BYTES,
    RETRY_PAUSE_S,
    STALL_TIMEOUT_S,
    Meter,
    StateFile,
    Summary,
    classify,
    guarded,
    run_all,
)

PREHASH_MAX_BYTES = 64 << 20
KEEP_UPLOAD_BYTES = 8 << 20  # from this size an upload's URL is on disk before its bytes go
MANIFEST_BATCH = 5000
FINISH_WAIT_S = 120.0  # a whole file's bytes sent: how long the PC may take to file it
# Answers that mean "ask where the upload stands and go on": a conflict or lock over the
# offset, or the PC (or something in between) failing for now.
RETRY_STATUSES = frozenset({409, 423, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file to push and the relative path it is sent under."""

    path: Path
    relpath: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """Return the state file's key for this file."""
        return str(self.path)


def collect(paths: Iterable[Path]) -> list[LocalFile]:
    """Return the files under ``paths``: a folder's own name starts each relpath. Blocking."""
    found: list[LocalFile] = []
    for given in paths:
        path = Path(os.path.normpath(given.expanduser().absolute()))  # ".." names its folder
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        _add(found, Path(root) / name, path.parent)
        elif path.is_file():
            _add(found, path, path.parent)
        else:
            raise BadRequest(f"{given} is neither a file nor a folder.")
    return found


def _add(found: list[LocalFile], path: Path, base: Path) -> None:
    try:
        stat = path.stat()
    except OSError:
        return
    if not path.is_file():
        return
    relpath = "/".join(_sendable(part) for part in path.relative_to(base).parts)
    found.append(LocalFile(path, relpath, stat.st_size, stat.st_mtime_ns))


def _sendable(part: str) -> str:
    """Return one part of a relative path as the PC will store it: the manifest and the
    upload then name the file as the PC keeps it, and the PC never refuses the path.

    Bytes that are not UTF-8 become U+FFFD (JSON and tus metadata carry only text); a
    backslash is a name's own character here, not a separator; "Q:A" stays out of drive
    syntax.
    """
    text = os.fsencode(part).decode("utf-8", "replace").replace("\\", "_")
    try:
        return safe_name(text)
    except UnsafeName:  # ".." once its invisible characters are gone
        return safe_name("_" + text)


def sha256_of(path: Path) -> str:
    """Return a file's SHA-256 (hex). Blocking."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class PushState(StateFile):
    """Per file (by path): size, mtime, SHA-256 once known, and an unfinished upload's URL."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, {"files": {}})

    def entry(self, file: LocalFile) -> dict[str, Any]:
        """Return the file's record, starting afresh if the file changed since."""
        files: dict[str, Any] = self.data.setdefault("files", {})
        entry = files.get(file.key)
        if not isinstance(entry, dict) or (entry.get("size"), entry.get("mtime_ns")) != (
            file.size,
            file.mtime_ns,
        ):
            entry = {"size": file.size, "mtime_ns": file.mtime_ns}
            files[file.key] = entry
        return entry

    def sha256(self, file: LocalFile) -> str | None:
        """Return the file's hash if an earlier run learned it."""
        value = self.entry(file).get("sha256")
        return value if isinstance(value, str) else None


async def push(
    api: ApiClient,
    paths: Sequence[Path],
    state: PushState,
    meter: Meter,
    *,
    stall_s: float = STALL_TIMEOUT_S,
) -> Summary:
    """Send every file under ``paths`` that the PC lacks; return what happened."""
    started = time.monotonic()
    summary = Summary()
    files = await asyncio.to_thread(collect, paths)
    hashes = await _known_hashes(files, state)
    missing = await _missing(api, files, hashes, stall_s)
    summary.already = len(files) - len(missing)
    sends = [_Send(file, state.entry(file)) for file in missing]
    await _resume_offsets(api, sends, state, stall_s)
    summary.resumed = sum(1 for send in sends if send.offset > 0)
    meter.start(sum(s.file.size for s in sends), sum(s.offset for s in sends), len(sends))

    async def one(send: _Send) -> bool:
        answer = await _send_file(api, send, state, meter, stall_s)
        return bool(answer.duplicate)

    try:
        await run_all(api, sends, one, summary, meter)
    finally:
        await state.flush()
    summary.elapsed_s = time.monotonic() - started
    return summary


async def _known_hashes(files: list[LocalFile], state: PushState) -> dict[str, str]:
    """Return the hashes known from earlier runs, plus those of files small enough to hash now."""
    hashes: dict[str, str] = {}
    to_hash: list[LocalFile] = []
    for file in files:
        known = state.sha256(file)
        if known:
            hashes[file.key] = known
        elif file.size <= PREHASH_MAX_BYTES:
            to_hash.append(file)
    if to_hash:
        limit = asyncio.Semaphore(os.cpu_count() or 2)

        async def hash_one(file: LocalFile) -> None:
            async with limit:
                with contextlib.suppress(OSError):
                    hashes[file.key] = await asyncio.to_thread(sha256_of, file.path)
                    state.entry(file)["sha256"] = hashes[file.key]

        await asyncio.gather(*(hash_one(f) for f in to_hash))
        await state.save()
    return hashes


async def _missing(
    api: ApiClient, files: list[LocalFile], hashes: dict[str, str], stall_s: float
) -> list[LocalFile]:
    """Ask the PC which files it lacks (a name the PC lacks sends every file of that name)."""
    missing: list[LocalFile] = []
    for start in range(0, len(files), MANIFEST_BATCH):
        batch = files[start : start + MANIFEST_BATCH]
        manifest = [
            {
                "name": f.relpath,
                "size": f.size,
                "modified": f.mtime_ns / 1e9,
                **({"sha256": hashes[f.key]} if f.key in hashes else {}),
            }
            for f in batch
        ]
        answer = await guarded(api.call("POST", "/api/sync", manifest), stall_s)
        lacking = set(answer.get("missing", [])) if isinstance(answer, dict) else set()
        missing += [f for f in batch if f.relpath in lacking]
    return missing


@dataclass(slots=True)
class _Send:
    file: LocalFile
    entry: dict[str, Any]
    offset: int = 0  # where the PC's copy stands
    moved: int = 0  # bytes sent in this run (each byte once, however often retried)
    counted: int = 0  # the furthest byte sent so far

    @property
    def relpath(self) -> str:
        return self.file.relpath


async def _resume_offsets(
    api: ApiClient, sends: list[_Send], state: PushState, stall_s: float
) -> None:
    """Ask the PC how far each interrupted upload got (uploads it forgot start over)."""

    async def ask(send: _Send) -> None:
        location = send.entry.get("upload")
        if not isinstance(location, str):
            return
        offset = await guarded(api.tus_offset(location), stall_s)
        if offset is None or offset > send.file.size:
            send.entry.pop("upload", None)
        else:
            send.offset = send.counted = offset

    await asyncio.gather(*(ask(send) for send in sends))
    if any("upload" in send.entry for send in sends):
        await state.save()


async def _send_file(
    api: ApiClient, send: _Send, state: PushState, meter: Meter, stall_s: float
) -> Any:
    """Create (or continue) the file's upload and send the rest of it, retrying a broken
    connection until nothing has moved for ``stall_s``."""
    file, entry = send.file, send.entry
    sha256 = entry.get("sha256")
    last_moved = time.monotonic()
    pauses = iter(RETRY_PAUSE_S)
    while True:
        location = entry.get("upload")
        metadata: dict[str, str] = {}
        if not isinstance(location, str):
            metadata = {
                "filename": file.relpath.rsplit("/", 1)[-1],
                "relpath": file.relpath,
                "modified": f"{file.mtime_ns / 1e9:.3f}",
            }
            if sha256:
                metadata["sha256"] = sha256
        sent_before = send.moved
        try:
            if not isinstance(location, str):
                location = await _create(api, file.size, metadata, stall_s)
                entry["upload"], entry["offset"] = location, 0
                send.offset = 0
                await state.save(soon=file.size < KEEP_UPLOAD_BYTES)
            answer = await _patch(api, location, send, meter, stall_s)
        except _Retry as retry:
            if send.moved > sent_before:
                last_moved, pauses = time.monotonic(), iter(RETRY_PAUSE_S)
            entry["offset"] = send.offset
            await state.save()
            if time.monotonic() - last_moved > stall_s:
                raise Unreachable(f"Gave up: {retry}.") from None
            await asyncio.sleep(next(pauses, RETRY_PAUSE_S[-1]))
            offset = None
            if isinstance(location, str):
                offset = await _offset_or_none(api, location, stall_s)
            if offset is None and retry.gone:
                entry.pop("upload", None)
                # Finished while we waited for its answer, or forgotten (expired): which?
                if await _already_there(api, file, sha256, stall_s):
                    await state.save(soon=True)
                    return TusAnswer(offset=file.size, file_id=None, duplicate=False)
            elif offset is not None:
                send.offset = entry["offset"] = offset
            continue
        if answer.offset < file.size:
            send.offset = answer.offset
            continue
        entry.pop("upload", None)
        entry.pop("offset", None)
        entry["sha256"] = sha256 or answer.sha256
        await state.save(soon=True)
        return answer


class _Retry(Exception):
    """A transient failure: ask where the upload stands and go on."""

    def __init__(self, why: str, *, gone: bool = False) -> None:
        super().__init__(why)
        self.gone = gone


async def _create(api: ApiClient, length: int, metadata: dict[str, str], stall_s: float) -> str:
    """Create an upload; a connection failure is one more retry."""
    try:
        async with asyncio.timeout(stall_s):
            return await api.tus_create(length, metadata)
    except TimeoutError:
        raise _Retry(f"no answer for {stall_s:g} s") from None
    except Unreachable as exc:
        raise _Retry(exc.message) from None
    except RemoteError as exc:
        if exc.status in RETRY_STATUSES:
            raise _Retry(exc.message) from None
        raise classify(exc) from None


async def _patch(
    api: ApiClient,
    location: str,
    send: _Send,
    meter: Meter,
    stall_s: float,
) -> TusAnswer:
    """One PATCH from ``send.offset`` to the end of the file; a stall (the connection's
    timeout) or a broken connection raises _Retry."""
    loop = asyncio.get_running_loop()
    start = send.offset
    position = start

    def sent(n_bytes: int) -> None:
        nonlocal position
        position += n_bytes
        if position > send.counted:  # bytes sent again after a retry count once
            meter.advance(position - send.counted)
            send.moved += position - send.counted
            send.counted = position

    try:
        source = await asyncio.to_thread(_open_at, send.file.path, start)
        try:
            body = _Counted(source, lambda n: loop.call_soon_threadsafe(sent, n))
            answer = await api.tus_append(
                location,
                start,
                body,
                send.file.size - start,
                answer_timeout_s=max(stall_s, FINISH_WAIT_S),  # the PC files it, then answers
            )
        finally:
            source.close()
    except (Unreachable, OSError) as exc:  # e.g. a cut cable
        raise _Retry(getattr(exc, "message", None) or str(exc) or type(exc).__name__) from None
    except RemoteError as exc:
        if exc.status in RETRY_STATUSES:
            raise _Retry(exc.message) from None
        if exc.status in (404, 410):
            raise _Retry(exc.message, gone=True) from None
        raise classify(exc) from None
    send.offset = answer.offset
    return answer


def _open_at(path: Path, offset: int) -> BinaryIO:
    try:
        source = path.open("rb")
    except OSError as exc:
        raise _unreadable(exc) from None
    source.seek(offset)
    return source


def _unreadable(exc: OSError) -> LanpairError:
    """Return a local file's read error as that file's failure: not an OSError, which
    would read as a broken connection and be retried until --timeout."""
    return LanpairError(f"cannot be read here ({exc.strerror or exc}).")


class _Counted:
    """A file read for sending, each block counted as it goes out (in the sending thread)."""

    def __init__(self, source: BinaryIO, on_bytes: Callable[[int], Any]) -> None:
        self._source = source
        self._on_bytes = on_bytes

    def read(self, size: int = -1, /) -> bytes:
        """Return the next block."""
        try:
            data = self._source.read(size)
        except OSError as exc:
            raise _unreadable(exc) from None
        if data:
            self._on_bytes(len(data))
        return data


async def _offset_or_none(api: ApiClient, location: str, limit_s: float) -> int | None:
    """Return where an upload stands; None if the PC does not say (or has no such upload)."""
    try:
        async with asyncio.timeout(limit_s):
            return await api.tus_offset(location)
    except (TimeoutError, RemoteError, Unreachable):
        return None


async def _already_there(api: ApiClient, file: LocalFile, sha256: Any, limit_s: float) -> bool:
    """Ask the PC (sync) whether it has this file now."""
    try:
        return not await _missing(
            api, [file], {file.key: sha256} if isinstance(sha256, str) else {}, limit_s
        )
    except (Unreachable, RemoteError):
        return False
