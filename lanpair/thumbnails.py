"""Thumbnails: drawn once per picture or video, by a job runner (the worker pool), into the
thumbnail cache under the data folder, never in the library tree."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lanpair import media, tree
from lanpair.errors import WorkerPoolStopped
from lanpair.models import FileRecord, Kind, ThumbState
from lanpair.store import Store

log = logging.getLogger(__name__)

Job = Callable[..., Awaitable[Any]]
THUMB_PX = 400


class Thumbnails:
    """Draw each picture's thumbnail once, in the worker pool, into the thumbnail cache."""

    def __init__(self, store: Store, root: Path, thumbs_dir: Path, run_job: Job) -> None:
        self._store = store
        self._root = root
        self.dir = thumbs_dir
        self._run = run_job
        # One draw per version of a file (id, size, mtime): an edit's draw never joins the
        # draw of the picture it replaced.
        self._drawing: dict[tuple[int, int, int], asyncio.Future[Path | None]] = {}

    def forget(self, record: FileRecord) -> None:
        """Delete a file's cached thumbnail. Blocking."""
        self.forget_id(record.id)

    def forget_id(self, file_id: int) -> None:
        """Delete the cached thumbnail of a file id. Blocking."""
        self._path(file_id).unlink(missing_ok=True)

    def path_for(self, record: FileRecord) -> Path:
        """Return where a file's thumbnail is cached."""
        return self._path(record.id)

    def _path(self, file_id: int) -> Path:
        return self.dir / f"{file_id % 256:02x}" / f"{file_id}.webp"

    async def ensure(self, record: FileRecord) -> Path | None:
        """Return the thumbnail's path, drawing it first if needed; None if there is none."""
        if record.thumb is ThumbState.NONE or record.thumb is ThumbState.FAILED:
            return None
        path = self.path_for(record)
        if await asyncio.to_thread(path.is_file):  # ids are never reused: a file is this one's
            return path
        key = (record.id, record.size, record.mtime_ns)
        if key not in self._drawing:
            self._drawing[key] = asyncio.ensure_future(self._draw(record, path))
            self._drawing[key].add_done_callback(lambda _f: self._drawing.pop(key))
        return await asyncio.shield(self._drawing[key])

    async def _draw(self, record: FileRecord, path: Path) -> Path | None:
        source = self._root / record.relpath
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        there = await self._stat(record)
        if there is None:  # gone, or swapped for a symlink since it was indexed
            log.info("no thumbnail for %s: it is no longer a file of the library", record.relpath)
            return None
        if there != (record.size, record.mtime_ns):
            return None  # edited since this record: the edit's own draw follows
        try:
            draw = media.video_poster if record.kind is Kind.VIDEO else media.make_thumbnail
            drawn = await self._run(functools.partial(draw, px=THUMB_PX), source, path)
        except WorkerPoolStopped:  # the daemon is stopping: drawn at the next start
            return None
        except Exception as exc:  # a hostile file must cost one log line, nothing more
            log.warning("no thumbnail for %s: %s", record.relpath, exc)
            drawn = None
        if await self._stat(record) != (record.size, record.mtime_ns):
            # Edited while it was drawn: this picture is of the old file. Dropped; the edit's
            # own draw (or the next request) draws the new one.
            await asyncio.to_thread(path.unlink, missing_ok=True)
            return None
        state = ThumbState.READY if drawn else ThumbState.FAILED
        await self._store.files.set_thumb(record.id, state)
        if record.kind is Kind.VIDEO and record.duration_s is None:
            with contextlib.suppress(Exception):  # unknown length is fine; no ffprobe, too
                duration = await self._run(media.video_duration, source)
                if duration is not None:
                    await self._store.files.set_duration(record.id, duration)
        return path if drawn else None

    async def _stat(self, record: FileRecord) -> tuple[int, int] | None:
        """Return the size and mtime of a record's file as the disk has it now, or None if
        it is no longer a file of the library."""
        there = await asyncio.to_thread(tree.stat_many, self._root, [record.relpath])
        return there.get(record.relpath)


async def in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a job in a thread: the runner when no worker pool is given (tests, tools)."""
    return await asyncio.to_thread(func, *args, **kwargs)
