"""The state database: one SQLite file in WAL mode, and the threads that use it.

Writes go through one writer thread, one transaction each; reads run on a small
thread pool with a connection per thread. Nothing here runs on the event loop. What is
stored lives in its own modules: the file index (files.py), pairings and the audit log
(pairings.py), the schema (schema.py).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from lanpair.errors import StoreError
from lanpair.store.files import FileTable
from lanpair.store.pairings import PairingTable
from lanpair.store.schema import MIGRATIONS, migrate

T = TypeVar("T")

SIDE_READER_CACHE_KIB = 256  # a worker thread's connection: lookups by index, not pages


class Store:
    """The state database: open with ``async with``; every call is loop-safe."""

    def __init__(self, path: Path, *, readers: int = 4) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="lanpair-db-write")
        self.commits = 0  # a generation for caches of what the database says
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="lanpair-db-read")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._read_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    async def __aenter__(self) -> Self:
        """Open the database and bring its schema up to date."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self._open_writer)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Finish pending work and close every connection."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the database. Blocking."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None

    async def write(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``func`` in one immediate transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._run_write, func)

    async def read(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``func`` on a reader thread's connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, func)

    def read_here(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``func`` on the calling thread's own read-only connection. Blocking.

        For a thread already at blocking work (an upload being placed) that needs a look
        or two at the database on the way: no trip to a reader thread and back. Such a
        connection keeps a small page cache: there may be one in every worker thread.
        """
        return func(self._reader(cache_kib=SIDE_READER_CACHE_KIB))

    async def meta(self, key: str, default: Callable[[], str]) -> str:
        """Return a stored value, storing ``default()`` the first time."""

        def get_or_set(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row:
                return str(row[0])
            value = default()
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            return value

        return await self.write(get_or_set)

    async def reserve(self, key: str, block: int, floor: int) -> int:
        """Return the first number of a block nobody had yet (at least ``floor``), and note
        the block as taken, in one transaction: a crash never hands the same one out twice."""

        def take(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            first = max(floor, int(row[0]) if row else 0)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, str(first + block)),
            )
            return first

        return await self.write(take)

    @functools.cached_property
    def files(self) -> FileTable:
        """Return the file index (one, so its page cache is shared)."""
        return FileTable(self)

    @functools.cached_property
    def pairings(self) -> PairingTable:
        """Return the pairings, devices and audit log."""
        return PairingTable(self)

    # -- plumbing -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_writer(self) -> None:
        try:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn, MIGRATIONS)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the state database {self.path}: {exc}") from exc
        self._write_conn = conn

    def _run_write(self, func: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._write_conn
        if conn is None:
            raise StoreError("The state database is not open.")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = func(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.commits += 1  # after the commit: what a reader cached before is now stale
        return result

    def _run_read(self, func: Callable[[sqlite3.Connection], T]) -> T:
        return func(self._reader())

    def _reader(self, *, cache_kib: int | None = None) -> sqlite3.Connection:
        """Return this thread's read-only connection, opening it the first time."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            if cache_kib is not None:
                conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
            self._local.conn = conn
            with self._lock:
                self._read_conns.append(conn)
        return conn
