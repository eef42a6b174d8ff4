"""The state database's schema: each migration in order, applied once."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

log = logging.getLogger(__name__)

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
    """
    -- A file moved by hand into another device's folder changes owner: count it there.
    CREATE TRIGGER files_count_move AFTER UPDATE OF device_id ON files
    WHEN OLD.device_id IS NOT NEW.device_id BEGIN
        UPDATE devices SET file_count = file_count - 1 WHERE device_id = OLD.device_id;
        UPDATE devices SET file_count = file_count + 1 WHERE device_id = NEW.device_id;
    END;
    UPDATE devices SET file_count =
        (SELECT count(*) FROM files WHERE files.device_id = devices.device_id);
    """,
)


def migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> None:
    """Bring a database up to the newest schema, one migration at a time."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(migrations[version:], start=version + 1):
        log.info("migrating the state database to schema %d", number)
        conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")
