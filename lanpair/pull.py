"""Fetch a paired PC's gallery into a folder: only what the folder lacks, resumable.

Every gallery item lands at ``DIR/<its folder>/<its name>`` — the gallery names
only a file's top folder (the device's, or the PC's own), so folders inside it are not
recreated; a name taken by another file becomes ``name (1).ext``. Bytes go to a hidden
``.<name>.lanpair-part`` beside it (a name too long for that: a hash of it) and are
renamed when complete; a part left by an interrupted run is continued with Range. Which
item went to which name is kept in the pull state file, so a second run downloads
nothing; a file deleted locally comes again. A local file is never replaced: one changed
since it was pulled stays as it is, and the PC's copy comes beside it as ``name (1).ext``.
A file that cannot be written here (a full disk, a read-only folder) fails at once; it is
not retried like a network stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lanpair.client import ApiClient
from lanpair.errors import BadRequest, LanpairError, RemoteError, Unreachable
from lanpair.names import UnsafeName, numbered, safe_name
from lanpair.transfer import (
    RETRY_PAUSE_S,
    STALL_TIMEOUT_S,
    Fatal,
    Meter,
    StateFile,
    Summary,
    classify,
    guarded,
    run_all,
)

GALLERY_PAGE = 500
PART_SUFFIX = ".lanpair-part"
NAME_MAX_BYTES = 255  # one name in a folder, on every filesystem a pull is likely to write
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class PullState(StateFile):
    """Per destination folder: which gallery item went to which relative path."""

    def __init__(self, path: Path, dest: Path) -> None:
        super().__init__(path, {"dirs": {}})
        dirs: dict[str, Any] = self.data.setdefault("dirs", {})
        self.placed: dict[str, Any] = dirs.setdefault(str(dest), {})


@dataclass(slots=True)
class _Fetch:
    item: dict[str, Any]
    relpath: str
    size: int
    have: int = 0  # bytes of a part left by an earlier run
    moved: int = 0  # bytes received in this run


async def pull(
    api: ApiClient,
    dest: Path,
    state: PullState,
    meter: Meter,
    *,
    stall_s: float = STALL_TIMEOUT_S,
) -> Summary:
    """Download every gallery file that ``dest`` lacks; return what happened."""
    started = time.monotonic()
    summary = Summary()
    if await asyncio.to_thread(lambda: dest.exists() and not dest.is_dir()):
        raise BadRequest(f"{dest} is not a folder: pull fetches files into a folder.")
    items = await _gallery(api, stall_s)
    fetches, summary.already = await asyncio.to_thread(_plan, dest, items, state.placed)
    await state.save()
    summary.resumed = sum(1 for f in fetches if f.have)
    meter.start(sum(f.size for f in fetches), sum(f.have for f in fetches), len(fetches))

    async def one(fetch: _Fetch) -> bool:
        await _download(api, dest, fetch, meter, stall_s)
        return False

    await run_all(api, fetches, one, summary, meter)
    summary.elapsed_s = time.monotonic() - started
    return summary


async def _gallery(api: ApiClient, stall_s: float) -> list[dict[str, Any]]:
    """Return every gallery item, page after page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        query = f"/api/gallery?limit={GALLERY_PAGE}" + (f"&cursor={cursor}" if cursor else "")
        page = await guarded(api.call("GET", query), stall_s)
        items += [i for i in page.get("items", []) if isinstance(i, dict)]
        cursor = page.get("next_cursor")
        if not cursor or cursor in seen:
            return items
        seen.add(cursor)


def _plan(
    dest: Path, items: list[dict[str, Any]], placed: dict[str, Any]
) -> tuple[list[_Fetch], int]:
    """Decide where each item goes and which are needed. Blocking (stats files)."""
    fetches: list[_Fetch] = []
    already = 0
    listed = {str(item.get("id")) for item in items}  # names of items gone are free again
    # Case aside: on a case-insensitive disk (macOS, exFAT) IMG.JPG and img.jpg are one file.
    claimed = {v.casefold() for k, v in placed.items() if isinstance(v, str) and k in listed}
    for item in items:
        file_id, size = item.get("id"), item.get("size")
        if not isinstance(file_id, int) or not isinstance(size, int) or size < 0:
            continue
        key = str(file_id)
        relpath = placed.get(key)
        if isinstance(relpath, str) and _size_of(dest / relpath) not in (None, size):
            relpath = None  # changed here since it was pulled (or the PC's copy changed)
        if not isinstance(relpath, str):
            relpath = _free_name(dest, item, size, claimed)
            if relpath is None:
                continue
            placed[key] = relpath
            claimed.add(relpath.casefold())
        target = dest / relpath
        if _size_of(target) == size:
            already += 1
            continue
        fetches.append(_Fetch(item, relpath, size, have=min(_size_of(_part(target)) or 0, size)))
    return fetches, already


