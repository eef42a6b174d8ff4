"""Every on-disk location lanpair uses, in one registry; and the one way it replaces a file."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

WEB_DIR_NAME = "web"


@dataclass(frozen=True, slots=True)
class Paths:
    """The files and folders under one data directory."""

    data_dir: Path

    @property
    def database(self) -> Path:
        """Return the SQLite state database."""
        return self.data_dir / "lanpair.db"

    @property
    def tls_dir(self) -> Path:
        """Return the folder holding the TLS key and certificate."""
        return self.data_dir / "tls"

    @property
    def tls_key(self) -> Path:
        """Return the private key, made once and kept (mode 0600)."""
        return self.tls_dir / "key.pem"

    @property
    def tls_cert(self) -> Path:
        """Return the current self-signed certificate."""
        return self.tls_dir / "cert.pem"

    @property
    def thumbs(self) -> Path:
        """Return the thumbnail cache (outside the library, so never shown as photos)."""
        return self.data_dir / "thumbs"

    @property
    def runtime_file(self) -> Path:
        """Return the file a running daemon writes so local commands can reach it."""
        return self.data_dir / "daemon.json"

    @property
    def lock_file(self) -> Path:
        """Return the file a running daemon holds locked: one daemon per data directory."""
        return self.data_dir / "daemon.lock"

    def ensure(self) -> None:
        """Create the data directory (private to the user). Blocking."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tls_dir.mkdir(mode=0o700, exist_ok=True)
        self.thumbs.mkdir(mode=0o700, exist_ok=True)


INTERNAL_DIR_NAME = ".lanpair"


@dataclass(frozen=True, slots=True)
class LibraryPaths:
    """The library folder and lanpair's own folders inside it (same filesystem, not shown)."""

    root: Path

    @property
    def internal(self) -> Path:
        """Return lanpair's folder inside the library; the gallery and the watcher skip it."""
        return self.root / INTERNAL_DIR_NAME

    @property
    def staging(self) -> Path:
        """Return where uploads are written before they are moved into place."""
        return self.internal / "staging"

    @property
    def resumable(self) -> Path:
        """Return where resumable (tus) uploads wait for their remaining bytes."""
        return self.internal / "tus"

    @property
    def trash(self) -> Path:
        """Return where deleted files wait 30 days before they are purged."""
        return self.internal / "trash"

    def ensure(self) -> None:
        """Create the library and lanpair's folders in it. Blocking."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.internal, self.staging, self.resumable, self.trash):
            folder.mkdir(mode=0o700, exist_ok=True)


def web_dir() -> Path:
    """Return the folder of static pages: inside the installed package, or the checkout's."""
    package = Path(__file__).resolve().parent
    installed = package / WEB_DIR_NAME
    if installed.is_dir():
        return installed
    return package.parent / WEB_DIR_NAME


def python_module(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """Return the command and environment that run ``python -m module args`` from this very
    lanpair: with -P, and this package's folder first on the path, the child never picks up
    another lanpair that happens to sit in the working directory."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return [sys.executable, "-P", "-m", module, *args], {**os.environ, "PYTHONPATH": path}


def replace_file(
    path: Path,
    content: bytes | Callable[[IO[bytes]], None],
    *,
    mode: int = 0o644,
    durable: bool = False,
) -> None:
    """Replace ``path`` with new content, whole: a reader sees the old file or the new one,
    never half of one. Blocking.

    ``content`` is the bytes, or a function that writes them to the open file. The new
    file gets ``mode`` whatever the umask. With ``durable``, the bytes and the new name
    are on disk when this returns (the file and its folder are fsynced).
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if isinstance(content, bytes):
                out.write(content)
            else:
                content(out)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        with contextlib.suppress(OSError):  # not every platform can open a folder
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
