"""The library watcher: notice files that appear, change, move or go, by whatever route.

A watchdog observer watches the library tree. Its thread does nothing but hand each event
to the event loop; there a debouncer waits until a file is whole — closed after writing,
or moved or linked in complete — and then hands the library one batch of changes at a
time. On filesystems where inotify sees nothing (NFS, SMB, sshfs), and after the kernel
dropped events, the library is rescanned instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from lanpair.tasks import spawn

log = logging.getLogger(__name__)

SETTLE_S = 0.01  # a file closed or moved in: wait this long for more news about it
WRITE_IDLE_S = 60.0  # a writer that neither writes nor closes for this long: take the file
RESCAN_EVERY_S = 30.0  # where file events never arrive
MAX_RETRY_PAUSE_S = 60.0  # between rescans while indexing keeps failing
# Where the kernel tells a watcher nothing about changes made by other machines.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre"}
    | {"fuse.sshfs", "fuse.rclone", "fuse.davfs", "davfs", "fuse.s3fs", "fuse.gcsfuse"}
)
_EVENT_TYPES = [
    FileCreatedEvent,
    FileOpenedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileAttribEvent,  # times set alone (touch -d, a date fixer): the index keeps the mtime
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    EventsLostEvent,  # the kernel's queue overflowed (watchdog sends it after re-watching)
]


class WatchMode(enum.StrEnum):
    """How the library notices files added by hand."""

    AUTO = "auto"  # file events, or rescans on network filesystems
    EVENTS = "events"
    RESCAN = "rescan"


@dataclass(frozen=True, slots=True)
class Change:
    """Something to look at again: a file, a move, a folder, or the whole library."""

    relpath: str  # "" with ``folder`` set: the whole library
    dest: str | None = None  # moved from ``relpath`` to ``dest`` (a file, or a whole folder)
    folder: bool = False


Sink = Callable[[list[Change]], Awaitable[None]]


class _Writing(enum.Enum):
    CREATED = "created"  # new, and nobody opened it (yet): a link or a move in
    OPEN = "open"  # being written: wait for the close


class Watcher:
    """Watch a library root and feed the changes to ``sink``, one batch at a time."""

    def __init__(
        self,
        root: Path,
        sink: Sink,
        *,
        mode: WatchMode = WatchMode.AUTO,
        ignore: frozenset[str] = frozenset(),
        settle_s: float = SETTLE_S,
        write_idle_s: float = WRITE_IDLE_S,
        rescan_every_s: float = RESCAN_EVERY_S,
    ) -> None:
        self.root = root
        self._root_prefix = str(root).rstrip(os.sep) + os.sep  # watchdog's paths all start so
        self._sink = sink
        self._mode = mode
        self._ignore = ignore  # top-level names that are lanpair's own (staging, trash)
        self._settle_s = settle_s
        self._write_idle_s = write_idle_s
        self._rescan_every_s = rescan_every_s
        self._writing: dict[str, _Writing] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ready: dict[Change, None] = {}  # ordered, and a change twice is once
        self._expected: set[str] = set()  # linked in by lanpair itself, and indexed
        self._wake = asyncio.Event()
        self._observer: BaseObserver | None = None
        self._forwarder: _Forwarder | None = None
        self._folder_watches: dict[str, ObservedWatch] = {}  # top-level folder -> its watch
        self._folder_changes: asyncio.Queue[tuple[str | None, str | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.polling = False

    async def __aenter__(self) -> Self:
        """Start watching (adding the watches walks the tree, so off the loop)."""
        loop = asyncio.get_running_loop()
        self.polling = self._mode is WatchMode.RESCAN
        if self._mode is WatchMode.AUTO:
            fs_type = await asyncio.to_thread(filesystem_type, self.root)
            if fs_type in NETWORK_FILESYSTEMS:
                log.info(
                    "the library is on %s, where file events from other machines never "
                    "arrive: rescanning it every %.0fs instead",
                    fs_type,
                    self._rescan_every_s,
                )
                self.polling = True
        if self.polling:
            self._tasks.append(spawn(self._rescan_periodically(), "library-rescan"))
        else:
            observer = Observer()
            self._forwarder = _Forwarder(loop, self._seen)
            # The root alone, for its folders; each folder with all inside it. lanpair's own
            # folder (uploads being written: most events, during an upload) is never watched.
            observer.schedule(self._forwarder, str(self.root), event_filter=_EVENT_TYPES)
            folders = await asyncio.to_thread(self._top_folders)
            for name in folders:
                watch = await asyncio.to_thread(self._watch_folder, observer, name)
                if watch is not None:
                    self._folder_watches[name] = watch
            await asyncio.to_thread(observer.start)
            self._observer = observer
            log.info("watching %s (%d folders) for files added by hand", self.root, len(folders))
            self._tasks.append(spawn(self._follow_folders(), "watch-folders"))
        self._tasks.append(spawn(self._deliver(), "library-watch"))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the observer and the delivery of changes."""
        if self._observer is not None:
            await asyncio.to_thread(self._observer.stop)  # joins the emitters: not on the loop
            await asyncio.to_thread(self._observer.join)
            self._observer = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def expect(self, relpath: str) -> None:
        """Take a whole file that lanpair itself linked in at ``relpath``, and has indexed,
        as no news (loop thread).

        Only its creation is dropped: whatever is done to the file afterwards (opened for
        writing, moved, deleted) is looked at as ever. Its event may come before this call
        or after it.
        """
        if self._writing.get(relpath) is _Writing.CREATED:  # seen, and nobody opened it
            self._forget(relpath)
        elif relpath.split("/", 1)[0] in self._folder_watches:  # else no event will come
            self._expected.add(relpath)

    # -- on the loop: debounce --------------------------------------------------------

    def _seen(self, event: FileSystemEvent) -> None:
        """Take one watchdog event (loop thread)."""
        if isinstance(event, EventsLostEvent):
            self._overflowed()
            return
        src = self._relpath(event.src_path)
        dest = self._relpath(event.dest_path) if event.dest_path else None
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            self._moved(src, dest, folder=isinstance(event, DirMovedEvent))
        elif src is None:
            return
        elif isinstance(event, DirCreatedEvent):
            if "/" not in src:  # a new folder of the library: watch it, then look inside
                self._follow_folder(None, src)
            # deeper: its files each get their own event
        elif isinstance(event, DirDeletedEvent):
            if "/" not in src:
                self._follow_folder(src, None)
            self._forget(src)
            self._queue(Change(src, folder=True))
        elif isinstance(event, FileDeletedEvent):
            self._forget(src)
            self._queue(Change(src))
        elif isinstance(event, FileCreatedEvent):
            if src in self._expected:
                self._expected.discard(src)
                return
            self._writing[src] = _Writing.CREATED
            self._later(src, self._settle_s)
        elif isinstance(event, FileOpenedEvent):
            if self._writing.get(src) is _Writing.CREATED:  # created by open(): a writer
                self._writing[src] = _Writing.OPEN
                self._later(src, self._write_idle_s)
        elif isinstance(event, FileModifiedEvent):
            self._writing[src] = _Writing.OPEN
            self._later(src, self._write_idle_s)
        elif isinstance(event, FileClosedEvent):
            self._writing.pop(src, None)
            self._later(src, self._settle_s)
        elif isinstance(event, FileAttribEvent) and src not in self._writing:
            self._later(src, self._settle_s)  # times set; a writer's close is news enough

    def _moved(self, src: str | None, dest: str | None, *, folder: bool) -> None:
        if folder:
            top_level = all(p is None or "/" not in p for p in (src, dest))
            if top_level:
                self._follow_folder(src, dest)
            elif src is not None and dest is not None:
                return  # inside one watched folder: each file gets its own move event
            gone_or_new = src if dest is None else dest
            if src is not None and dest is not None:
                self._queue(Change(src, dest=dest, folder=True))
            elif gone_or_new is not None:
                self._forget(gone_or_new)
                self._queue(Change(gone_or_new, folder=True))
            return
        if src is not None:
            self._forget(src)
        if dest is None:  # moved into lanpair's own folders (the trash): gone
            if src is not None:
                self._queue(Change(src))
        elif src is None:  # from lanpair's staging or from outside: a new, whole file
            self._forget(dest)
            self._later(dest, self._settle_s)
        else:
            self._forget(dest)
            self._queue(Change(src, dest=dest))

    def _follow_folder(self, gone: str | None, new: str | None) -> None:
        """Stop watching a top-level folder that went; start on one that came (loop)."""
        self._folder_changes.put_nowait((gone, new))

    async def _follow_folders(self) -> None:
        """Apply top-level folders' comings and goings to the observer, one at a time, in a
        thread: adding watches walks the folder, and watchdog's lock is held meanwhile."""
        while True:
            gone, new = await self._folder_changes.get()
            observer = self._observer
            if observer is None:
                continue
            if gone is not None:
                self._expected = {p for p in self._expected if not p.startswith(f"{gone}/")}
                watch = self._folder_watches.pop(gone, None)
                if watch is not None:
                    with contextlib.suppress(KeyError):
                        await asyncio.to_thread(observer.unschedule, watch)
            if new is not None and new not in self._folder_watches:
                watch = await asyncio.to_thread(self._watch_folder, observer, new)
                if watch is not None:
                    self._folder_watches[new] = watch
                # What landed in it before the watch existed: the folder's scan finds it.
                self._queue(Change(new, folder=True))

    def _top_folders(self) -> list[str]:
        """Return the library's top-level folders (not lanpair's, not symlinks). Blocking."""
        with os.scandir(self.root) as entries:
            return [
                e.name
                for e in entries
                if e.is_dir(follow_symlinks=False) and e.name not in self._ignore
            ]

    def _watch_folder(self, observer: BaseObserver, name: str) -> ObservedWatch | None:
        """Watch a top-level folder and everything inside it. Blocking."""
        path = self.root / name
        if self._forwarder is None or name in self._ignore or path.is_symlink():
            return None
        try:
            return observer.schedule(
                self._forwarder, str(path), recursive=True, event_filter=_EVENT_TYPES
            )
        except OSError as exc:  # gone again, or out of inotify watches
            log.warning("cannot watch %s: %s", path, exc.strerror)
            return None

    def _later(self, relpath: str, delay_s: float) -> None:
        """(Re)start the quiet period after which ``relpath`` is looked at."""
        timer = self._timers.pop(relpath, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[relpath] = loop.call_later(delay_s, self._settled, relpath)

    def _settled(self, relpath: str) -> None:
        del self._timers[relpath]
        self._writing.pop(relpath, None)
        self._queue(Change(relpath))

    def _forget(self, relpath: str) -> None:
        self._expected.discard(relpath)
        self._writing.pop(relpath, None)
        timer = self._timers.pop(relpath, None)
        if timer is not None:
            timer.cancel()

    def _queue(self, change: Change) -> None:
        self._ready[change] = None
        self._wake.set()

    def _overflowed(self) -> None:
        log.warning("the kernel dropped file events: rescanning the library")
        self._expected.clear()
        self._queue(Change("", folder=True))

    def _relpath(self, path: str | bytes) -> str | None:
        """Return a path relative to the root, or None for lanpair's own or outside paths."""
        text = os.fsdecode(path)
        if not text.startswith(self._root_prefix):
            return None
        relpath = text[len(self._root_prefix) :]
        first = relpath.split(os.sep, 1)[0]
        if first in self._ignore:
            return None
        return relpath.replace(os.sep, "/")

    # -- delivery ---------------------------------------------------------------------

    async def _deliver(self) -> None:
        """Hand ready changes to the sink in order, one batch at a time."""
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = list(self._ready)
            self._ready.clear()
            try:
                await self._sink(batch)
                failures = 0
            except Exception:
                failures += 1
                pause_s = min(MAX_RETRY_PAUSE_S, 2.0**failures)
                if failures == 1:
                    log.exception("indexing %d change(s) failed; rescanning", len(batch))
                else:  # a lasting failure (disk, database): one line per try, not a storm
                    log.warning(
                        "indexing failed again (%d); next rescan in %.0fs", failures, pause_s
                    )
                self._queue(Change("", folder=True))
                await asyncio.sleep(pause_s)

    async def _rescan_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._rescan_every_s)
            self._queue(Change("", folder=True))


class _Forwarder(FileSystemEventHandler):
    """On the observer's thread: pass each event to the loop, nothing else."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, seen: Callable[[FileSystemEvent], None]
    ) -> None:
        self._loop = loop
        self._seen = seen

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Forward ``event`` to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop closed while we stop
            self._loop.call_soon_threadsafe(self._seen, event)


def filesystem_type(path: Path) -> str | None:
    """Return the type of the filesystem ``path`` is on ("ext4", "nfs4"…), if known. Blocking."""
    try:
        target = os.path.realpath(path)
        with Path("/proc/self/mountinfo").open(encoding="utf-8") as mounts:
            best, best_type = "", None
            for line in mounts:
                fields = line.split()
                mount_point = _unescape(fields[4])
                fs_type = fields[fields.index("-") + 1]
                inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, best_type = mount_point, fs_type
            return best_type
    except (OSError, ValueError, IndexError):
        return None


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (a space is \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
