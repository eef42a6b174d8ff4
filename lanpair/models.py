"""Plain data that crosses layers: devices, pairings, identities."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from lanpair import __version__


class DeviceStatus(StrEnum):
    """Where a paired device stands."""

    CONFIRMED = "confirmed"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Device:
    """A phone or computer paired with this PC."""

    device_id: str
    device_name: str
    client_device_id: str
    status: DeviceStatus
    confirmed_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    last_seen: datetime | None = None
    last_sync: datetime | None = None
    file_count: int = 0
    folder: str | None = None

    def status_at(self, now: datetime) -> DeviceStatus:
        """Return the status as of ``now`` (a confirmed pairing past its expiry is expired)."""
        if self.status is DeviceStatus.CONFIRMED and now >= self.expires_at:
            return DeviceStatus.EXPIRED
        return self.status


@dataclass(frozen=True, slots=True)
class PendingPairing:
    """A freshly issued one-time pairing code; the token exists in memory only."""

    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A completed pairing: the device and its token, shown to it exactly once."""

    device: Device
    device_token: str


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the owner (this PC), a paired device, or nobody known."""

    owner: bool = False
    device: Device | None = None

    @property
    def known(self) -> bool:
        """Return whether the caller is the owner or a paired device."""
        return self.owner or self.device is not None


ANONYMOUS = Caller()
OWNER = Caller(owner=True)


@dataclass(slots=True)
class Site:
    """What this daemon is and where phones reach it; the daemon keeps it current."""

    name: str
    device_id: str
    hostname: str
    port: int
    scheme: str
    ip: str
    fingerprint: str | None
    extra_names: tuple[str, ...] = ()
    version: str = __version__

    @property
    def local_name(self) -> str:
        """Return ``<hostname>.local``."""
        return f"{self.hostname}.local"

    def own_names(self) -> frozenset[str]:
        """Return the Host names under which this PC's browser talks to lanpair."""
        return frozenset(
            {
                "localhost",
                "127.0.0.1",
                "::1",
                self.local_name,
                self.hostname,
                self.ip,
                *(n.lower().rstrip(".") for n in self.extra_names),
            }
        )

    def url(self, path: str = "/", host: str | None = None) -> str:
        """Return an absolute URL on this daemon."""
        host = host or self.ip
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}{path}"


class Kind(StrEnum):
    """What a file is, judged from its content."""

    IMAGE = "image"
    VIDEO = "video"
    FILE = "file"


class ThumbState(StrEnum):
    """Where a file's thumbnail stands."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    NONE = "none"  # not a picture: the gallery shows an icon


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file of the library, as the index knows it."""

    id: int
    relpath: str
    folder: str
    device_id: str | None
    name: str
    size: int
    mtime_ns: int
    sha256: str | None
    kind: Kind
    mime: str
    width: int | None
    height: int | None
    taken_at: datetime
    duration_s: float | None
    thumb: ThumbState
    added_at: datetime


@dataclass(frozen=True, slots=True)
class NewFile:
    """What the library knows of a file it is about to index."""

    relpath: str
    folder: str
    device_id: str | None
    size: int
    mtime_ns: int
    sha256: str | None
    kind: Kind
    mime: str
    taken_at: datetime
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    thumb: ThumbState = ThumbState.PENDING

    @property
    def name(self) -> str:
        """Return the file's own name (the last part of its path)."""
        return self.relpath.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class TrashedFile:
    """A deleted file, kept in the trash folder until it is restored or purged."""

    file_id: int
    relpath: str
    folder: str
    trash_name: str
    device_id: str | None
    size: int
    sha256: str | None
    deleted_at: datetime
    deleted_by: str | None

    @property
    def name(self) -> str:
        """Return the file's own name."""
        return self.relpath.rsplit("/", 1)[-1]
