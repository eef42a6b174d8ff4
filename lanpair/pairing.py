"""The pairing lifecycle: one-time codes, device tokens, expiry and revocation.

Tokens are 24 random bytes in URL-safe base64. Only their SHA-256 is stored; a token
exists in clear only in the response that hands it out.

Hand-offs. A phone pairs on the PC's IP, but the address worth bookmarking is
``<host>.local``, and a cookie belongs to one host. So a paired device may ask for a
hand-off: a one-time token, living two minutes, that the page on the other host spends
(by POST, once, rate-limited like confirm) to get a token of its own for that host. The
device keeps one pairing: the new token is one more row of ``device_tokens`` pointing at
the same ``devices`` row, so status, expiry, revocation and replacement by a re-pair are
the device's and hold for every token it has; none outlives it or lasts longer. Handing
over the original token instead would need it in clear (only its hash is kept), and
would put a month-long credential in a link; a fresh one travels only in Set-Cookie.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lanpair.clock import Clock, to_iso
from lanpair.errors import (
    BadRequest,
    CodeExpired,
    CodeUsed,
    HandoffExpired,
    HandoffUsed,
    NotFound,
    NotOwner,
    NotPaired,
    TooManyAttempts,
    UnknownCode,
    UnknownHandoff,
)
from lanpair.events import EventHub, Presence
from lanpair.models import Caller, Confirmation, Device, DeviceStatus, PendingPairing
from lanpair.names import clean_text
from lanpair.store import ConfirmOutcome, HandoffOutcome, Store

log = logging.getLogger(__name__)

TOKEN_BYTES = 24
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
DEVICE_ID_RE = re.compile(r"dev_[a-z0-9]{12}")
MAX_NAME_CHARS = 64
MAX_CLIENT_ID_CHARS = 128
SEEN_EVERY = timedelta(seconds=60)
KNOWN_FOR = timedelta(seconds=5)
MAX_KNOWN = 10_000
HANDOFF_TTL_S = 120.0
MAX_HOST_CHARS = 255


@dataclass(frozen=True, slots=True)
class Handoff:
    """A fresh one-time hand-off of a device's pairing; the token exists in memory only."""

    token: str
    device_id: str
    expires_at: datetime


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
    """Return a display name cleaned by names.clean_text.

    Raises BadRequest when nothing is left or it is longer than ``limit`` characters.
    """
    if not isinstance(raw, str):
        raise BadRequest(f"{field} must be a string.")
    text = clean_text(raw)
    if not text:
        raise BadRequest(f"{field} must not be empty.")
    if len(text) > limit:
        raise BadRequest(f"{field} must be at most {limit} characters.")
    return text


