"""The library's tree on disk: placing files, saying what they are, walking and comparing.

Placing links a finished file in under the first free name and never follows a symlink
out of the library; describing reads a file's kind, size, date and dimensions; the walk
compares the tree with what the index says. Every function here is blocking: the
library calls each in one trip to a thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mimetypes
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISDIR as stat_is_dir
from stat import S_ISREG as stat_is_file

from lanpair import media
from lanpair.errors import BadRequest
from lanpair.models import Kind, NewFile, ThumbState
from lanpair.names import UnsafeName, numbered
from lanpair.paths import INTERNAL_DIR_NAME
from lanpair.spool import HEAD_BYTES
from lanpair.store import FileStat

log = logging.getLogger(__name__)

MAX_COLLISIONS = 10_000


# What link() says on a filesystem without hard links (exFAT, FAT, some SMB shares)
NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS})


def move_in(
    root: Path,
    source: Path,
    parts: tuple[str, ...],
    folder: str,
    device_id: str | None,
    sha256: str | None,
    head: bytes | None = None,
) -> NewFile:
    """Move ``source`` (a durable file outside the gallery) to ``root/parts`` under the
    first free name, described for the index. Blocking.

    It is described before it moves: an open() in the watched tree would look to the
    watcher like a writer at work.
    """
    wanted = "/".join(parts)
    new = describe(source, wanted, folder, device_id, sha256, head or read_head(source))
    relpath = place(root, source, parts)
    return new if relpath == wanted else replace(new, relpath=relpath)


def place(root: Path, temp: Path, parts: tuple[str, ...]) -> str:
    """Move ``temp`` to ``root/parts`` under the first free name; return its relpath.

    Folders are walked with O_NOFOLLOW, so a symlink in the library never leads a write
    out of it. Blocking.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for folder in parts[:-1]:
            child = _enter(fd, folder)
            os.close(fd)
            fd = child
        for n in range(MAX_COLLISIONS):
            name = parts[-1] if n == 0 else numbered(parts[-1], n)
            try:
                put(temp, name, dir_fd=fd)
            except FileExistsError:
                continue
            os.fsync(fd)
            return "/".join((*parts[:-1], name))
    finally:
        os.close(fd)
    raise BadRequest(f"Too many files are named {parts[-1]!r} in that folder.")


