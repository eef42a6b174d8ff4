"""The file index: one row per file of the library, newest first by when it was taken."""

from __future__ import annotations

import base64
import enum
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from lanpair.clock import from_iso, to_iso
from lanpair.errors import BadRequest, StoreError
from lanpair.models import FileRecord, Kind, NewFile, ThumbState, TrashedFile

if TYPE_CHECKING:
    from lanpair.store.database import Store

MAX_PAGE = 500
CACHED_PAGES = 64


@dataclass(frozen=True, slots=True)
class FileQuery:
    """Which files a gallery page shows."""

    limit: int = 100
    cursor: str | None = None
    device_id: str | None = None
    kind: Kind | None = None
    taken_from: datetime | None = None
    taken_to: datetime | None = None
    name_contains: str | None = None


class Indexed(enum.Enum):
    """What indexing a file found at its path."""

    ADDED = "added"  # nothing: a new row
    CHANGED = "changed"  # another size or time: the row now says what is there
    SAME = "same"  # the same file: the row stays (it may learn the file's hash)


class FileStat(NamedTuple):
    """What a rescan compares: a file's id, size and modification time (and where it was).

    A named tuple, not a dataclass: a rescan of 100k files makes 100k of them straight
    from SQLite's rows (``_make`` is C), which took 0.5 s as dataclasses.
    """

    id: int
    size: int
    mtime_ns: int
    relpath: str


