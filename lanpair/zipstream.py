"""Stream a zip of library files as it is written: no temp file, back-pressured, abortable.

A dedicated thread pool writes the (stored, uncompressed) zip into an asyncio queue; the
event loop yields the queue's chunks to the HTTP response. A client that stops reading
stops the writer within a tick. A file that cannot be read on the way (gone, or turned
into a folder, since the request) cuts the zip short with ZipCutShort: the response must
then end broken, never as a well-formed archive that silently lacks files.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import zipfile
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ZIP_TICK_S = 0.5
BLOCK_BYTES = 1 << 20
QUEUED_CHUNKS = 8
_ZIPPERS = ThreadPoolExecutor(4, thread_name_prefix="lanpair-zip")  # zips never starve others


class ZipCutShort(Exception):
    """A file could not be read into the zip: what was sent is not a whole archive."""


async def stream(entries: list[tuple[Path, str]]) -> AsyncGenerator[bytes, None]:
    """Yield a zip of ``(path, name in the zip)`` entries, chunk by chunk.

    Raises ZipCutShort if a file cannot be read on the way.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUED_CHUNKS)
    stop = threading.Event()
    writer = loop.run_in_executor(_ZIPPERS, _write_zip, entries, queue, loop, stop)
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        if not await writer:
            raise ZipCutShort()
    finally:
        stop.set()  # a client that went away: the writer thread notices within a tick
        with contextlib.suppress(Exception):
            await writer


class _ZipAborted(Exception):
    """The client stopped reading the zip."""


class _QueueWriter(io.RawIOBase):
    """A write-only stream handing each write to the event loop's queue (back-pressured)."""

    def __init__(
        self,
        queue: asyncio.Queue[bytes | None],
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
    ) -> None:
        self._queue = queue
        self._loop = loop
        self._stop = stop
        self._written = 0
        self.cut = False  # the zip failed: whatever is still buffered goes nowhere

    def writable(self) -> bool:
        """Say this stream takes writes."""
        return True

    def write(self, data: Any) -> int:
        """Queue a copy of ``data``; wait while the queue is full."""
        if self.cut:
            return len(data)
        chunk = bytes(data)
        hand_over(self._queue, chunk, self._loop, self._stop)
        self._written += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        """Return how many bytes were written (zipfile asks, for its offsets)."""
        return self._written


def hand_over(
    queue: asyncio.Queue[bytes | None],
    item: bytes | None,
    loop: asyncio.AbstractEventLoop,
    stop: threading.Event,
) -> None:
    """Put ``item`` on the loop's queue from a thread; give up once ``stop`` is set. Blocking."""
    while not stop.is_set():
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        try:
            future.result(timeout=ZIP_TICK_S)
            return
        except TimeoutError:
            if not future.cancel():  # it went through after all
                return
    raise _ZipAborted()


def _write_zip(
    entries: list[tuple[Path, str]],
    queue: asyncio.Queue[bytes | None],
    loop: asyncio.AbstractEventLoop,
    stop: threading.Event,
) -> bool:
    """Write a stored (uncompressed) zip of ``entries`` into ``queue``, then None; return
    whether it is whole (False: a file could not be read). Blocking.

    Not ``with ZipFile``: leaving it on an error would write the archive's end, making
    what was sent look whole.
    """
    sink = _QueueWriter(queue, loop, stop)
    out = io.BufferedWriter(sink, buffer_size=BLOCK_BYTES)
    name, whole = "", False
    try:
        archive = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED)
        for path, name in entries:
            # A date outside the zip format's 1980-2107 (a file from 1970, or a bad clock)
            # is clamped, not refused.
            info = zipfile.ZipInfo.from_file(path, name, strict_timestamps=False)
            with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as dest:
                while block := source.read(BLOCK_BYTES):
                    dest.write(block)
        archive.close()
        out.flush()
        whole = True
    except _ZipAborted:
        pass  # nobody is reading
    except OSError as exc:
        log.warning("zip download cut short: cannot read %s (%s)", name, exc.strerror or exc)
    finally:
        sink.cut = not whole  # the archive, closed when collected, writes its end to nowhere
        with contextlib.suppress(_ZipAborted):
            hand_over(queue, None, loop, stop)
    return whole