def put(source: Path, name: str, *, dir_fd: int | None = None) -> None:
    """Give the file at ``source`` the name ``name`` (in the folder ``dir_fd``), never
    over another file: FileExistsError if the name is taken. The old name is gone after.

    A hard link, then the old name unlinked: rename() would replace a file that took the
    name meanwhile. Where the filesystem has no hard links, the name is first taken by an
    empty file created exclusively, and the file renamed over that. Blocking.
    """
    try:
        os.link(source, name, dst_dir_fd=dir_fd)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        os.close(os.open(name, flags, 0o600, dir_fd=dir_fd))  # FileExistsError if taken
        try:
            os.rename(source, name, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(name, dir_fd=dir_fd)
            raise
    else:
        source.unlink()


def _enter(parent_fd: int, name: str) -> int:
    """Open (creating if needed) the folder ``name`` under ``parent_fd``; never a symlink."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        raise UnsafeName(
            f"{name!r} in the library is not a folder lanpair may write into."
        ) from exc


def describe(
    path: Path, relpath: str, folder: str, device_id: str | None, sha256: str | None, head: bytes
) -> NewFile:
    """Say what the file at ``relpath`` is from its content (read at ``path``, that file or
    another link to it): kind, type, size, date, dimensions. Blocking."""
    name = relpath.rpartition("/")[2]
    stat = path.lstat()
    sniffed = media.sniff(head, name)
    kind = Kind(sniffed.kind)
    taken = datetime.fromtimestamp(stat.st_mtime, UTC)
    width = height = None
    if kind is Kind.IMAGE:
        try:
            info = media.probe_image(path, name)
            width, height, taken = info.width, info.height, info.taken_at or taken
        except media.MediaError as exc:
            log.warning("cannot read %s as an image: %s", relpath, exc)
    return NewFile(
        relpath=relpath,
        folder=folder,
        device_id=device_id,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        sha256=sha256,
        kind=kind,
        mime=sniffed.mime or mimetypes.guess_type(name)[0] or "application/octet-stream",
        taken_at=taken,
        width=width,
        height=height,
        thumb=ThumbState.PENDING if kind is not Kind.FILE else ThumbState.NONE,
    )


def describe_many(root: Path, relpaths: list[str], folders: dict[str, str]) -> list[NewFile]:
    """Describe files found by a scan; skip (and log) the unreadable. Blocking.

    A file someone is still writing is skipped too: its writer's close is news of its own
    to the watcher (or the next scan's).
    """
    described = []
    for relpath in relpaths:
        folder = relpath.split("/", 1)[0]
        if being_written(root / relpath):
            continue
        try:
            head = read_head(root / relpath)
            described.append(
                describe(root / relpath, relpath, folder, folders.get(folder), None, head)
            )
        except FileNotFoundError:
            continue  # gone since the walk: its deletion is news of its own
        except OSError as exc:
            log.warning("could not index %s: %s", relpath, exc.strerror)
    return described


@dataclass(slots=True)
class Diff:
    """How the disk differs from the index for some paths."""

    changed: list[str]  # new or changed on disk
    gone: list[FileStat]  # indexed, no longer on disk
    files: int  # on disk
    loose: list[str] = field(default_factory=list)  # files directly in the root: not shown
    odd: list[str] = field(default_factory=list)  # names that are not text: not shown

    @classmethod
    def of(cls, indexed: Mapping[str, FileStat], on_disk: Mapping[str, tuple[int, int]]) -> Diff:
        """Compare what the index says with what the disk has."""
        changed = [
            relpath
            for relpath, (size, mtime_ns) in on_disk.items()
            if (known := indexed.get(relpath)) is None
            or known.size != size
            or known.mtime_ns != mtime_ns
        ]
        gone = [stat for relpath, stat in indexed.items() if relpath not in on_disk]
        return cls(changed, gone, len(on_disk))


def walk(root: Path, folder: str, indexed: Mapping[str, FileStat]) -> Diff:
    """Walk every regular file under ``root`` (or its ``folder``), skipping symlinks and
    lanpair's folder, and say how they differ from ``indexed``.

    Files directly in the root belong to no folder and are left out, and so are hidden
    names (lanpair's own folder, .DS_Store, a copier's temp files) and names that are not
    UTF-8 (``Diff.odd``). Compared as it walks, so an unchanged file costs one stat and no
    allocation (100k files: 0.7 s on one core here). Blocking.
    """
    unseen = dict(indexed)
    diff = Diff([], [], 0)
    if folder and not _real_folder(root, folder):
        diff.gone = list(unseen.values())
        return diff
    stack = [folder]
    while stack:
        prefix = stack.pop()
        base = f"{prefix}/" if prefix else ""
        try:
            entries = os.scandir(root / prefix if prefix else root)
        except FileNotFoundError:
            continue  # gone while walking
        except OSError as exc:
            log.warning("cannot read folder %s: %s", prefix or root, exc.strerror)
            continue
        with entries:
            for entry in entries:  # is_file and is_dir without following: no symlinks
                if entry.name.startswith("."):
                    continue
                if not is_text(entry.name):
                    diff.odd.append(base + entry.name)
                elif entry.is_file(follow_symlinks=False):
                    if not prefix:
                        diff.loose.append(entry.name)
                        continue
                    relpath = base + entry.name
                    stat = entry.stat(follow_symlinks=False)
                    diff.files += 1
                    known = unseen.pop(relpath, None)
                    if (
                        known is None
                        or known.size != stat.st_size
                        or known.mtime_ns != stat.st_mtime_ns
                    ):
                        diff.changed.append(relpath)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(base + entry.name)
    diff.gone = list(unseen.values())
    return diff


def shows(relpath: str) -> bool:
    """Say whether a path can be in the gallery: no hidden part, every part text."""
    return not any(part.startswith(".") for part in relpath.split("/")) and is_text(relpath)


def is_text(name: str) -> bool:
    """Say whether a name from the disk is text: not bytes that are not UTF-8, which Python
    gives as lone surrogates and which neither the index nor JSON can hold."""
    if name.isascii():
        return True
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def odd_part(relpath: str) -> str:
    """Return the path down to its first part that is not text (the folder to rename)."""
    parts = relpath.split("/")
    cut = next((n for n, part in enumerate(parts) if not is_text(part)), len(parts) - 1)
    return "/".join(parts[: cut + 1])


def shown(name: str) -> str:
    """Return a name for a log line, stray bytes written as escapes (``caf\\xe9.txt``)."""
    return os.fsencode(name).decode(errors="backslashreplace")


def _real_folder(root: Path, folder: str) -> bool:
    """Say whether ``folder`` is a folder of the library reached without a symlink. Blocking."""
    parts = folder.split("/")
    if parts[0] == INTERNAL_DIR_NAME:
        return False
    path = root
    for part in parts:
        path = path / part
        try:
            mode = path.lstat().st_mode
        except OSError:
            return False
        if not stat_is_dir(mode):
            return False
    return True


def stat_many(root: Path, relpaths: list[str]) -> dict[str, tuple[int, int]]:
    """Return size and mtime of those paths that are files of the library. Blocking.

    A file directly in the root, a symlink, or a path through one, counts as absent.
    """
    found = {}
    for relpath in relpaths:
        folder, _, _name = relpath.rpartition("/")
        if not folder or not _real_folder(root, folder):
            continue
        try:
            stat = (root / relpath).lstat()
        except OSError:
            continue
        if stat_is_file(stat.st_mode):
            found[relpath] = (stat.st_size, stat.st_mtime_ns)
    return found


def loose_files(root: Path, names: list[str]) -> list[str]:
    """Return those of ``names`` (in the root) that are files, not symlinks. Blocking."""
    found = []
    for name in names:
        with contextlib.suppress(OSError):
            if stat_is_file((root / name).lstat().st_mode):
                found.append(name)
    return found


def being_written(path: Path) -> bool:
    """Say whether any process has ``path`` open for writing. Blocking.

    A read lease is refused (EAGAIN) exactly then; where leases are not allowed (another
    owner's file, some filesystems) the answer is "no", and the file's close decides.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def empty(folder: Path) -> None:
    for leftover in folder.iterdir():
        leftover.unlink(missing_ok=True)


def read_head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(HEAD_BYTES)
