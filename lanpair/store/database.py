"""SQLite state: pairings, devices and the audit log, in one WAL database.

Writes go through one writer thread, one transaction each; reads run on a small
thread pool with a connection per thread. Nothing here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from lanpair.clock import from_iso, to_iso
from lanpair.errors import StoreError
from lanpair.models import Device, DeviceStatus
from lanpair.store.files import FileTable

log = logging.getLogger(__name__)
T = TypeVar("T")

PENDING_KEPT = timedelta(days=1)  # spent and expired codes stay this long, for the audit trail
HANDED_OVER_KEPT = 8  # a device's tokens for other host names: the newest this many
SIDE_READER_CACHE_KIB = 256  # a worker thread's connection: lookups by index, not pages

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE pending (
        token_hash BLOB PRIMARY KEY,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        spent_at TEXT,
        device_id TEXT
    );
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        client_device_id TEXT NOT NULL,
        device_name TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('confirmed', 'revoked')),
        confirmed_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked_at TEXT,
        last_seen TEXT,
        last_sync TEXT,
        file_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX devices_client ON devices (client_device_id, status);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        device_id TEXT,
        client_addr TEXT,
        detail TEXT
    );
    """,
    """
    ALTER TABLE devices ADD COLUMN folder TEXT;
    CREATE TABLE files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: thumbnails are cached by id
        relpath TEXT NOT NULL UNIQUE,
        folder TEXT NOT NULL,
        device_id TEXT,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT,
        kind TEXT NOT NULL CHECK (kind IN ('image', 'video', 'file')),
        mime TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        taken_at TEXT NOT NULL,
        duration_s REAL,
        thumb TEXT NOT NULL DEFAULT 'pending',
        added_at TEXT NOT NULL
    );
    CREATE INDEX files_taken ON files (taken_at DESC, id DESC);
    CREATE INDEX files_device ON files (device_id, taken_at DESC, id DESC);
    CREATE INDEX files_kind ON files (kind, taken_at DESC, id DESC);
    CREATE INDEX files_folder ON files (folder);
    CREATE INDEX files_sha ON files (sha256);
    UPDATE devices SET file_count = 0;
    CREATE TRIGGER files_count_add AFTER INSERT ON files WHEN NEW.device_id IS NOT NULL BEGIN
        UPDATE devices SET file_count = file_count + 1 WHERE device_id = NEW.device_id;
    END;
    CREATE TRIGGER files_count_remove AFTER DELETE ON files WHEN OLD.device_id IS NOT NULL BEGIN
        UPDATE devices SET file_count = file_count - 1 WHERE device_id = OLD.device_id;
    END;
    CREATE TABLE trash (
        file_id INTEGER PRIMARY KEY,  -- the id the file had, and gets back when restored
        relpath TEXT NOT NULL,
        folder TEXT NOT NULL,
        trash_name TEXT NOT NULL UNIQUE,
        device_id TEXT,
        size INTEGER NOT NULL,
        sha256 TEXT,
        deleted_at TEXT NOT NULL,
        deleted_by TEXT
    );
    """,
    """
    -- A device's tokens besides devices.token_hash, one per host name it was handed over to;
    -- they live and die with the device row (its status and expires_at).
    CREATE TABLE device_tokens (
        token_hash BLOB PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices (device_id),
        host TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX device_tokens_device ON device_tokens (device_id, host);
    CREATE TABLE handoffs (
        token_hash BLOB PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices (device_id),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        spent_at TEXT
    );
    CREATE INDEX handoffs_device ON handoffs (device_id, spent_at);
    """,
)


class ConfirmOutcome(StrEnum):
    """What became of an attempt to spend a pending pairing code."""

    CONFIRMED = "confirmed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"


