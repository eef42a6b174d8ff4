"""The PCs this device is paired with: where each is, its pinned key and our token.

One JSON file, ``pairings.json`` in the user's config dir (``~/.config/lanpair``), mode
0600 because it holds device tokens, always replaced whole (temp file, fsync, rename) so a
crash never leaves half of it. Every change re-reads it with ``pairings.lock`` held (an
``flock``), so two commands at once (a pull updating its last sync while a pairing is
stored) never lose each other's change. Push and pull keep their resume state in the
user's state dir (``~/.local/state/lanpair``). ``LANPAIR_CLIENT_DIR`` (or
``--client-dir``) puts both in one folder instead: tests do, and so can a user with
several identities.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lanpair.errors import LanpairError, UnknownPC
from lanpair.paths import replace_file

CLIENT_DIR_ENV = "LANPAIR_CLIENT_DIR"
FILE_VERSION = 1
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


@dataclass(frozen=True, slots=True)
class ClientPaths:
    """Where the client side keeps its credentials and its resume state."""

    config_dir: Path
    state_dir: Path

    @classmethod
    def default(cls, override: Path | None = None) -> ClientPaths:
        """Return the platform's dirs, or ``override`` (else $LANPAIR_CLIENT_DIR) for both."""
        chosen = override or (
            Path(os.environ[CLIENT_DIR_ENV]) if os.environ.get(CLIENT_DIR_ENV) else None
        )
        if chosen is not None:
            return cls(chosen, chosen / "state")
        import platformdirs

        return cls(
            Path(platformdirs.user_config_dir("lanpair")),
            Path(platformdirs.user_state_dir("lanpair")),
        )

    @property
    def pairings(self) -> Path:
        """Return the credentials file."""
        return self.config_dir / "pairings.json"

    def push_state(self, pc_id: str) -> Path:
        """Return the resume state of pushes to one PC (tus upload URLs, cached hashes)."""
        return self.state_dir / f"push-{_file_safe(pc_id)}.json"

    def pull_state(self, pc_id: str) -> Path:
        """Return which gallery files of one PC were pulled where."""
        return self.state_dir / f"pull-{_file_safe(pc_id)}.json"


def now_iso() -> str:
    """Return the time now as stored in the file (UTC, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _file_safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:64]


@dataclass(frozen=True, slots=True)
class PairedPC:
    """One PC this device is paired with."""

    name: str  # the PC's display name
    pc_id: str  # the PC's own device id (the QR's ``id``, mDNS TXT ``id``)
    fingerprint: str | None  # the pinned SPKI SHA-256; None for a plain-HTTP daemon
    scheme: str
    address: str  # the IP (or name) it was last reached at
    port: int
    local_name: str  # <host>.local
    device_id: str  # our id on that PC (dev_…)
    device_name: str
    token: str
    paired_at: str
    expires_at: str | None = None
    last_sync: str | None = None

    @property
    def base_url(self) -> str:
        """Return ``scheme://address:port`` (IPv6 in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}"

    def public(self) -> dict[str, Any]:
        """Return everything but the token (for --json output)."""
        record = asdict(self)
        record.pop("token")
        return record


@dataclass(slots=True)
class Book:
    """The credentials file's content: this client's id and its pairings."""

    client_id: str = field(default_factory=lambda: "cli_" + secrets.token_urlsafe(12))
    pcs: list[PairedPC] = field(default_factory=list)

    def pick(self, wanted: str | None) -> PairedPC:
        """Return the PC called ``wanted`` (name, id or .local name); the only one if None."""
        if not self.pcs:
            raise UnknownPC(
                "This device is not paired with any PC yet: run `lanpair pair` with the text "
                "of a pairing QR code (`lanpair qr` on the PC shows one)."
            )
        if wanted is None:
            if len(self.pcs) == 1:
                return self.pcs[0]
            raise UnknownPC(
                f"This device is paired with {len(self.pcs)} PCs; say which with --to/--from: "
                + ", ".join(repr(pc.name) for pc in self.pcs)
            )
        key = wanted.casefold().removesuffix(".")
        for pc in self.pcs:
            if key in {pc.name.casefold(), pc.pc_id.casefold(), pc.local_name.casefold()}:
                return pc
        raise UnknownPC(
            f"No paired PC is called {wanted!r}; paired: "
            + ", ".join(repr(pc.name) for pc in self.pcs)
        )

    def put(self, pc: PairedPC) -> None:
        """Add a pairing, replacing any earlier one with the same PC."""
        self.pcs = [old for old in self.pcs if old.pc_id != pc.pc_id] + [pc]


def load(path: Path) -> Book:
    """Read the credentials file (an empty book if there is none). Blocking."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Book()
    except (OSError, ValueError) as exc:
        raise LanpairError(f"Cannot read the pairings file {path}: {exc}") from exc
    known = {f.name for f in fields(PairedPC)}
    try:
        return Book(
            client_id=str(raw["client_id"]),
            pcs=[PairedPC(**{k: v for k, v in pc.items() if k in known}) for pc in raw["pcs"]],
        )
    except (KeyError, TypeError) as exc:
        raise LanpairError(f"The pairings file {path} is damaged ({exc}); pair again.") from exc


def save(path: Path, book: Book) -> None:
    """Write the credentials file atomically, readable by this user only. Blocking."""
    write_private_json(
        path,
        {
            "version": FILE_VERSION,
            "client_id": book.client_id,
            "pcs": [asdict(pc) for pc in book.pcs],
        },
    )


@contextmanager
def editing(path: Path, *, client_id: str | None = None) -> Iterator[Book]:
    """Read the credentials file, let the caller change the book, and save it, all with the
    file's lock held: another lanpair command's change in between is never lost. A file not
    there yet starts with ``client_id`` (the one a pairing has just sent), if given.
    Nothing is saved if the caller raises. Blocking.
    """
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    lock = os.open(path.with_name("pairings.lock"), os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor closes
        new = not path.exists()
        book = load(path)
        if new and client_id is not None:
            book.client_id = client_id
        yield book
        save(path, book)
    finally:
        os.close(lock)


def update(path: Path, pc_id: str, **changes: Any) -> PairedPC | None:
    """Change some fields of one stored pairing. Blocking."""
    with editing(path) as book:
        for pc in book.pcs:
            if pc.pc_id == pc_id:
                changed = replace(pc, **changes)
                book.put(changed)
                return changed
    return None


def write_private_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, mode 0600, never leaving half a file. Blocking."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    text = json.dumps(data, indent=1).encode()
    replace_file(path, text, mode=0o600, durable=True)


def read_json(path: Path) -> Any:
    """Return a state file's JSON, or None if it is missing or unreadable. Blocking."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
