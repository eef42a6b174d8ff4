"""Where an upload's bytes go first: a temp file, hashed while it streams, durable on demand.

A ``Spool`` is written by a worker thread (``pump`` hands it the network's chunks as a
list, one 1 MiB write in flight while the loop reads on), so the event loop never waits
on the disk. The library links a finished spool into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path

from lanpair.errors import BodyTooLarge, InsufficientStorage

WRITE_BLOCK_BYTES = 1 << 20  # gather network chunks into 1 MiB disk writes
WRITEBACK_BYTES = 32 << 20  # start writing to disk behind the stream every this much
HEAD_BYTES = 64
MAX_IOVECS = 512  # below IOV_MAX (1024 on Linux)
FILE_MODE = 0o644  # what a file the user saves usually gets


class Spool:
    """A file an upload streams into: new in staging, or a resumable upload's partial.

    Every method is blocking.
    """

    def __init__(
        self,
        path: Path,
        reserve_bytes: int,
        max_bytes: int,
        *,
        resume: bool,
        fd: int | None = None,
    ) -> None:
        self.path = path
        self._reserve = reserve_bytes
        self._max = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        if resume:
            self._rehash()
        self._written_back = self.size
        self._file = path.open("ab", buffering=0) if fd is None else os.fdopen(fd, "ab", 0)

    @classmethod
    def create(cls, staging: Path, reserve_bytes: int, max_bytes: int) -> Spool:
        """Open a new temp file in ``staging`` (a fresh random name, created exclusively)."""
        path = staging / f"upload-{secrets.token_hex(8)}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # whatever the umask: what a saved file usually gets
        return cls(path, reserve_bytes, max_bytes, resume=False, fd=fd)

    def write_all(self, pieces: list[bytes]) -> None:
        """Append and hash the pieces; stop if the disk fills or the file grows too big."""
        incoming = sum(map(len, pieces))
        if self._max and self.size + incoming > self._max:
            raise BodyTooLarge(f"This PC takes files of at most {human_size(self._max)}.")
        if len(pieces) > MAX_IOVECS:
            pieces = [b"".join(pieces)]
        fd = self._file.fileno()
        try:
            written = os.writev(fd, pieces)
            if written < incoming:  # a short write: rare, so the slow way is fine
                rest = memoryview(b"".join(pieces))[written:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
        except OSError as exc:
            os.ftruncate(fd, self.size)  # keep the file and its count of bytes in step
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage() from exc
            raise
        for piece in pieces:
            self._absorb(piece)
        if self.size - self._written_back >= WRITEBACK_BYTES:
            # Start writing what arrived to disk now (DONTNEED starts the writeback and
            # then drops the pages once clean): the fsync at the end waits for the last
            # few MiB, not for a whole video. Measured: 1.8 s -> 0.8 s for 1 GiB.
            start, self._written_back = self._written_back, self.size
            with contextlib.suppress(OSError):  # only a hint: some filesystems refuse it
                os.posix_fadvise(fd, start, self.size - start, os.POSIX_FADV_DONTNEED)
        if free_bytes(self.path.parent) < self._reserve:
            raise InsufficientStorage()

    def sync(self) -> None:
        """Make every byte written so far durable."""
        os.fsync(self._file.fileno())

    def truncate(self, size: int) -> None:
        """Forget everything after ``size`` bytes (a chunk that failed its checksum)."""
        self._file.truncate(size)
        self._file.seek(size)
        self._hash, self.size, self.head = hashlib.sha256(), 0, b""
        self._rehash()
        self._written_back = min(self._written_back, self.size)

    def finish(self, modified: float | None) -> str:
        """Make the bytes durable, stamp the original date; return the SHA-256 (hex)."""
        self.sync()
        self._file.close()
        if modified is not None:
            os.utime(self.path, (modified, modified))
        return self._hash.hexdigest()

    def close(self) -> None:
        """Close the file, keeping it."""
        with contextlib.suppress(OSError):
            self._file.close()

    def discard(self) -> None:
        """Close and delete the file (after a link it is only a second name)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def _rehash(self) -> None:
        """Hash what is already in the file (after a restart: only then a second read)."""
        with self.path.open("rb") as existing:
            while block := existing.read(WRITE_BLOCK_BYTES):
                self._absorb(block)

    def _absorb(self, data: bytes) -> None:
        self._hash.update(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.size += len(data)


async def pump(
    chunks: AsyncIterable[bytes], spool: Spool, on_bytes: Callable[[int], None] | None = None
) -> None:
    """Copy network chunks to disk in 1 MiB writes, one write in flight while reading on."""
    pending: asyncio.Future[None] | None = None
    block: list[bytes] = []  # the loop never copies: the writer thread takes the pieces
    size = 0
    try:
        async for chunk in chunks:
            block.append(chunk)
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            if size >= WRITE_BLOCK_BYTES:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(asyncio.to_thread(spool.write_all, block))
                block, size = [], 0
        if pending is not None:
            await pending
            pending = None
        if block:
            await asyncio.to_thread(spool.write_all, block)
    except BaseException:
        # Keep what arrived: a resumable upload continues from the last byte on disk.
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
            pending = None
        if block:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(spool.write_all, block))
        raise


async def gather_up_to(chunks: AsyncIterator[bytes], limit: int) -> tuple[list[bytes], bool]:
    """Take chunks until ``limit`` bytes have come; return them and whether that was all."""
    taken: list[bytes] = []
    size = 0
    while size < limit:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return taken, True
        taken.append(chunk)
        size += len(chunk)
    return taken, False


def free_bytes(path: Path) -> int:
    """Return the bytes an unprivileged user may still write on ``path``'s filesystem."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def human_size(n: int) -> str:
    """Say a byte count as a person reads it ("1.5 GiB")."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
