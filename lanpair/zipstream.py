"""Stream a zip of library files as it is written: no temp file, back-pressured, abortable.

A dedicated thread pool writes the (stored, uncompressed) zip into an asyncio queue; the
event loop yields the queue's chunks to the HTTP response. A client that stops reading
stops the writer within a tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import zipfile
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ZIP_TICK_S = 0.5
BLOCK_BYTES = 1 << 20
QUEUED_CHUNKS = 8
_ZIPPERS = ThreadPoolExecutor(4, thread_name_prefix="lanpair-zip")  # zips never starve others


async def stream(entries: list[tuple[Path, str]]) -> AsyncGenerator[bytes, None]:
    """Yield a zip of ``(path, name in the zip)`` entries, chunk by chunk."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUED_CHUNKS)
    stop = threading.Event()
    writer = loop.run_in_executor(_ZIPPERS, _write_zip, entries, queue, loop, stop)
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
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

    def writable(self) -> bool:
        """Say this stream takes writes."""
        return True

    def write(self, data: Any) -> int:
        """Queue a copy of ``data``; wait while the queue is full."""
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
) -> None:
    """Write a stored (uncompressed) zip of ``entries`` into ``queue``. Blocking."""
    out = io.BufferedWriter(_QueueWriter(queue, loop, stop), buffer_size=BLOCK_BYTES)
    try:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for path, name in entries:
                info = zipfile.ZipInfo.from_file(path, name)
                with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as dest:
                    while block := source.read(BLOCK_BYTES):
                        dest.write(block)
        out.flush()
    except _ZipAborted:
        return
    finally:
        with contextlib.suppress(_ZipAborted):
            hand_over(queue, None, loop, stop)