class FileTable:
    """Reads and writes of the ``files`` table, through the store's threads."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # Query -> (store commits when read, page): valid until the next commit of any kind.
        self._pages: dict[FileQuery, tuple[int, str]] = {}

    async def add(self, new: NewFile, now: datetime, *, file_id: int | None = None) -> FileRecord:
        """Index a file under the id it had (a restore), replacing what was at its path."""

        def add(conn: sqlite3.Connection) -> FileRecord:
            conn.execute("DELETE FROM files WHERE relpath = ?", (new.relpath,))
            cursor = conn.execute(_INSERT, _row(new, now, file_id))
            return _record(_one(conn, cursor.lastrowid))

        return await self._store.write(add)

    async def index(self, news: list[NewFile], now: datetime) -> list[tuple[FileRecord, Indexed]]:
        """Index files as found on disk, in one transaction; say what each one was.

        Indexing a file twice (the upload that placed it, then the watcher that saw it
        land) is harmless: the same size and time keep the row, and its id.
        """

        def index(conn: sqlite3.Connection) -> list[tuple[FileRecord, Indexed]]:
            return [_index_one(conn, new, now) for new in news]

        return await self._store.write(index)

    async def get(self, file_id: int) -> FileRecord | None:
        """Return one file by id."""
        return await self._store.read(lambda c: _maybe(c, "id = ?", (file_id,)))

    def by_sha256_here(self, sha256: str) -> list[FileRecord]:
        """Return the files with this content, read on the calling thread. Blocking."""

        def by_sha256(conn: sqlite3.Connection) -> list[FileRecord]:
            rows = conn.execute("SELECT * FROM files WHERE sha256 = ?", (sha256,)).fetchall()
            return [_record(row) for row in rows]

        return self._store.read_here(by_sha256)

    async def present(
        self, folder: str, paths_sizes: Iterable[tuple[str, int]], sha256s: Iterable[str]
    ) -> tuple[set[tuple[str, int]], set[str]]:
        """Return which (relpath, size) pairs exist in ``folder`` and which hashes anywhere."""
        wanted = list(paths_sizes)
        hashes = list(sha256s)

        def present(conn: sqlite3.Connection) -> tuple[set[tuple[str, int]], set[str]]:
            in_folder = {
                (row[0], row[1])
                for row in conn.execute(
                    "SELECT relpath, size FROM files WHERE folder = ?", (folder,)
                )
            }
            known = set()
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                marks = ",".join("?" * len(chunk))
                known |= {
                    row[0]
                    for row in conn.execute(
                        f"SELECT sha256 FROM files WHERE sha256 IN ({marks})",  # noqa: S608
                        chunk,
                    )
                }
            return {pair for pair in wanted if pair in in_folder}, known

        return await self._store.read(present)

    async def page_json(self, query: FileQuery) -> str:
        """Return one gallery page as JSON text, written by SQLite itself.

        The hot path: SQLite builds the items (``ITEM_JSON``) without holding the GIL,
        so neither the event loop nor Python objects per row are involved.
        """
        cached = self._pages.get(query)
        if cached is not None and cached[0] == self._store.commits:
            return cached[1]  # a phone opening the gallery, again: the same first page
        commits = self._store.commits
        limit = max(1, min(query.limit, MAX_PAGE))
        where, params = _filters(query)
        sql = (
            "SELECT json_group_array(json(item)) FILTER (WHERE n <= ?),"  # noqa: S608 -- fixed clauses; every value is a parameter
            " max(CASE WHEN n = ? THEN taken_at END), max(CASE WHEN n = ? THEN id END),"
            " count(*) FROM (SELECT " + ITEM_JSON + " AS item, taken_at, id,"
            " row_number() OVER (ORDER BY taken_at DESC, id DESC) AS n FROM files"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY taken_at DESC, id DESC LIMIT ?)"
        )

        def fetch(conn: sqlite3.Connection) -> str:
            items, taken, file_id, count = conn.execute(
                sql, [limit, limit, limit, *params, limit + 1]
            ).fetchone()
            cursor = _cursor(taken, file_id) if count > limit else None
            return f'{{"items": {items or "[]"}, "next_cursor": {json.dumps(cursor)}}}'

        text = await self._store.read(fetch)
        if len(self._pages) >= CACHED_PAGES:
            self._pages.clear()
        self._pages[query] = (commits, text)
        return text

    async def pending_thumbs(self) -> list[FileRecord]:
        """Return the files whose thumbnail is still to be drawn, newest first."""
        rows = await self._store.read(
            lambda c: c.execute(
                "SELECT * FROM files WHERE thumb = 'pending' ORDER BY taken_at DESC, id DESC"
            ).fetchall()
        )
        return [_record(row) for row in rows]

    async def stats(self, folder: str = "") -> dict[str, FileStat]:
        """Return every indexed path (under ``folder``) with its id, size and mtime."""
        params: tuple[str, ...] = ()
        if not folder:
            sql = "SELECT id, size, mtime_ns, relpath FROM files"
        else:  # a range on the relpath index: "a/b/" <= relpath < "a/b0" ("0" follows "/")
            sql = "SELECT id, size, mtime_ns, relpath FROM files WHERE relpath >= ? AND relpath < ?"
            params = (folder + "/", folder + "0")

        def stats(conn: sqlite3.Connection) -> dict[str, FileStat]:
            return {s.relpath: s for s in map(FileStat._make, conn.execute(sql, params))}

        return await self._store.read(stats)

    async def stats_of(self, relpaths: Iterable[str]) -> dict[str, FileStat]:
        """Return the indexed stats of just these paths."""
        wanted = list(relpaths)

        def stats_of(conn: sqlite3.Connection) -> dict[str, FileStat]:
            found = {}
            for relpath in wanted:
                row = conn.execute(
                    "SELECT id, size, mtime_ns, relpath FROM files WHERE relpath = ?", (relpath,)
                ).fetchone()
                if row is not None:
                    found[relpath] = FileStat._make(row)
            return found

        return await self._store.read(stats_of)

    async def remove_unchanged(self, stats: Iterable[FileStat]) -> list[int]:
        """Drop files from the index if their rows are still as given; return whose were.

        A row that changed since it was read (an upload indexed the path again, a rename
        moved it) stays.
        """
        rows = [(s.id, s.relpath, s.size, s.mtime_ns) for s in stats]

        def remove(conn: sqlite3.Connection) -> list[int]:
            removed = []
            for row in rows:
                cursor = conn.execute(
                    "DELETE FROM files WHERE id = ? AND relpath = ? AND size = ? AND mtime_ns = ?",
                    row,
                )
                if cursor.rowcount:
                    removed.append(row[0])
            return removed

        return await self._store.write(remove)

    async def move(
        self, file_id: int, relpath: str, folder: str, device_id: str | None
    ) -> tuple[FileRecord | None, list[int]]:
        """Record that a file now lives at ``relpath``; return it (None if it left the
        index) and the ids of the rows it displaced there: files gone from disk that the
        index still had at that path (a delete by hand not yet seen, or never seen)."""

        def move(conn: sqlite3.Connection) -> tuple[FileRecord | None, list[int]]:
            there = (relpath, file_id)
            displaced = [
                row[0]
                for row in conn.execute("SELECT id FROM files WHERE relpath = ? AND id != ?", there)
            ]
            conn.execute("DELETE FROM files WHERE relpath = ? AND id != ?", there)
            conn.execute(
                "UPDATE files SET relpath = ?, folder = ?, name = ?, device_id = ? WHERE id = ?",
                (relpath, folder, relpath.rsplit("/", 1)[-1], device_id, file_id),
            )
            return _maybe(conn, "id = ?", (file_id,)), displaced

        return await self._store.write(move)

    async def trash(self, record: FileRecord, trash_name: str, now: datetime, by: str) -> None:
        """Move a file's row from the index to the trash list."""

        def trash(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM files WHERE id = ?", (record.id,))
            conn.execute(
                """INSERT INTO trash (file_id, relpath, folder, trash_name, device_id, size,
                   sha256, deleted_at, deleted_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    record.id,
                    record.relpath,
                    record.folder,
                    trash_name,
                    record.device_id,
                    record.size,
                    record.sha256,
                    to_iso(now),
                    by,
                ),
            )

        await self._store.write(trash)

    async def trashed(self, file_id: int) -> TrashedFile | None:
        """Return one file of the trash."""
        rows = await self._store.read(
            lambda c: c.execute("SELECT * FROM trash WHERE file_id = ?", (file_id,)).fetchall()
        )
        return _trashed(rows[0]) if rows else None

    async def trash_list(self, device_id: str | None = None) -> list[TrashedFile]:
        """Return the trash, newest first (one device's, or all of it)."""

        def listing(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if device_id is None:
                return conn.execute("SELECT * FROM trash ORDER BY deleted_at DESC").fetchall()
            return conn.execute(
                "SELECT * FROM trash WHERE device_id = ? ORDER BY deleted_at DESC", (device_id,)
            ).fetchall()

        return [_trashed(row) for row in await self._store.read(listing)]

    async def untrash(self, file_id: int) -> None:
        """Forget a trash entry (restored or purged)."""
        await self._store.write(
            lambda c: c.execute("DELETE FROM trash WHERE file_id = ?", (file_id,))
        )

    async def set_thumb(self, file_id: int, state: ThumbState) -> None:
        """Record where a file's thumbnail stands."""
        await self._store.write(
            lambda c: c.execute("UPDATE files SET thumb = ? WHERE id = ?", (state.value, file_id))
        )

    async def set_duration(self, file_id: int, duration_s: float) -> None:
        """Record how long a video plays."""
        await self._store.write(
            lambda c: c.execute(
                "UPDATE files SET duration_s = ? WHERE id = ?", (duration_s, file_id)
            )
        )


# DESIGN.md's gallery item, as SQLite writes it for a page; library.item_json writes the
# same from a record (for events), and a test keeps the two equal.
ITEM_JSON = """json_object('id', id, 'name', name, 'type', kind, 'mime', mime,
    'path', '/files/' || id, 'thumb', CASE WHEN thumb = 'none' THEN NULL ELSE '/thumbs/' || id END,
    'size', size, 'taken_at', taken_at, 'width', width, 'height', height,
    'duration', duration_s, 'device', coalesce(device_id, 'pc'), 'folder', folder)"""

_INSERT = """INSERT INTO files (id, relpath, folder, device_id, name, size, mtime_ns, sha256,
    kind, mime, width, height, taken_at, duration_s, thumb, added_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def _row(new: NewFile, now: datetime, file_id: int | None) -> tuple[Any, ...]:
    return (
        file_id,
        new.relpath,
        new.folder,
        new.device_id,
        new.name,
        new.size,
        new.mtime_ns,
        new.sha256,
        new.kind.value,
        new.mime,
        new.width,
        new.height,
        to_iso(new.taken_at),
        new.duration_s,
        new.thumb.value,
        to_iso(now),
    )


def _index_one(conn: sqlite3.Connection, new: NewFile, now: datetime) -> tuple[FileRecord, Indexed]:
    row = conn.execute(
        "SELECT id, size, mtime_ns FROM files WHERE relpath = ?", (new.relpath,)
    ).fetchone()
    if row is None:
        cursor = conn.execute(_INSERT, _row(new, now, None))
        return _record(_one(conn, cursor.lastrowid)), Indexed.ADDED
    if (row["size"], row["mtime_ns"]) == (new.size, new.mtime_ns):
        conn.execute(
            "UPDATE files SET sha256 = coalesce(sha256, ?), "
            "device_id = coalesce(?, device_id) WHERE id = ?",
            (new.sha256, new.device_id, row["id"]),
        )
        return _record(_one(conn, row["id"])), Indexed.SAME
    conn.execute(
        """UPDATE files SET folder = ?, device_id = ?, size = ?, mtime_ns = ?, sha256 = ?,
           kind = ?, mime = ?, width = ?, height = ?, taken_at = ?, duration_s = NULL,
           thumb = ? WHERE id = ?""",
        (
            new.folder,
            new.device_id,
            new.size,
            new.mtime_ns,
            new.sha256,
            new.kind.value,
            new.mime,
            new.width,
            new.height,
            to_iso(new.taken_at),
            new.thumb.value,
            row["id"],
        ),
    )
    return _record(_one(conn, row["id"])), Indexed.CHANGED


def _cursor(taken_at: str, file_id: int) -> str:
    raw = json.dumps([taken_at, file_id]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, int]:
    """Read a cursor made by _cursor. Raises BadRequest."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        taken, file_id = json.loads(raw)
        if not isinstance(taken, str) or not isinstance(file_id, int) or not 0 <= file_id < 2**63:
            raise TypeError(cursor)
        from_iso(taken)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest("The cursor is not one this server gave out.") from None
    return taken, file_id


def _filters(query: FileQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.cursor:
        taken, file_id = decode_cursor(query.cursor)
        where.append("(taken_at, id) < (?, ?)")
        params += [taken, file_id]
    if query.device_id is not None:
        where.append("device_id IS ?" if query.device_id == "" else "device_id = ?")
        params.append(None if query.device_id == "" else query.device_id)
    if query.kind is not None:
        where.append("kind = ?")
        params.append(query.kind.value)
    if query.taken_from is not None:
        where.append("taken_at >= ?")
        params.append(to_iso(query.taken_from))
    if query.taken_to is not None:
        where.append("taken_at < ?")
        params.append(to_iso(query.taken_to))
    if query.name_contains:
        escaped = query.name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("name LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    return where, params


def _one(conn: sqlite3.Connection, file_id: int | None) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise StoreError(f"File {file_id} vanished from the index.")
    return row  # type: ignore[no-any-return]


def _maybe(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> FileRecord | None:
    row = conn.execute(f"SELECT * FROM files WHERE {where}", params).fetchone()  # noqa: S608
    return _record(row) if row else None


def _trashed(row: sqlite3.Row) -> TrashedFile:
    deleted = from_iso(row["deleted_at"])
    if deleted is None:
        raise StoreError(f"Trashed file {row['file_id']} has no deletion time.")
    return TrashedFile(
        file_id=row["file_id"],
        relpath=row["relpath"],
        folder=row["folder"],
        trash_name=row["trash_name"],
        device_id=row["device_id"],
        size=row["size"],
        sha256=row["sha256"],
        deleted_at=deleted,
        deleted_by=row["deleted_by"],
    )


def _record(row: sqlite3.Row | Mapping[str, Any]) -> FileRecord:
    taken, added = from_iso(row["taken_at"]), from_iso(row["added_at"])
    if taken is None or added is None:
        raise StoreError(f"File {row['id']} has no times.")
    return FileRecord(
        id=row["id"],
        relpath=row["relpath"],
        folder=row["folder"],
        device_id=row["device_id"],
        name=row["name"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        sha256=row["sha256"],
        kind=Kind(row["kind"]),
        mime=row["mime"],
        width=row["width"],
        height=row["height"],
        taken_at=taken,
        duration_s=row["duration_s"],
        thumb=ThumbState(row["thumb"]),
        added_at=added,
    )
