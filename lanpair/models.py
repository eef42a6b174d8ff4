"""Plain data that crosses layers: devices, pairings, identities."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


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
