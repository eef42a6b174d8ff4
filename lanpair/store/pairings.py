"""Pairings in the state database: pending codes, devices and their tokens, hand-offs, and
the audit log of who did what."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from lanpair.clock import from_iso, to_iso
from lanpair.errors import StoreError
from lanpair.models import Device, DeviceStatus

if TYPE_CHECKING:
    from lanpair.store.database import Store

PENDING_KEPT = timedelta(days=1)  # spent and expired codes stay this long, for the audit trail
HANDED_OVER_KEPT = 8  # a device's tokens for other host names: the newest this many


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


class PairingTable:
    """Reads and writes of pairings, devices and the audit log, through the store's threads."""

    def __init__(self, store: Store) -> None:
        self._store = store

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

        await self._store.write(add)

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

        return await self._store.write(confirm)

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

        return await self._store.read(find)

    async def device(self, device_id: str) -> Device | None:
        """Return one device by id."""
        rows = await self._store.read(
            lambda c: c.execute(
                "SELECT * FROM devices WHERE device_id = ?", (device_id,)
            ).fetchall()
        )
        return _device(rows[0]) if rows else None

    async def devices(self) -> list[Device]:
        """Return every device ever paired, newest first."""
        rows = await self._store.read(
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

        return await self._store.write(revoke)

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

        await self._store.write(add)

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

        return await self._store.write(redeem)

    async def touch(self, device_id: str, now: datetime) -> None:
        """Record that a device was just seen."""
        await self._store.write(
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
        await self._store.write(
            lambda c: _audit(
                c, action, now, device_id=device_id, client_addr=client_addr, detail=detail
            )
        )

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest audit lines."""
        rows = await self._store.read(
            lambda c: c.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        )
        return [dict(row) for row in rows]

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

        return await self._store.write(folder)

    async def record_sync(self, device_id: str, now: datetime) -> None:
        """Note that a device just compared its files with the library."""
        await self._store.write(
            lambda c: c.execute(
                "UPDATE devices SET last_sync = ? WHERE device_id = ?", (to_iso(now), device_id)
            )
        )


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