def _free_name(dest: Path, item: dict[str, Any], size: int, claimed: set[str]) -> str | None:
    """Return where a new item goes: its name in its folder, or the first free ``name (n)``;
    a file already there with the item's size is taken as the item itself."""
    try:
        folder = safe_name(str(item.get("folder") or "PC").replace("/", "_"))
        name = safe_name(str(item.get("name") or "unnamed"))
    except UnsafeName:
        return None
    for n in range(1000):
        relpath = f"{folder}/{name if n == 0 else numbered(name, n)}"
        if relpath.casefold() in claimed:
            continue
        existing = _size_of(dest / relpath)
        if existing is None or existing == size:
            return relpath
    return None


def _size_of(path: Path) -> int | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size if path.is_file() else -1


def _part(target: Path) -> Path:
    name = f".{target.name}{PART_SUFFIX}"
    if len(os.fsencode(name)) > NAME_MAX_BYTES:  # the PC allows names of up to 255 bytes
        name = f".{hashlib.sha256(os.fsencode(target.name)).hexdigest()[:20]}{PART_SUFFIX}"
    return target.with_name(name)


async def _download(
    api: ApiClient, dest: Path, fetch: _Fetch, meter: Meter, stall_s: float
) -> None:
    """Fetch one file into its part file (continuing one), then rename it into place.

    A stall is the connection's own timeout (``stall_s`` without a byte). A file that
    cannot be written here fails at once (Fatal when the disk is full)."""
    try:
        await _fetch(api, dest, fetch, meter, stall_s)
    except OSError as exc:  # the network's failures are Unreachable: this is the folder
        if exc.errno in DISK_FULL:
            raise Fatal(f"The disk of {dest} is full.") from None
        raise LanpairError(f"cannot be written here ({exc.strerror or exc}).") from None


async def _fetch(api: ApiClient, dest: Path, fetch: _Fetch, meter: Meter, stall_s: float) -> None:
    target = dest / fetch.relpath
    part = _part(target)
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    last_moved = time.monotonic()
    pauses = iter(RETRY_PAUSE_S)
    while True:
        moved_before = fetch.moved
        found = await asyncio.to_thread(_size_of, part)
        if found == fetch.size:
            break  # an earlier run got every byte but stopped before the rename
        have = found if found and found > 0 else 0
        headers = {"Range": f"bytes={have}-"} if 0 < have < fetch.size else {}
        try:
            await _receive(api, fetch, part, have, headers, meter)
            break
        except Unreachable as exc:
            if fetch.moved > moved_before:
                last_moved, pauses = time.monotonic(), iter(RETRY_PAUSE_S)
            if time.monotonic() - last_moved > stall_s:
                raise Unreachable(
                    f"Gave up after {stall_s:g} s without progress ({exc})."
                ) from None
            await asyncio.sleep(next(pauses, RETRY_PAUSE_S[-1]))
        except RemoteError as exc:
            raise classify(exc) from None
    await asyncio.to_thread(_settle, part, target, fetch.item.get("taken_at"))


async def _receive(
    api: ApiClient,
    fetch: _Fetch,
    part: Path,
    have: int,
    headers: dict[str, str],
    meter: Meter,
) -> None:
    """Stream the file's bytes into ``part`` (counted in ``fetch.moved``), then fsync it."""
    path = f"/files/{fetch.item['id']}"

    def landed(n_bytes: int) -> None:
        fetch.moved += n_bytes
        meter.advance(n_bytes)

    async with api.request("GET", path, headers=headers) as response:
        appending = response.status == 206 and have > 0
        if not appending and have:
            meter.advance(-have)  # the PC sent the whole file: count the part's bytes again
        sink = await asyncio.to_thread(part.open, "ab" if appending else "wb")
        try:
            await response.save_to(sink, landed)
            await asyncio.to_thread(sink.flush)
            await asyncio.to_thread(os.fsync, sink.fileno())
        finally:
            await asyncio.to_thread(sink.close)
    size = await asyncio.to_thread(_size_of, part)
    if size != fetch.size:
        raise Unreachable(f"got {size} of {fetch.size} bytes")


def _settle(part: Path, target: Path, taken_at: Any) -> None:
    """Give the finished part its name (never over another file) and the photo's date."""
    if isinstance(taken_at, str):
        with contextlib.suppress(ValueError, OSError, OverflowError):
            moment = datetime.fromisoformat(taken_at).timestamp()
            os.utime(part, (moment, moment))
    try:
        os.link(part, target)
    except FileExistsError:
        if _size_of(target) != _size_of(part):  # a file made here since the plan: keep it
            raise LanpairError(f"{target.name} appeared here meanwhile; kept as it is.") from None
    except OSError:  # no hard links here (FAT, some network shares): rename instead
        if target.exists():
            raise LanpairError(f"{target.name} appeared here meanwhile; kept as it is.") from None
        part.replace(target)
        return
    part.unlink()