class HandoffOutcome(StrEnum):
    """What became of an attempt to spend a hand-off token."""

    REDEEMED = "redeemed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    NOT_PAIRED = "not_paired"  # its device was revoked, replaced or expired meanwhile


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

    # -- pairing -----------------------------------------------------------------------

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

    async def add_pending(
        self, token_hash: bytes, created: datetime, expires: datetime, client_addr: str | None
    ) -> None:
        """Store a new pending code (its hash only), audit it, and drop codes a day expired."""

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO pending (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
                (token_hash, to_iso(created), to_iso(expires)),
            )
            conn.execute(
                "DELETE FROM pending WHERE expires_at < ?", (to_iso(created - PENDING_KEPT),)
            )
            _audit(conn, "generate", created, client_addr=client_addr)

        await self.write(add)

    async def confirm(
        self,
        pending_hash: bytes | None,
        now: datetime,
        device: Device,
        token_hash: bytes,
        client_addr: str,
    ) -> tuple[ConfirmOutcome, list[str]]:
        """Spend a pending code and add ``device``, audited, in one transaction.

        Returns the outcome and the ids of older pairings of the same client it replaced.
        """

        def confirm(conn: sqlite3.Connection) -> tuple[ConfirmOutcome, list[str]]:
            outcome, replaced = spend(conn)
            _audit(
                conn,
                "confirm" if outcome is ConfirmOutcome.CONFIRMED else "confirm_failed",
                now,
                device_id=device.device_id if outcome is ConfirmOutcome.CONFIRMED else None,
                client_addr=client_addr,
                detail=f"replaced {', '.join(replaced)}" if replaced else outcome.value,
            )
            return outcome, replaced

        def spend(conn: sqlite3.Connection) -> tuple[ConfirmOutcome, list[str]]:
            row = conn.execute(
                "SELECT expires_at, spent_at FROM pending WHERE token_hash = ?", (pending_hash,)
            ).fetchone()
            if row is None:
                return ConfirmOutcome.UNKNOWN, []
            if row["spent_at"] is not None:
                return ConfirmOutcome.USED, []
            expires = from_iso(row["expires_at"])
            if expires is None or now >= expires:
                return ConfirmOutcome.EXPIRED, []
            conn.execute(
                "UPDATE pending SET spent_at = ?, device_id = ? WHERE token_hash = ?",
                (to_iso(now), device.device_id, pending_hash),
            )
            replaced = [
                r[0]
                for r in conn.execute(
                    "SELECT device_id FROM devices WHERE client_device_id = ? AND status = ?",
                    (device.client_device_id, DeviceStatus.CONFIRMED.value),
                )
            ]
            conn.executemany(
                "UPDATE devices SET status = 'revoked', revoked_at = ? WHERE device_id = ?",
                [(to_iso(now), old) for old in replaced],
            )
            # The same client paired again keeps its folder (and so its files).
            folder = conn.execute(
                """SELECT folder FROM devices WHERE client_device_id = ? AND folder IS NOT NULL
                   ORDER BY confirmed_at DESC LIMIT 1""",
                (device.client_device_id,),
            ).fetchone()
            conn.execute(
                """INSERT INTO devices (device_id, client_device_id, device_name, token_hash,
                   status, confirmed_at, expires_at, folder) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    device.device_id,
                    device.client_device_id,
                    device.device_name,
                    token_hash,
                    device.status.value,
                    to_iso(device.confirmed_at),
                    to_iso(device.expires_at),
                    folder[0] if folder else None,
                ),
            )
            _hand_over_files(conn, replaced, device.device_id)
            return ConfirmOutcome.CONFIRMED, replaced

        return await self.write(confirm)

    async def device_by_token(self, token_hash: bytes) -> tuple[Device, bytes] | None:
        """Return the device holding a token hash (its first or a handed-over one) and the hash."""

        def find(conn: sqlite3.Connection) -> tuple[Device, bytes] | None:
            row = conn.execute(
                "SELECT * FROM devices WHERE token_hash = ?", (token_hash,)
            ).fetchone()
            if row is not None:
                return _device(row), bytes(row["token_hash"])
            row = conn.execute(
                """SELECT devices.*, device_tokens.token_hash AS held FROM device_tokens
                   JOIN devices USING (device_id) WHERE device_tokens.token_hash = ?""",
                (token_hash,),
            ).fetchone()
            return (_device(row), bytes(row["held"])) if row else None

        return await self.read(find)

    async def device(self, device_id: str) -> Device | None:
        """Return one device by id."""
        rows = await self.read(
            lambda c: c.execute(
                "SELECT * FROM devices WHERE device_id = ?", (device_id,)
            ).fetchall()
        )
        return _device(rows[0]) if rows else None

    async def devices(self) -> list[Device]:
        """Return every device ever paired, newest first."""
        rows = await self.read(
            lambda c: c.execute("SELECT * FROM devices ORDER BY confirmed_at DESC").fetchall()
        )
        return [_device(row) for row in rows]

    async def revoke(
        self, device_id: str, now: datetime, client_addr: str, detail: str
    ) -> Device | None:
        """Mark a device revoked, audited; return it as it now stands (None if unknown)."""

        def revoke(conn: sqlite3.Connection) -> Device | None:
            conn.execute(
                """UPDATE devices SET status = 'revoked', revoked_at = ?
                   WHERE device_id = ? AND status = 'confirmed'""",
                (to_iso(now), device_id),
            )
            row = conn.execute("SELECT * FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            if row is None:
                return None
            _audit(conn, "revoke", now, device_id=device_id, client_addr=client_addr, detail=detail)
            return _device(row)

        return await self.write(revoke)

    async def add_handoff(
        self,
        token_hash: bytes,
        device_id: str,
        created: datetime,
        expires: datetime,
        client_addr: str,
    ) -> None:
        """Store a device's new hand-off (its hash only) in place of its unspent ones, audited."""

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM handoffs WHERE (device_id = ? AND spent_at IS NULL) OR expires_at < ?",
                (device_id, to_iso(created - PENDING_KEPT)),
            )
            conn.execute(
                """INSERT INTO handoffs (token_hash, device_id, created_at, expires_at)
                   VALUES (?, ?, ?, ?)""",
                (token_hash, device_id, to_iso(created), to_iso(expires)),
            )
            _audit(conn, "handoff", created, device_id=device_id, client_addr=client_addr)

        await self.write(add)

    async def redeem_handoff(
        self,
        handoff_hash: bytes | None,
        now: datetime,
        token_hash: bytes,
        host: str,
        client_addr: str,
    ) -> tuple[HandoffOutcome, Device | None]:
        """Spend a hand-off and give its device ``token_hash`` for ``host``, audited, atomically.

        The token replaces the one the device held for the same host before; of the tokens
        for other hosts the newest HANDED_OVER_KEPT stay.
        """

        def redeem(conn: sqlite3.Connection) -> tuple[HandoffOutcome, Device | None]:
            outcome, device = spend(conn)
            _audit(
                conn,
                "handoff_redeem" if outcome is HandoffOutcome.REDEEMED else "handoff_failed",
                now,
                device_id=device.device_id if device else None,
                client_addr=client_addr,
                detail=host if outcome is HandoffOutcome.REDEEMED else outcome.value,
            )
            return outcome, device

        def spend(conn: sqlite3.Connection) -> tuple[HandoffOutcome, Device | None]:
            row = conn.execute(
                "SELECT * FROM handoffs WHERE token_hash = ?", (handoff_hash,)
            ).fetchone()
            if row is None:
                return HandoffOutcome.UNKNOWN, None
            found = conn.execute(
                "SELECT * FROM devices WHERE device_id = ?", (row["device_id"],)
            ).fetchone()
            device = _device(found) if found else None
            expires = from_iso(row["expires_at"])
            if row["spent_at"] is not None:
                return HandoffOutcome.USED, device
            if expires is None or now >= expires:
                return HandoffOutcome.EXPIRED, device
            conn.execute(
                "UPDATE handoffs SET spent_at = ? WHERE token_hash = ?", (to_iso(now), handoff_hash)
            )
            if device is None or device.status_at(now) is not DeviceStatus.CONFIRMED:
                return HandoffOutcome.NOT_PAIRED, device
            conn.execute(
                "DELETE FROM device_tokens WHERE device_id = ? AND host = ?",
                (device.device_id, host),
            )
            conn.execute(
                """INSERT INTO device_tokens (token_hash, device_id, host, created_at)
                   VALUES (?, ?, ?, ?)""",
                (token_hash, device.device_id, host, to_iso(now)),
            )
            conn.execute(
                """DELETE FROM device_tokens WHERE device_id = ? AND token_hash NOT IN (
                   SELECT token_hash FROM device_tokens WHERE device_id = ?
                   ORDER BY created_at DESC, rowid DESC LIMIT ?)""",
                (device.device_id, device.device_id, HANDED_OVER_KEPT),
            )
            return HandoffOutcome.REDEEMED, device

        return await self.write(redeem)

    async def touch(self, device_id: str, now: datetime) -> None:
        """Record that a device was just seen."""
        await self.write(
            lambda c: c.execute(
                "UPDATE devices SET last_seen = ? WHERE device_id = ?", (to_iso(now), device_id)
            )
        )

    async def audit(
        self,
        action: str,
        now: datetime,
        *,
        device_id: str | None = None,
        client_addr: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Append one line to the audit log."""
        await self.write(
            lambda c: _audit(
                c, action, now, device_id=device_id, client_addr=client_addr, detail=detail
            )
        )

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest audit lines."""
        rows = await self.read(
            lambda c: c.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        )
        return [dict(row) for row in rows]

    @functools.cached_property
    def files(self) -> FileTable:
        """Return the file index (one, so its page cache is shared)."""
        return FileTable(self)

    async def device_folder(self, device_id: str, propose: Callable[[set[str]], str]) -> str:
        """Return a device's library folder, giving it ``propose(taken folders)`` the first time."""

        def folder(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT folder FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"No device {device_id}.")
            if row[0]:
                return str(row[0])
            taken = {
                r[0] for r in conn.execute("SELECT folder FROM devices WHERE folder IS NOT NULL")
            }
            chosen = propose(taken)
            conn.execute("UPDATE devices SET folder = ? WHERE device_id = ?", (chosen, device_id))
            return chosen

        return await self.write(folder)

    async def record_sync(self, device_id: str, now: datetime) -> None:
        """Note that a device just compared its files with the library."""
        await self.write(
            lambda c: c.execute(
                "UPDATE devices SET last_sync = ? WHERE device_id = ?", (to_iso(now), device_id)
            )
        )

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
            _migrate(conn, MIGRATIONS)
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


def _migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(migrations[version:], start=version + 1):
        log.info("migrating the state database to schema %d", number)
        conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")


def _hand_over_files(conn: sqlite3.Connection, old_ids: list[str], new_id: str) -> None:
    """Give a re-paired client's files (and trash) to its new pairing."""
    for old in old_ids:
        conn.execute("UPDATE files SET device_id = ? WHERE device_id = ?", (new_id, old))
        conn.execute("UPDATE trash SET device_id = ? WHERE device_id = ?", (new_id, old))
        conn.execute("UPDATE devices SET file_count = 0 WHERE device_id = ?", (old,))
    if old_ids:
        conn.execute(
            """UPDATE devices SET file_count = (SELECT count(*) FROM files WHERE device_id = ?)
               WHERE device_id = ?""",
            (new_id, new_id),
        )


def _audit(
    conn: sqlite3.Connection,
    action: str,
    now: datetime,
    *,
    device_id: str | None = None,
    client_addr: str | None = None,
    detail: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO audit (time, action, device_id, client_addr, detail) VALUES (?, ?, ?, ?, ?)",
        (to_iso(now), action, device_id, client_addr, detail),
    )


def _device(row: sqlite3.Row) -> Device:
    confirmed, expires = from_iso(row["confirmed_at"]), from_iso(row["expires_at"])
    if confirmed is None or expires is None:
        raise StoreError(f"Device {row['device_id']} has no pairing times.")
    return Device(
        device_id=row["device_id"],
        device_name=row["device_name"],
        client_device_id=row["client_device_id"],
        status=DeviceStatus(row["status"]),
        confirmed_at=confirmed,
        expires_at=expires,
        revoked_at=from_iso(row["revoked_at"]),
        last_seen=from_iso(row["last_seen"]),
        last_sync=from_iso(row["last_sync"]),
        file_count=int(row["file_count"]),
        folder=row["folder"] if "folder" in row.keys() else None,  # noqa: SIM118 -- sqlite3.Row
    )
