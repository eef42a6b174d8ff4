"""The SQLite store: schema migrations, WAL, one-transaction writes, concurrent use."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lanpair import store
from lanpair.store import FileQuery, Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def pragma(db: Path, name: str) -> object:
    """Read one PRAGMA straight from the database file."""
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def count(conn: sqlite3.Connection, table: str) -> int:
    """Return how many rows ``table`` holds."""
    return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608


async def test_migrations_set_user_version(tmp_path: Path) -> None:
    """Opening a new database runs every migration and sets user_version to their count."""
    db = tmp_path / "db"
    async with Store(db) as opened:
        version = await opened.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        assert version == len(store.MIGRATIONS)
    assert pragma(db, "user_version") == len(store.MIGRATIONS)


async def test_reopening_does_not_rerun_migrations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second open keeps the data and logs no migration."""
    db = tmp_path / "db"
    with caplog.at_level(logging.INFO, logger="lanpair.store"):
        async with Store(db) as first:
            await first.pairings.audit("generate", NOW)
        assert any("migrating" in r.getMessage() for r in caplog.records)
        caplog.clear()
        async with Store(db) as second:
            assert await second.read(lambda c: count(c, "audit")) == 1
        assert not any("migrating" in r.getMessage() for r in caplog.records)
    assert pragma(db, "user_version") == len(store.MIGRATIONS)


async def test_journal_mode_is_wal(tmp_path: Path) -> None:
    """The database is in WAL mode, seen by the store and by a fresh connection."""
    db = tmp_path / "db"
    async with Store(db) as opened:
        mode = await opened.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert str(mode).lower() == "wal"
    assert str(pragma(db, "journal_mode")).lower() == "wal"


async def test_concurrent_audit_writes_all_land(tmp_path: Path) -> None:
    """200 audit writes started at once all commit, each exactly once."""
    async with Store(tmp_path / "db") as opened:
        await asyncio.gather(
            *(opened.pairings.audit("generate", NOW, detail=str(i)) for i in range(200))
        )
        rows = await opened.pairings.audit_log(limit=1000)
    assert len(rows) == 200
    assert sorted(int(str(row["detail"])) for row in rows) == list(range(200))


async def test_failed_write_rolls_back(tmp_path: Path) -> None:
    """A write function that inserts and then raises leaves nothing behind; the store goes on."""

    class Boom(Exception):
        """Raised on purpose inside a write."""

    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO audit (time, action) VALUES ('t', 'doomed')")
        conn.execute("INSERT INTO meta (key, value) VALUES ('doomed', 'yes')")
        raise Boom

    async with Store(tmp_path / "db") as opened:
        with pytest.raises(Boom):
            await opened.write(insert_then_fail)
        assert await opened.read(lambda c: count(c, "audit")) == 0
        assert await opened.read(lambda c: count(c, "meta")) == 0
        await opened.pairings.audit("after", NOW)
        assert await opened.read(lambda c: count(c, "audit")) == 1


async def test_write_returns_the_function_result(tmp_path: Path) -> None:
    """store.write hands back what the function returned, after committing."""
    async with Store(tmp_path / "db") as opened:
        rowid = await opened.write(
            lambda c: c.execute("INSERT INTO audit (time, action) VALUES ('t', 'x')").lastrowid
        )
        assert rowid == 1
        assert await opened.read(lambda c: count(c, "audit")) == 1


async def test_reads_run_while_open_and_see_committed_writes(tmp_path: Path) -> None:
    """Reads work while the store is open, concurrently, and see what writes committed."""
    async with Store(tmp_path / "db") as opened:
        assert await opened.read(lambda c: c.execute("SELECT 1").fetchone()[0]) == 1
        await opened.pairings.audit("generate", NOW, client_addr="10.0.0.1")
        counts = await asyncio.gather(
            *(opened.read(lambda c: count(c, "audit")) for _ in range(20))
        )
        assert counts == [1] * 20
        [row] = await opened.pairings.audit_log()
        assert row["client_addr"] == "10.0.0.1"
        assert row["time"] == "2026-01-01T00:00:00Z"


async def test_reads_are_read_only(tmp_path: Path) -> None:
    """A reader connection refuses to write."""
    async with Store(tmp_path / "db") as opened:
        with pytest.raises(sqlite3.OperationalError):
            await opened.read(
                lambda c: c.execute("INSERT INTO audit (time, action) VALUES ('t', 'x')")
            )


async def test_meta_is_stable_across_reopen(tmp_path: Path) -> None:
    """store.meta stores the default once and returns the same value after reopening."""
    db = tmp_path / "db"
    async with Store(db) as first:
        value = await first.meta("instance_id", lambda: "first-value")
        assert value == "first-value"
        assert await first.meta("instance_id", lambda: "ignored") == "first-value"
    async with Store(db) as second:
        assert await second.meta("instance_id", lambda: "second-value") == "first-value"


async def test_a_schema_2_database_upgrades_and_keeps_its_pairings(tmp_path: Path) -> None:
    """Opening a database made before hand-offs adds their tables; old device tokens still work."""
    db = tmp_path / "db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for number, script in enumerate(store.MIGRATIONS[:2], start=1):
            conn.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        conn.execute(
            """INSERT INTO devices (device_id, client_device_id, device_name, token_hash, status,
               confirmed_at, expires_at) VALUES ('dev_old', 'c', 'Old', x'01', 'confirmed',
               '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z')"""
        )
    async with Store(db) as opened:
        found = await opened.pairings.device_by_token(b"\x01")
        assert found is not None
        assert found[0].device_id == "dev_old"
        assert await opened.read(lambda c: count(c, "device_tokens")) == 0
        assert await opened.read(lambda c: count(c, "handoffs")) == 0
    assert pragma(db, "user_version") == len(store.MIGRATIONS)


async def test_a_gallery_page_is_read_once_until_the_next_commit(tmp_path: Path) -> None:
    async with Store(tmp_path / "lanpair.db") as store:
        query = FileQuery(limit=10)
        first = await store.files.page_json(query)
        assert store.files._pages[query] == (store.commits, first)
        await store.meta("anything", lambda: "x")  # any commit makes the page stale
        assert store.files._pages[query][0] != store.commits


async def test_reserved_blocks_never_repeat_across_restarts(tmp_path: Path) -> None:
    """Event ids: each run takes a block past the last one, or the clock, if that is later."""
    async with Store(tmp_path / "lanpair.db") as store:
        assert await store.reserve("event_ids", 100, 5) == 5
    async with Store(tmp_path / "lanpair.db") as store:  # a restart (or a crash) later
        assert await store.reserve("event_ids", 100, 5) == 105
        assert await store.reserve("event_ids", 100, 10_000) == 10_000