def device_record(device: Device, now: datetime) -> dict[str, object]:
    """Return a device as the owner's views show it (never its token)."""
    return {
        "device_id": device.device_id,
        "device_name": device.device_name,
        "status": device.status_at(now).value,
        "confirmed_at": to_iso(device.confirmed_at),
        "expires_at": to_iso(device.expires_at),
        "revoked_at": to_iso(device.revoked_at),
        "last_seen": to_iso(device.last_seen),
        "last_sync": to_iso(device.last_sync),
        "file_count": device.file_count,
    }


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
    """Count attempts per address bucket in a sliding window; time and memory are bounded."""

    def __init__(
        self, clock: Clock, *, limit: int = 10, window_s: float = 300, max_keys: int = 4096
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._window = timedelta(seconds=window_s)
        self._max_keys = max_keys
        self._attempts: OrderedDict[str, deque[datetime]] = OrderedDict()

    def allows(self, address: str) -> bool:
        """Return whether ``address`` is below its limit."""
        return len(self._recent(address_key(address))) < self._limit

    def check(self, address: str) -> None:
        """Raise TooManyAttempts while ``address`` is at its limit."""
        recent = self._recent(address_key(address))
        if len(recent) >= self._limit:
            retry = recent[0] + self._window - self._clock.now()
            raise TooManyAttempts(retry_after_s=max(1.0, retry.total_seconds()))

    def record(self, address: str) -> int:
        """Count one attempt from ``address``; return how many are in the window (≤ limit)."""
        key = address_key(address)
        recent = self._recent(key)
        recent.append(self._clock.now())
        self._attempts[key] = recent
        self._attempts.move_to_end(key)
        while len(self._attempts) > self._max_keys:
            self._attempts.popitem(last=False)
        return len(recent)

    def forgive(self, address: str) -> None:
        """Take back the newest attempt from ``address`` (it succeeded)."""
        recent = self._attempts.get(address_key(address))
        if recent:
            recent.pop()

    def _recent(self, key: str) -> deque[datetime]:
        recent = self._attempts.get(key)
        if recent is None:
            return deque(maxlen=self._limit)
        since = self._clock.now() - self._window
        while recent and recent[0] <= since:
            recent.popleft()
        return recent


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
        hub: EventHub | None = None,
        online_after_request_s: float = 60.0,
        handoff_ttl_s: float = HANDOFF_TTL_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._hub = hub or EventHub(clock.now)
        self.presence = Presence(self._hub, recent_s=online_after_request_s)
        self._pending_ttl = timedelta(seconds=pending_ttl_s)
        self._pairing_ttl = timedelta(seconds=pairing_ttl_s)
        self._handoff_ttl = timedelta(seconds=handoff_ttl_s)
        self._limiter = limiter or AttemptLimiter(clock)
        self._auth_failures = AttemptLimiter(clock, limit=1, window_s=60)
        self._seen: dict[str, datetime] = {}
        self._uploading: dict[str, set[asyncio.Task[Any]]] = {}  # device id -> its uploads
        # Token hash -> device, briefly: a gallery scroll needs no database read per request.
        # Every change to pairings goes through this class, which forgets them all.
        self._known: dict[bytes, tuple[Device, datetime]] = {}
        self._generation = 0

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
        if token is not None and not TOKEN_RE.fullmatch(token):
            raise ValueError("a pairing token must come from new_token()")
        now = self._clock.now()
        token = token or new_token()
        await self._store.pairings.add_pending(
            hash_token(token), now, now + self._pending_ttl, client_addr
        )
        log.info("issued a pairing code, valid until %s", (now + self._pending_ttl).isoformat())
        return PendingPairing(token=token, expires_at=now + self._pending_ttl)

    async def confirm(
        self, token: str, device_name: object, client_device_id: object, client_addr: str
    ) -> Confirmation:
        """Spend a pairing code and pair the device that holds it.

        Raises TooManyAttempts, UnknownCode, CodeExpired, CodeUsed or BadRequest.
        """
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
        # Check and count before the first await, so parallel guesses cannot pass the limit.
        self._limiter.check(client_addr)
        self._limiter.record(client_addr)
        outcome, replaced = await self._store.pairings.confirm(
            hash_token(token) if TOKEN_RE.fullmatch(token) else None,
            now,
            device,
            hash_token(device_token),
            client_addr,
        )
        self._forget_tokens()  # a confirm may have replaced the same client's old pairing
        if outcome is not ConfirmOutcome.CONFIRMED:
            raise {
                ConfirmOutcome.UNKNOWN: UnknownCode,
                ConfirmOutcome.EXPIRED: CodeExpired,
                ConfirmOutcome.USED: CodeUsed,
            }[outcome]()
        self._limiter.forgive(client_addr)
        log.info("paired %r as %s from %s", name, device.device_id, client_addr)
        self._hub.publish(
            "device.paired", {"device_id": device.device_id, "device_name": device.device_name}
        )
        for old in replaced:
            self._hub.close(old)
            self.presence.gone(old)
        for old in replaced:
            log.info("pairing %s replaced by the same client's new pairing", old)
        return Confirmation(device=device, device_token=device_token)

    async def hand_off(self, caller: Caller, device_id: str | None, client_addr: str) -> Handoff:
        """Issue a one-time hand-off of the calling device's pairing to another host name.

        It replaces the device's unspent ones. Raises BadRequest (the owner has no pairing
        to hand over), NotOwner (``device_id`` names another device).
        """
        device = caller.device
        if device is None:
            raise BadRequest("Only a paired device has a pairing to hand over.")
        if device_id is not None and device_id != device.device_id:
            raise NotOwner("A device may hand over only its own pairing.")
        now = self._clock.now()
        token = new_token()
        expires = now + self._handoff_ttl
        await self._store.pairings.add_handoff(
            hash_token(token), device.device_id, now, expires, client_addr
        )
        log.info("issued a hand-off for %s, valid until %s", device.device_id, to_iso(expires))
        return Handoff(token=token, device_id=device.device_id, expires_at=expires)

    async def redeem_handoff(self, token: str, host: str, client_addr: str) -> Confirmation:
        """Spend a hand-off: give its device one more token, for the host name ``host``.

        Raises TooManyAttempts, UnknownHandoff, HandoffExpired, HandoffUsed or NotPaired.
        """
        device_token = new_token()
        # Check and count before the first await, so parallel guesses cannot pass the limit.
        self._limiter.check(client_addr)
        self._limiter.record(client_addr)
        outcome, device = await self._store.pairings.redeem_handoff(
            hash_token(token) if TOKEN_RE.fullmatch(token) else None,
            self._clock.now(),
            hash_token(device_token),
            host.lower()[:MAX_HOST_CHARS],
            client_addr,
        )
        self._forget_tokens()  # the device's earlier token for this host is gone
        if outcome is not HandoffOutcome.REDEEMED or device is None:
            raise {
                HandoffOutcome.UNKNOWN: UnknownHandoff,
                HandoffOutcome.EXPIRED: HandoffExpired,
                HandoffOutcome.USED: HandoffUsed,
                HandoffOutcome.NOT_PAIRED: NotPaired,
            }.get(outcome, NotPaired)()
        self._limiter.forgive(client_addr)
        log.info("handed %s over to %s from %s", device.device_id, host, client_addr)
        return Confirmation(device=device, device_token=device_token)

    async def authenticate(self, token: str, client_addr: str) -> Device:
        """Return the device a token belongs to. Raises NotPaired (and audits it)."""
        now = self._clock.now()
        found: tuple[Device, bytes] | None = None
        if TOKEN_RE.fullmatch(token):  # anything else is none of ours (nor always encodable)
            token_hash = hash_token(token)
            cached = self._known.get(token_hash)
            if cached is not None and now - cached[1] < KNOWN_FOR:
                found = (cached[0], token_hash)
            else:
                generation = self._generation
                found = await self._store.pairings.device_by_token(token_hash)
                if found is not None and generation == self._generation:  # nothing changed
                    if len(self._known) >= MAX_KNOWN:
                        self._known.clear()
                    self._known[token_hash] = (found[0], now)
        if found is not None:
            device, stored = found
            if hmac.compare_digest(stored, hash_token(token)) and (
                device.status_at(now) is DeviceStatus.CONFIRMED
            ):
                await self._mark_seen(device, now)
                self.presence.seen(device.device_id, device.device_name)
                return device
        # One audit line and one log line per address and minute, however hard it knocks.
        if self._auth_failures.allows(client_addr):
            self._auth_failures.record(client_addr)
            reason = "unknown token" if found is None else found[0].status_at(now).value
            await self._store.pairings.audit(
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
        by = "by owner" if caller.owner else "by itself"
        revoked = await self._store.pairings.revoke(device.device_id, now, client_addr, by)
        self._forget_tokens()
        if revoked is None:
            raise NotFound("No paired device has that id.")
        self._seen.pop(device.device_id, None)
        self._hub.close(device.device_id)  # its open sockets end now, with 4401
        uploads = self._uploading.pop(device.device_id, set())
        for task in uploads:
            task.cancel()  # and its uploads: nothing of theirs is kept
        self._hub.publish("device.revoked", {"device_id": device.device_id})
        self.presence.gone(device.device_id)
        stopped = f", stopping {len(uploads)} upload(s) under way" if uploads else ""
        log.info("revoked %s (%r)%s", device.device_id, device.device_name, stopped)
        return revoked

    @contextlib.contextmanager
    def uploading(self, device: Device | None) -> Iterator[None]:
        """Mark the running task as an upload of ``device``'s: revoking the device cancels
        it (the owner's, ``None``, are never cancelled)."""
        task = asyncio.current_task()
        if device is None or task is None:
            yield
            return
        tasks = self._uploading.setdefault(device.device_id, set())
        tasks.add(task)
        try:
            yield
        finally:
            tasks.discard(task)
            if not tasks and self._uploading.get(device.device_id) is tasks:
                del self._uploading[device.device_id]

    async def devices(self) -> list[Device]:
        """Return every device ever paired, with its status as of now."""
        return await self._store.pairings.devices()

    def valid(self, device: Device) -> bool:
        """Say whether a device's pairing still holds now (its expiry not passed)."""
        return self.status(device) is DeviceStatus.CONFIRMED

    def status(self, device: Device) -> DeviceStatus:
        """Return a device's status as of now."""
        return device.status_at(self._clock.now())

    def record(self, device: Device) -> dict[str, object]:
        """Return a device as the owner's views show it, as of now."""
        return {
            **device_record(device, self._clock.now()),
            "online": self.presence.is_online(device.device_id),
        }

    async def _resolve(self, target: str) -> Device | None:
        if DEVICE_ID_RE.fullmatch(target):
            return await self._store.pairings.device(target)
        if TOKEN_RE.fullmatch(target):
            found = await self._store.pairings.device_by_token(hash_token(target))
            return found[0] if found else None
        return None

    def _forget_tokens(self) -> None:
        self._known.clear()
        self._generation += 1

    async def _mark_seen(self, device: Device, now: datetime) -> None:
        last = self._seen.get(device.device_id)
        if last is None or now - last >= SEEN_EVERY:
            self._seen[device.device_id] = now
            await self._store.pairings.touch(device.device_id, now)
