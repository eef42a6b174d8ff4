"""The library: where uploads land, how they are indexed, and how they are found again.

An upload is written to a temp file in the library's staging folder (same filesystem),
hashed while it streams, fsynced, and only then linked into place under a name that was
free, so it is never visible half-written and never replaces another file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from stat import S_ISREG as stat_is_file
from typing import TYPE_CHECKING, Any, Self

from lanpair import tree, zipstream
from lanpair.clock import Clock, to_iso
from lanpair.errors import (
    BodyTooLarge,
    InsufficientStorage,
    NameTaken,
    NotFound,
    NotOwner,
)
from lanpair.events import EventHub
from lanpair.models import Caller, FileRecord, Kind, NewFile, ThumbState, TrashedFile
from lanpair.names import folder_name, numbered, safe_name
from lanpair.paths import INTERNAL_DIR_NAME, LibraryPaths
from lanpair.spool import (
    WRITE_BLOCK_BYTES,
    Spool,
    free_bytes,
    gather_up_to,
    human_size,
    pump,
)
from lanpair.store import FileQuery, FileStat, Indexed, Store
from lanpair.tasks import spawn
from lanpair.thumbnails import Job, Thumbnails, in_thread

if TYPE_CHECKING:
    from lanpair.watcher import Change, Watcher, WatchMode

log = logging.getLogger(__name__)

SCAN_BATCH = 1000


TRASH_KEPT = timedelta(days=30)
HOUSEKEEPING_S = 3600.0
PC_OWNER = "pc"
THUMB_QUEUE = 10_000


@dataclass(frozen=True, slots=True)
class Stored:
    """The outcome of one upload: the indexed file, and whether it was already there."""

    record: FileRecord
    duplicate: bool


class Library:
    """Receive, index and hand out the files of one library folder."""

    def __init__(
        self,
        store: Store,
        paths: LibraryPaths,
        clock: Clock,
        *,
        thumbs_dir: Path,
        pc_folder: str,
        reserve_bytes: int,
        max_upload_bytes: int = 0,
        run_job: Job | None = None,
        thumb_tasks: int = 2,
        hub: EventHub | None = None,
        watch: WatchMode | None = None,
    ) -> None:
        self._store = store
        self.paths = paths
        self._clock = clock
        self.pc_folder = folder_name(pc_folder)
        self._reserve = reserve_bytes
        self._max_upload = max_upload_bytes
        self.hub = hub or EventHub(clock.now)
        self._thumbs = Thumbnails(store, paths.root, thumbs_dir, run_job or in_thread)
        self._thumb_tasks = thumb_tasks
        self._queue: asyncio.Queue[tuple[FileRecord, str | None]] = asyncio.Queue(THUMB_QUEUE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._filing: set[asyncio.Task[Stored]] = set()  # uploads being placed and indexed
        self._folders: dict[str, str] = {}  # device id -> folder; a folder never changes
        self._file_locks: dict[int, asyncio.Lock] = {}
        self._watch = watch
        self._watcher: Watcher | None = None
        self._stack = contextlib.AsyncExitStack()
        self._scanned = asyncio.Event()
        self._claims: dict[str, int] = {}  # paths lanpair itself is changing right now
        self._deferred: set[str] = set()  # what the watcher saw there meanwhile
        self._loose: set[str] = set()  # files directly in the root the log has named
        self._odd: set[str] = set()  # names that are not UTF-8 the log has named
        # one upload of a content at a time (a lock lives while an upload holds or awaits it)
        self._content_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def __aenter__(self) -> Self:
        """Make the library's folders, start drawing thumbnails, and rescan in the background."""
        self._scanned.clear()
        await asyncio.to_thread(self.paths.ensure)
        await asyncio.to_thread(tree.empty, self.paths.staging)  # partials of uploads cut by a stop
        await asyncio.to_thread(self._thumbs.dir.mkdir, parents=True, exist_ok=True)
        for n in range(self._thumb_tasks):
            self._run_task(self._draw_thumbnails(), f"thumbnails-{n}")
        if self._watch is not None:  # watch first, so nothing lands unseen during the scan
            from lanpair.watcher import Watcher  # only here: the HTTP layer needs no watchdog

            watcher = Watcher(
                self.paths.root, self.apply, mode=self._watch, ignore=frozenset({INTERNAL_DIR_NAME})
            )
            self._watcher = await self._stack.enter_async_context(watcher)
        self._run_task(self._scan_then_fill(), "library-scan")
        self._run_task(self._purge_hourly(), "trash-purge")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop watching, scanning and drawing."""
        await self._stack.aclose()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _run_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = spawn(coro, name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def thumbnail(self, record: FileRecord) -> Path | None:
        """Return a file's thumbnail, drawing it now if it is still missing."""
        return await self._thumbs.ensure(record)

    async def _announce(self, record: FileRecord, indexed: Indexed, *, announce: bool) -> None:
        """Queue a new or changed file's thumbnail; announce the file once it has one."""
        if indexed is Indexed.SAME:
            return  # a second sighting: whoever indexed it first announced it
        if indexed is Indexed.CHANGED:  # edited in place: the cached thumbnail is of the old one
            await asyncio.to_thread(self._thumbs.forget, record)
        event = ("file.added" if indexed is Indexed.ADDED else "file.updated") if announce else None
        if event == "file.added" and record.kind is Kind.VIDEO:
            # A poster can take ffmpeg seconds: show the video now, its poster when drawn.
            self.hub.publish(event, {"item": item_json(record)})
            event = "file.updated"
        if record.thumb is ThumbState.PENDING:
            try:
                self._queue.put_nowait((record, event))
                return
            except asyncio.QueueFull:
                pass  # drawn on demand later
        if event is not None:
            self.hub.publish(event, {"item": item_json(record)})
            await asyncio.sleep(0)  # in a burst, let subscribers take each before the next

    async def _draw_thumbnails(self) -> None:
        while True:
            record, event = await self._queue.get()
            try:
                await self._thumbs.ensure(record)
                fresh = await self._store.files.get(record.id) if event else None
            except Exception:  # one bad file must not stop the drawing
                log.exception("drawing the thumbnail of %s failed", record.relpath)
                fresh = record
            if event is not None and fresh is not None:
                self.hub.publish(event, {"item": item_json(fresh)})

    async def _purge_hourly(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                await self.purge_trash()
            except Exception:
                log.exception("purging the trash failed; trying again in an hour")

    async def _scan_then_fill(self) -> None:
        try:
            await self.purge_trash()
            await self.scan()
        finally:
            self._scanned.set()  # the watcher's changes wait for this
        for record in await self._store.files.pending_thumbs():
            await self._queue.put((record, None))

    async def folder_of(self, caller: Caller) -> tuple[str, str | None]:
        """Return the folder a caller uploads into, and the device id its files belong to."""
        if caller.device is None:
            return self.pc_folder, None
        device = caller.device
        cached = self._folders.get(device.device_id)
        if cached is not None:
            return cached, device.device_id
        folder = await self._store.pairings.device_folder(
            device.device_id,
            lambda taken: _device_folder(
                device.device_name, device.device_id, taken | {self.pc_folder}
            ),
        )
        self._folders[device.device_id] = folder
        return folder, device.device_id

    def check_space(self, incoming_bytes: int, *, whole_request: bool = False) -> None:
        """Raise InsufficientStorage if ``incoming_bytes`` would eat into the reserve, or
        BodyTooLarge if one file is over the limit (a many-file request is not). Blocking."""
        if self._max_upload and not whole_request and incoming_bytes > self._max_upload:
            raise BodyTooLarge(f"This PC takes files of at most {human_size(self._max_upload)}.")
        if free_bytes(self.paths.root) - incoming_bytes < self._reserve:
            raise InsufficientStorage()

    async def receive(
        self,
        caller: Caller,
        relparts: tuple[str, ...],
        chunks: AsyncIterable[bytes],
        *,
        modified: float | None = None,
        size_hint: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Stored:
        """Stream one file into the caller's folder; index it; return what was stored.

        Raises UnsafeName, BodyTooLarge, InsufficientStorage. Nothing is left behind on failure.
        """
        folder, device_id = await self.folder_of(caller)
        stream = aiter(chunks)
        first, ended = await gather_up_to(stream, WRITE_BLOCK_BYTES)
        if on_bytes is not None and first:
            on_bytes(sum(map(len, first)))
        if ended:  # a small file, here whole: written and made durable in one trip
            spool, sha256 = await asyncio.to_thread(self._write_whole, first, modified)
            return await self._file_in(spool, sha256, folder, device_id, relparts)
        if size_hint is not None:
            await asyncio.to_thread(self.check_space, size_hint)
        spool = await asyncio.to_thread(
            Spool.create, self.paths.staging, self._reserve, self._max_upload
        )
        try:
            await asyncio.to_thread(spool.write_all, first)
            await pump(stream, spool, on_bytes)
        except BaseException:
            await asyncio.to_thread(spool.discard)
            raise
        return await self.settle(spool, folder, device_id, relparts, modified=modified)

    def _write_whole(self, pieces: list[bytes], modified: float | None) -> tuple[Spool, str]:
        """Write a whole small file to a new spool and make it durable; return the spool
        and its SHA-256. Blocking."""
        self.check_space(sum(map(len, pieces)))
        spool = Spool.create(self.paths.staging, self._reserve, self._max_upload)
        try:
            spool.write_all(pieces)
            return spool, spool.finish(modified)
        except BaseException:
            spool.discard()
            raise

    async def resume_spool(self, path: Path) -> Spool:
        """Open a resumable upload's partial file to append to it."""
        return await asyncio.to_thread(Spool, path, self._reserve, self._max_upload, resume=True)

    async def settle(
        self,
        spool: Spool,
        folder: str,
        device_id: str | None,
        relparts: tuple[str, ...],
        *,
        modified: float | None = None,
        sha256: str | None = None,
    ) -> Stored:
        """Finish a spool, unless ``sha256`` says it is finished, then put it in place (or
        answer the copy already there) and index it.

        The spool is gone afterwards, whatever happened: placed, or deleted.
        """
        if sha256 is None:
            try:
                sha256 = await asyncio.to_thread(spool.finish, modified)
            except BaseException:
                await asyncio.to_thread(spool.discard)
                raise
        return await self._file_in(spool, sha256, folder, device_id, relparts)

    async def _file_in(
        self,
        spool: Spool,
        sha256: str,
        folder: str,
        device_id: str | None,
        relparts: tuple[str, ...],
    ) -> Stored:
        """Place a finished spool and index it, or answer the copy of its content already
        here. One upload of a given content at a time, from the look for a copy to the
        index: two copies arriving together (a folder holding one photo twice, pushed four
        files at a time) are kept once. Once begun, never cut short (a revoke cancels the
        device's uploads): a file placed is a file indexed."""
        lock = self._content_locks.setdefault(sha256, asyncio.Lock())
        # What the watcher sees in the target folder meanwhile (a delete by hand the moment
        # the file lands) is looked at once the file is indexed, not before.
        target = "/".join((folder, *relparts[:-1]))

        async def file_in() -> Stored:
            async with lock:
                with self._claiming(target):
                    found = await asyncio.to_thread(
                        self._place_unless_here, spool, sha256, folder, device_id, relparts
                    )
                    return await self._stored(found)

        task = asyncio.create_task(file_in(), name=f"file-in-{sha256[:8]}")
        self._filing.add(task)  # held: a task is only weakly referenced by the loop
        task.add_done_callback(self._filing.discard)
        return await asyncio.shield(task)

    def _place_unless_here(
        self,
        spool: Spool,
        sha256: str,
        folder: str,
        device_id: str | None,
        relparts: tuple[str, ...],
    ) -> FileRecord | NewFile:
        """Return the copy of a finished spool's content already in the library, or place
        the spool and describe it for the index. The spool is gone afterwards. Blocking."""
        placed = False
        try:
            for existing in self._store.files.by_sha256_here(sha256):
                if self._still_there(existing):
                    return existing
            root, parts = self.paths.root, (folder, *relparts)
            new = tree.move_in(root, spool.path, parts, folder, device_id, sha256, spool.head)
            placed = True
            return new
        finally:
            if not placed:  # refused, failed, or a duplicate: the spool is never kept
                spool.discard()

    async def _stored(self, found: FileRecord | NewFile) -> Stored:
        """Index a newly placed file (the watcher need not look at it); or say it was there."""
        if isinstance(found, FileRecord):
            return Stored(found, duplicate=True)
        record = await self._record(found)
        if self._watcher is not None:  # indexed: its appearance is no news
            self._watcher.expect(record.relpath)
        # Each route says what arrived in its own words, once per request; this is detail.
        log.debug("stored %s (%s, %s)", record.relpath, record.kind.value, human_size(record.size))
        return Stored(record, duplicate=False)

    async def _record(self, new: NewFile, *, file_id: int | None = None) -> FileRecord:
        """Index a described file (under its old id, for a restore) and announce it."""
        if file_id is not None:
            record = await self._store.files.add(new, self._clock.now(), file_id=file_id)
            indexed = Indexed.ADDED
        else:
            [(record, indexed)] = await self._store.files.index([new], self._clock.now())
        await self._announce(record, indexed, announce=True)
        return record

    def _still_there(self, record: FileRecord) -> bool:
        try:
            stat = (self.paths.root / record.relpath).lstat()
        except OSError:
            return False
        # Same size and time as indexed: not edited in place since (then it would not match).
        return (
            stat_is_file(stat.st_mode)
            and stat.st_size == record.size
            and stat.st_mtime_ns == record.mtime_ns
        )

    async def page_json(self, query: FileQuery) -> str:
        """Return one page of the gallery as JSON text, built off the event loop."""
        return await self._store.files.page_json(query)

    async def open(self, file_id: int) -> tuple[FileRecord, Path]:
        """Return a file's record and its path, checked to lie inside the library. Raises
        NotFound."""
        record = await self._store.files.get(file_id)
        if record is None:
            raise NotFound("There is no file with that id.")
        path = await asyncio.to_thread(self._checked_path, record)
        return record, path

    def _checked_path(self, record: FileRecord) -> Path:
        path = self.paths.root / record.relpath
        resolved = path.resolve()
        if not resolved.is_relative_to(self.paths.root.resolve()) or not resolved.is_file():
            raise NotFound("That file is no longer in the library.")
        return resolved

    async def zip_stream(self, file_ids: list[int]) -> AsyncGenerator[bytes, None]:
        """Yield a zip of the given files as it is written (no temp file); names stay unique."""
        entries: list[tuple[Path, str]] = []
        taken: set[str] = set()
        for file_id in dict.fromkeys(file_ids):
            record, path = await self.open(file_id)
            name, n = record.relpath, 0
            while name in taken:
                n += 1
                name = "/".join((*record.relpath.split("/")[:-1], numbered(record.name, n)))
            taken.add(name)
            entries.append((path, name))
        async for chunk in zipstream.stream(entries):
            yield chunk

    # -- delete, rename, restore -------------------------------------------------------

    async def delete(self, caller: Caller, file_id: int) -> TrashedFile:
        """Move a file to the trash (restorable for 30 days). Raises NotFound, NotOwner."""
        async with self._changing(file_id):
            return await self._delete(caller, file_id)

    async def _delete(self, caller: Caller, file_id: int) -> TrashedFile:
        record, path = await self.open(file_id)
        _may_change(caller, record.device_id)
        trash_name = f"{record.id}-{secrets.token_hex(4)}"
        by = caller.device.device_id if caller.device else PC_OWNER
        with self._claiming(record.relpath):
            await asyncio.to_thread(os.rename, path, self.paths.trash / trash_name)
            await self._store.files.trash(record, trash_name, self._clock.now(), by)
        await asyncio.to_thread(self._thumbs.forget, record)
        log.info("moved %s to the trash (%s)", record.relpath, by)
        self.hub.publish("file.removed", {"id": record.id})
        trashed = await self._store.files.trashed(record.id)
        if trashed is None:
            raise NotFound("The file vanished from the trash.")
        return trashed

    async def restore(self, caller: Caller, file_id: int) -> FileRecord:
        """Put a trashed file back where it was (beside it, if the name is taken)."""
        async with self._changing(file_id):
            return await self._restore(caller, file_id)

    async def _restore(self, caller: Caller, file_id: int) -> FileRecord:
        trashed = await self._store.files.trashed(file_id)
        if trashed is None:
            raise NotFound("There is no such file in the trash.")
        _may_change(caller, trashed.device_id)
        source = self.paths.trash / trashed.trash_name
        parts = tuple(trashed.relpath.split("/"))
        with self._claiming("/".join(parts[:-1])):  # the name is picked as it is placed
            new = await asyncio.to_thread(
                tree.move_in,
                self.paths.root,
                source,
                parts,
                trashed.folder,
                trashed.device_id,
                trashed.sha256,
            )
            await self._store.files.untrash(file_id)
            record = await self._record(new, file_id=file_id)
        log.info("restored %s from the trash", record.relpath)
        return record

    async def rename(self, caller: Caller, file_id: int, new_name: str) -> FileRecord:
        """Give a file a new name in its folder. Raises UnsafeName, NameTaken, NotOwner."""
        async with self._changing(file_id):
            return await self._rename(caller, file_id, new_name)

    async def _rename(self, caller: Caller, file_id: int, new_name: str) -> FileRecord:
        record, path = await self.open(file_id)
        _may_change(caller, record.device_id)
        name = safe_name(new_name)
        target = path.with_name(name)
        relpath = "/".join((*record.relpath.split("/")[:-1], name))
        with self._claiming(record.relpath, relpath):
            try:
                await asyncio.to_thread(tree.put, path, str(target))
            except FileExistsError:
                raise NameTaken(f"There is already a file named {name!r} there.") from None
            moved = await self._move(record.id, relpath, record.folder, record.device_id)
        if moved is None:
            raise NotFound("The file left the library while it was renamed.")
        log.info("renamed %s to %s", record.relpath, name)
        self.hub.publish("file.moved", {"id": record.id, "item": item_json(moved)})
        return moved

    @contextlib.asynccontextmanager
    async def _changing(self, file_id: int) -> AsyncIterator[None]:
        """Let one delete, restore or rename of a file run at a time."""
        async with self._file_locks.setdefault(file_id, asyncio.Lock()):
            yield

    @contextlib.contextmanager
    def _claiming(self, *relpaths: str) -> Iterator[None]:
        """Keep the watcher off these paths (files, or folders) while lanpair changes them.

        What the watcher saw there meanwhile is looked at again afterwards.
        """
        for relpath in relpaths:
            self._claims[relpath] = self._claims.get(relpath, 0) + 1
        try:
            yield
        finally:
            for relpath in relpaths:
                self._claims[relpath] -= 1
                if not self._claims[relpath]:
                    del self._claims[relpath]
            free = [p for p in self._deferred if not self._claimed(p)]
            if free:
                self._deferred.difference_update(free)
                self._run_task(self._sync_paths(free), "watch-deferred")

    def _claimed(self, relpath: str) -> bool:
        parts = relpath.split("/")
        return any("/".join(parts[:n]) in self._claims for n in range(1, len(parts) + 1))

    async def trash(self, caller: Caller) -> list[TrashedFile]:
        """Return the trash a caller may see: a device its own files, the owner all."""
        return await self._store.files.trash_list(
            caller.device.device_id if caller.device else None
        )

    async def purge_trash(self) -> int:
        """Delete trashed files older than 30 days; return how many."""
        cutoff = self._clock.now() - TRASH_KEPT
        old = [t for t in await self._store.files.trash_list() if t.deleted_at < cutoff]
        for trashed in old:
            await asyncio.to_thread((self.paths.trash / trashed.trash_name).unlink, missing_ok=True)
            await self._store.files.untrash(trashed.file_id)
        if old:
            log.info("purged %d file(s) from the trash (older than 30 days)", len(old))
        return len(old)

    async def scan(self, folder: str = "", *, announce: bool = False) -> ScanReport:
        """Bring the index in line with the disk (all of it, or one folder's tree): add new
        files, update changed ones, drop vanished ones; with ``announce``, say so."""
        started = time.monotonic()
        # One after the other: at the same time, the walk's GIL hand-offs around each
        # stat() with the index read's thread made both twice as slow (1.9 s, not 1.1 s).
        indexed = await self._store.files.stats(folder)
        diff = await asyncio.to_thread(tree.walk, self.paths.root, folder, indexed)
        added, removed = await self._reconcile(diff, announce=announce)
        took = timedelta(seconds=time.monotonic() - started)
        report = ScanReport(diff.files, added, removed, took)
        if folder == "":  # the walk looked at the whole root
            self._tell_loose(self._loose | set(diff.loose), diff.loose)
        self._tell_odd(diff.odd)
        if folder == "" or report.added or report.removed:
            log.info(
                "library scan%s: %d files, %d new or changed, %d gone (%.1fs)",
                f" of {folder}" if folder else "",
                report.files,
                report.added,
                report.removed,
                report.took.total_seconds(),
            )
        return report

    # -- what the watcher saw ----------------------------------------------------------

    async def apply(self, changes: list[Change]) -> None:
        """Bring the index in line with what the watcher saw; announce each difference once.

        Whatever route brought a file (lanpair's own upload, or a copy by hand), the first
        to index it announces it; for the second, the index already agrees: nothing to say.
        """
        await self._scanned.wait()
        files: list[str] = []
        for change in changes:
            paths = [p for p in (change.relpath, change.dest) if p is not None]
            if unshown := [p for p in paths if not tree.shows(p)]:  # hidden, or not text
                self._tell_odd([p for p in unshown if not tree.is_text(p)])
                for path in set(paths) - set(unshown):  # it came or went under the other name
                    if change.folder:
                        await self.scan(path, announce=True)
                    else:
                        files.append(path)
            elif change.folder and change.dest is not None:
                await self._follow_folder_move(change.relpath, change.dest)
            elif change.folder:
                await self.scan(change.relpath, announce=True)
            elif change.dest is not None:
                await self._follow_move(change.relpath, change.dest)
            else:
                files.append(change.relpath)
        if files:
            await self._sync_paths(files)

    async def _sync_paths(self, relpaths: list[str]) -> None:
        """Index, update or drop each of these files as the disk now has it."""
        relpaths = list(dict.fromkeys(relpaths))
        if self._claims:  # lanpair is changing some: look at them when it is done
            mine = {p for p in relpaths if self._claimed(p)}
            self._deferred.update(mine)
            relpaths = [p for p in relpaths if p not in mine]
        on_disk, indexed = await asyncio.gather(
            asyncio.to_thread(tree.stat_many, self.paths.root, relpaths),
            self._store.files.stats_of(relpaths),
        )
        if in_root := [relpath for relpath in relpaths if "/" not in relpath]:
            found = await asyncio.to_thread(tree.loose_files, self.paths.root, in_root)
            self._tell_loose(set(in_root), found)
        diff = tree.Diff.of(indexed, on_disk)
        added, removed = await self._reconcile(diff, announce=True)
        if added or removed:  # one line per batch of the watcher's, however big
            names = [*diff.changed, *(stat.relpath for stat in diff.gone)]
            log.info(
                "noticed on disk: %d new or changed, %d gone (%s)", added, removed, _few(names)
            )

    def _tell_loose(self, looked_at: set[str], found: list[str]) -> None:
        """Say where files put directly in the library folder should go (no gallery shows
        them): once for each, not at every rescan or edit."""
        self._loose -= looked_at - set(found)
        fresh = [name for name in found if name not in self._loose]
        self._loose.update(fresh)
        if fresh:
            log.warning(
                "not in the gallery: %s, directly in the library folder; galleries show the "
                "files in its folders (this PC's own is %s/)",
                _few(fresh),
                self.pc_folder,
            )

    def _tell_odd(self, relpaths: list[str]) -> None:
        """Say, once for each, which names no gallery can show (not UTF-8: the index and
        JSON hold text), and what to do."""
        odd = dict.fromkeys(tree.odd_part(relpath) for relpath in relpaths)
        fresh = [relpath for relpath in odd if relpath not in self._odd]
        self._odd.update(fresh)
        if fresh:
            log.warning(
                "not in the gallery: %s: the name is not UTF-8 text; rename it to show it",
                _few([tree.shown(relpath) for relpath in fresh]),
            )

    async def _reconcile(self, diff: tree.Diff, *, announce: bool) -> tuple[int, int]:
        """Make the index say what the disk has for these paths; return how many files were
        new or changed, and how many gone.

        Paths lanpair is changing right now are set aside and looked at again afterwards. A
        half-written file stays as indexed: tree.describe_many leaves it for its writer's close.
        """
        changed, gone = diff.changed, diff.gone
        if self._claims:
            mine = {p for p in changed if self._claimed(p)}
            mine |= {stat.relpath for stat in gone if self._claimed(stat.relpath)}
            self._deferred.update(mine)
            changed = [p for p in changed if p not in mine]
            gone = [stat for stat in gone if stat.relpath not in mine]
        if gone:  # the disk and the index were not read at the same instant: look again
            there = await asyncio.to_thread(
                tree.stat_many, self.paths.root, [stat.relpath for stat in gone]
            )
            gone = [stat for stat in gone if stat.relpath not in there]
        removed = await self._unindex(gone, announce=announce)
        folders = await self._device_folders() if changed else {}
        for start in range(0, len(changed), SCAN_BATCH):
            batch = changed[start : start + SCAN_BATCH]
            described = await asyncio.to_thread(tree.describe_many, self.paths.root, batch, folders)
            for record, outcome in await self._store.files.index(described, self._clock.now()):
                await self._announce(record, outcome, announce=announce)
        return len(changed), removed

    async def _follow_move(self, source: str, dest: str) -> None:
        """Carry a file moved by hand over to its new path, keeping its id."""
        if self._claimed(source) or self._claimed(dest):
            await self._sync_paths([source, dest])  # defers them until lanpair is done
            return
        on_disk, indexed = await asyncio.gather(
            asyncio.to_thread(tree.stat_many, self.paths.root, [dest]),
            self._store.files.stats_of([source, dest]),
        )
        old = indexed.get(source)
        if old is None or on_disk.get(dest) != (old.size, old.mtime_ns):
            await self._sync_paths([source, dest])  # not the file lanpair knew: look afresh
            return
        if dest in indexed:  # the move replaced a file
            await self._unindex([indexed[dest]], announce=True)
        folder = dest.split("/", 1)[0]
        device_id = (await self._device_folders()).get(folder)
        moved = await self._move(old.id, dest, folder, device_id)
        if moved is not None:
            log.info("%s was moved to %s", source, dest)
            self.hub.publish("file.moved", {"id": moved.id, "item": item_json(moved)})

    async def _follow_folder_move(self, source: str, dest: str) -> None:
        """Carry a folder renamed by hand over to its new name, each file keeping its id."""
        before = await self._store.files.stats(source)
        renamed = {dest + relpath[len(source) :]: stat for relpath, stat in before.items()}
        on_disk = await asyncio.to_thread(tree.stat_many, self.paths.root, list(renamed))
        folder = dest.split("/", 1)[0]
        device_id = (await self._device_folders()).get(folder)
        moved = 0
        for relpath, stat in renamed.items():
            if on_disk.get(relpath) != (stat.size, stat.mtime_ns):
                continue  # not the same file: the scans below sort it out
            record = await self._move(stat.id, relpath, folder, device_id)
            if record is not None:
                moved += 1
                self.hub.publish("file.moved", {"id": record.id, "item": item_json(record)})
                await asyncio.sleep(0)  # a big folder: let subscribers keep up
        log.info("folder %s was renamed to %s (%d files)", source, dest, moved)
        await self.scan(source, announce=True)
        await self.scan(dest, announce=True)

    async def _move(
        self, file_id: int, relpath: str, folder: str, device_id: str | None
    ) -> FileRecord | None:
        """Index a file at its new path. A row the index still had there (its file was
        deleted by hand, and the watcher has not said so yet) goes, and is announced."""
        moved, displaced = await self._store.files.move(file_id, relpath, folder, device_id)
        for gone in displaced:
            await asyncio.to_thread(self._thumbs.forget_id, gone)
            self.hub.publish("file.removed", {"id": gone})
        return moved

    async def _unindex(self, stats: list[FileStat], *, announce: bool) -> int:
        """Drop vanished files from the index (and their thumbnails); return how many."""
        if not stats:
            return 0
        removed = await self._store.files.remove_unchanged(stats)
        for file_id in removed:
            await asyncio.to_thread(self._thumbs.forget_id, file_id)
            if announce:
                self.hub.publish("file.removed", {"id": file_id})
        return len(removed)

    async def _device_folders(self) -> dict[str, str]:
        # newest first: the newest pairing owns a folder
        devices = await self._store.pairings.devices()
        return {d.folder: d.device_id for d in reversed(devices) if d.folder}


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What a rescan found."""

    files: int
    added: int
    removed: int
    took: timedelta


def item_json(record: FileRecord) -> dict[str, Any]:
    """Return a file as every part of lanpair shows it (DESIGN.md's gallery item)."""
    return _item(
        {
            "id": record.id,
            "name": record.name,
            "kind": record.kind.value,
            "mime": record.mime,
            "thumb": record.thumb.value,
            "size": record.size,
            "taken_at": to_iso(record.taken_at),
            "width": record.width,
            "height": record.height,
            "duration_s": record.duration_s,
            "device_id": record.device_id,
            "folder": record.folder,
        }
    )


def _item(row: Mapping[str, Any]) -> dict[str, Any]:
    """Shape a gallery item from an index row (or a record's values under its column names)."""
    file_id = row["id"]
    return {
        "id": file_id,
        "name": row["name"],
        "type": row["kind"],
        "mime": row["mime"],
        "path": f"/files/{file_id}",
        "thumb": None if row["thumb"] == ThumbState.NONE.value else f"/thumbs/{file_id}",
        "size": row["size"],
        "taken_at": row["taken_at"],
        "width": row["width"],
        "height": row["height"],
        "duration": row["duration_s"],
        "device": row["device_id"] or PC_OWNER,
        "folder": row["folder"],
    }


def _may_change(caller: Caller, owner_device_id: str | None) -> None:
    """A device may change its own files; the owner (this PC) any file."""
    if caller.owner:
        return
    if caller.device is None or caller.device.device_id != owner_device_id:
        raise NotOwner("A device may change only the files it sent.")


def _device_folder(device_name: str, device_id: str, taken: set[str]) -> str:
    base = folder_name(f"{device_name} ({device_id.removeprefix('dev_')[:4]})")
    name, n = base, 0
    while name in taken:
        n += 1
        name = numbered(base, n)
    return name


def _few(names: list[str]) -> str:
    """Name the first three for a log line, and count the rest."""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more
