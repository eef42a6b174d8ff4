"""The pairing lifecycle: one-time codes, device tokens, expiry and revocation.

Tokens are 24 random bytes in URL-safe base64. Only their SHA-256 is stored; a token
exists in clear only in the response that hands it out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import unicodedata
from collections import OrderedDict
from datetime import datetime, timedelta

from lanpair.clock import Clock
from lanpair.errors import (
    BadRequest,
    CodeExpired,
    CodeUsed,
    NotFound,
    NotOwner,
    NotPaired,
    TooManyAttempts,
    UnknownCode,
)
from lanpair.models import Caller, Confirmation, Device, DeviceStatus, PendingPairing
from lanpair.store import ConfirmOutcome, Store

log = logging.getLogger(__name__)

TOKEN_BYTES = 24
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")
DEVICE_ID_RE = re.compile(r"^dev_[a-z0-9]{12}$")
MAX_NAME_CHARS = 64
MAX_CLIENT_ID_CHARS = 128
SEEN_EVERY = timedelta(seconds=60)
ZERO_WIDTH_JOINER = "\u200d"  # joins emoji sequences; other format characters go


def new_token() -> str:
    """Return a fresh token: 24 random bytes, URL-safe base64 (32 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode()


def hash_token(token: str) -> bytes:
    """Return the SHA-256 that is stored in place of a token."""
    return hashlib.sha256(token.encode()).digest()


def new_device_id() -> str:
    """Return a server-assigned device id."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "dev_" + "".join(secrets.choice(alphabet) for _ in range(12))


def clean_name(raw: object, field: str, limit: int = MAX_NAME_CHARS) -> str:
    """Return a display name: no control or direction-override characters, NFC, one-spaced.

    Raises BadRequest when nothing is left or it is longer than ``limit`` characters.
    """
    if not isinstance(raw, str):
        raise BadRequest(f"{field} must be a string.")
    kept = []
    for ch in raw:
        category = unicodedata.category(ch)
        if ch.isspace():
            kept.append(" ")
        elif ch == ZERO_WIDTH_JOINER or category[0] != "C":
            kept.append(ch)
    text = " ".join(unicodedata.normalize("NFC", "".join(kept)).split())
    if not text:
        raise BadRequest(f"{field} must not be empty.")
    if len(text) > limit:
        raise BadRequest(f"{field} must be at most {limit} characters.")
    return text


def address_key(address: str) -> str:
    """Return the rate-limit bucket of a client address: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class AttemptLimiter:
    """Count failures per address bucket in a sliding window; memory is bounded."""

    def __init__(
        self, clock: Clock, *, limit: int = 10, window_s: float = 300, max_keys: int = 4096
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._window = timedelta(seconds=window_s)
        self._max_keys = max_keys
        self._failures: OrderedDict[str, list[datetime]] = OrderedDict()

    def check(self, address: str) -> None:
        """Raise TooManyAttempts while ``address`` is over its limit."""
        recent = self._recent(address_key(address))
        if len(recent) >= self._limit:
            retry = recent[0] + self._window - self._clock.now()
            raise TooManyAttempts(retry_after_s=max(1.0, retry.total_seconds()))

    def fail(self, address: str) -> int:
        """Record a failure from ``address``; return how many are in the window."""
        key = address_key(address)
        recent = self._recent(key)
        recent.append(self._clock.now())
        self._failures[key] = recent
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
        return len(recent)

    def _recent(self, key: str) -> list[datetime]:
        since = self._clock.now() - self._window
        return [t for t in self._failures.get(key, []) if t > since]


class Pairing:
    """Issue pairing codes, confirm devices, authenticate and revoke them."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        pending_ttl_s: float,
        pairing_ttl_s: float,
        limiter: AttemptLimiter | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._pending_ttl = timedelta(seconds=pending_ttl_s)
        self._pairing_ttl = timedelta(seconds=pairing_ttl_s)
        self._limiter = limiter or AttemptLimiter(clock)
        self._auth_failures = AttemptLimiter(clock, limit=1, window_s=60)
        self._seen: dict[str, datetime] = {}

    @property
    def pairing_ttl_s(self) -> float:
        """Return how long a confirmed pairing lasts, in seconds."""
        return self._pairing_ttl.total_seconds()

    def check_attempts(self, client_addr: str) -> None:
        """Raise TooManyAttempts while ``client_addr`` has failed too often."""
        self._limiter.check(client_addr)

    async def generate(
        self, client_addr: str | None = None, *, token: str | None = None
    ) -> PendingPairing:
        """Issue a one-time pairing code (``token``: one drawn ahead of time by new_token)."""
        now = self._clock.now()
        token = token or new_token()
        await self._store.add_pending(hash_token(token), now, now + self._pending_ttl)
        await self._store.audit("generate", now, client_addr=client_addr)
        await self._store.purge_pending(now - timedelta(days=1))
        log.info("issued a pairing code, valid until %s", (now + self._pending_ttl).isoformat())
        return PendingPairing(token=token, expires_at=now + self._pending_ttl)

    async def confirm(
        self, token: str, device_name: object, client_device_id: object, client_addr: str
    ) -> Confirmation:
        """Spend a pairing code and pair the device that holds it.

        Raises TooManyAttempts, UnknownCode, CodeExpired, CodeUsed or BadRequest.
        """
        self._limiter.check(client_addr)
        name = clean_name(device_name, "device_name")
        client_id = clean_name(client_device_id, "device_id", MAX_CLIENT_ID_CHARS)
        now = self._clock.now()
        device = Device(
            device_id=new_device_id(),
            device_name=name,
            client_device_id=client_id,
            status=DeviceStatus.CONFIRMED,
            confirmed_at=now,
            expires_at=now + self._pairing_ttl,
        )
        device_token = new_token()
        if TOKEN_RE.match(token):
            outcome, replaced = await self._store.confirm(
                hash_token(token), now, device, hash_token(device_token)
            )
        else:
            outcome, replaced = ConfirmOutcome.UNKNOWN, []
        if outcome is not ConfirmOutcome.CONFIRMED:
            self._limiter.fail(client_addr)
            await self._store.audit(
                "confirm_failed", now, client_addr=client_addr, detail=outcome.value
            )
            raise {
                ConfirmOutcome.UNKNOWN: UnknownCode,
                ConfirmOutcome.EXPIRED: CodeExpired,
                ConfirmOutcome.USED: CodeUsed,
            }[outcome]()
        await self._store.audit(
            "confirm",
            now,
            device_id=device.device_id,
            client_addr=client_addr,
            detail=f"replaced {', '.join(replaced)}" if replaced else None,
        )
        log.info("paired %r as %s from %s", name, device.device_id, client_addr)
        for old in replaced:
            log.info("pairing %s replaced by the same client's new pairing", old)
        return Confirmation(device=device, device_token=device_token)

    async def authenticate(self, token: str, client_addr: str) -> Device:
        """Return the device a token belongs to. Raises NotPaired (and audits it)."""
        now = self._clock.now()
        found = (
            await self._store.device_by_token(hash_token(token)) if TOKEN_RE.match(token) else None
        )
        if found is not None:
            device, stored = found
            if hmac.compare_digest(stored, hash_token(token)) and (
                device.status_at(now) is DeviceStatus.CONFIRMED
            ):
                await self._mark_seen(device, now)
                return device
        if self._auth_failures.fail(client_addr) == 1:
            reason = "unknown token" if found is None else found[0].status_at(now).value
            await self._store.audit(
                "auth_failed",
                now,
                device_id=found[0].device_id if found else None,
                client_addr=client_addr,
                detail=reason,
            )
            log.warning("refused a device token from %s (%s)", client_addr, reason)
        raise NotPaired()

    async def revoke(self, target: str, caller: Caller, client_addr: str) -> Device:
        """Revoke a pairing by device id or by its token; a device may revoke only itself.

        Raises NotFound, NotOwner.
        """
        device = await self._resolve(target)
        if device is None:
            raise NotFound("No paired device has that id.")
        if not caller.owner and (
            caller.device is None or caller.device.device_id != device.device_id
        ):
            raise NotOwner("A device may revoke only its own pairing.")
        now = self._clock.now()
        revoked = await self._store.revoke(device.device_id, now)
        if revoked is None:
            raise NotFound("No paired device has that id.")
        self._seen.pop(device.device_id, None)
        await self._store.audit(
            "revoke",
            now,
            device_id=device.device_id,
            client_addr=client_addr,
            detail="by owner" if caller.owner else "by itself",
        )
        log.info("revoked %s (%r)", device.device_id, device.device_name)
        return revoked

    async def devices(self) -> list[Device]:
        """Return every device ever paired, with its status as of now."""
        return await self._store.devices()

    def status(self, device: Device) -> DeviceStatus:
        """Return a device's status as of now."""
        return device.status_at(self._clock.now())

    async def _resolve(self, target: str) -> Device | None:
        if DEVICE_ID_RE.match(target):
            return await self._store.device(target)
        if TOKEN_RE.match(target):
            found = await self._store.device_by_token(hash_token(target))
            return found[0] if found else None
        return None

    async def _mark_seen(self, device: Device, now: datetime) -> None:
        last = self._seen.get(device.device_id)
        if last is None or now - last >= SEEN_EVERY:
            self._seen[device.device_id] = now
            await self._store.touch(device.device_id, now)
