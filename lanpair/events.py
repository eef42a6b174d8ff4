"""The event hub: every change, numbered, fanned out to subscribers that never slow it down.

``publish`` never blocks and never waits for a subscriber: each has a bounded queue, and
one that falls behind is dropped (it reconnects with ``since`` and gets what it missed
from the ring buffer, or a ``resync`` when that is gone too).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lanpair.clock import to_iso
from lanpair.models import Device

log = logging.getLogger(__name__)

CLOSE_NOT_PAIRED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_GOING_AWAY = 1001
PROGRESS_EVERY_S = 0.25  # upload.progress, per file: often enough for a smooth bar


@dataclass(frozen=True, slots=True)
class Event:
    """One change: sequential id, type (``file.added``…), when, and what, as JSON.

    Only the text is kept: the ring holds 4096 events, and with each item's dict kept
    beside its JSON a full ring of ``file.added`` took 5.4 MiB, against 1.7 MiB as text
    alone. ``data`` reads it back (tests do; the WebSocket sends the text).
    """

    id: int
    type: str
    time: datetime
    text: str  # as DESIGN.md's JSON {id, type, time, data}: written once, sent to all

    @property
    def data(self) -> dict[str, Any]:
        """What the event says, read back from its text."""
        data: dict[str, Any] = json.loads(self.text)["data"]
        return data


def encode(id_: int, type_: str, time: datetime | None, data: dict[str, Any]) -> str:
    """Write an event (or a resync) as DESIGN.md's JSON: {id, type, time, data}."""
    return json.dumps({"id": id_, "type": type_, "time": to_iso(time), "data": data})


class Closed(Exception):
    """The subscription ended; ``code`` says why (a WebSocket close code)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded queue of events."""

    key: str | None
    queue: asyncio.Queue[Event | None]
    closed: int | None = None
    resync: bool = False
    pending: list[Event] = field(default_factory=list)

    async def next(self) -> Event:
        """Return the next event. Raises Closed once the subscription has ended."""
        if self.pending:
            return self.pending.pop(0)
        event = await self.queue.get()
        if event is None or self.closed is not None:
            raise Closed(self.closed or CLOSE_GOING_AWAY)
        return event

    def ready(self) -> list[Event]:
        """Return the events already waiting, without waiting for more (a burst at once)."""
        taken, self.pending = self.pending, []
        while self.closed is None and not self.queue.empty():
            event = self.queue.get_nowait()
            if event is None:
                break
            taken.append(event)
        return taken


class EventHub:
    """Number events, keep the last few, hand each to every subscriber."""

    def __init__(
        self, clock: Callable[[], datetime], *, ring: int = 4096, queue_size: int = 256
    ) -> None:
        self._clock = clock
        # Ids start at the time in ms, so a restarted daemon's ids are all new: a client
        # coming back with an id of the old run gets a resync, never someone else's events.
        first = int(clock().timestamp() * 1000)
        self._ids = itertools.count(first)
        self._ring: deque[Event] = deque(maxlen=ring)
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self.last_id = first - 1

    def start_at(self, first_id: int) -> None:
        """Number events from ``first_id`` on (before anything is published)."""
        if first_id > self.last_id:
            self._ids = itertools.count(first_id)
            self.last_id = first_id - 1

    def publish(self, type_: str, data: dict[str, Any]) -> Event:
        """Send an event to every subscriber now. Loop-only; never blocks."""
        event_id, now = next(self._ids), self._clock()
        event = Event(event_id, type_, now, encode(event_id, type_, now, data))
        self.last_id = event.id
        self._ring.append(event)
        for subscription in list(self._subscriptions):
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                log.info("dropped a subscriber that fell behind (event %d)", event.id)
                self._close(subscription, CLOSE_TOO_SLOW)
        return event

    def subscribe(self, *, key: str | None = None, since: int | None = None) -> Subscription:
        """Start a subscription; with ``since``, replay what came after that id first.

        If the events after ``since`` are no longer kept, the subscription starts with
        ``resync`` set: the client must reload everything.
        """
        subscription = Subscription(key=key, queue=asyncio.Queue(self._queue_size))
        if since is not None and since > self.last_id:
            subscription.resync = True  # an id this run never gave out: the daemon restarted
        elif since is not None and since < self.last_id:
            oldest = self._ring[0].id if self._ring else self.last_id + 1
            if since + 1 < oldest:
                subscription.resync = True
            else:
                subscription.pending = [e for e in self._ring if e.id > since]
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a subscription."""
        self._subscriptions.discard(subscription)

    def end(self, subscription: Subscription, code: int = CLOSE_GOING_AWAY) -> None:
        """End one subscription (its client went away): its reader wakes with Closed."""
        self._close(subscription, code)

    def close(self, key: str, code: int = CLOSE_NOT_PAIRED) -> int:
        """End every subscription of ``key`` (a revoked device); return how many."""
        ended = [s for s in self._subscriptions if s.key == key]
        for subscription in ended:
            self._close(subscription, code)
        return len(ended)

    def close_all(self, code: int = CLOSE_GOING_AWAY) -> None:
        """End every subscription (the daemon is stopping)."""
        for subscription in list(self._subscriptions):
            self._close(subscription, code)

    def _close(self, subscription: Subscription, code: int) -> None:
        self._subscriptions.discard(subscription)
        subscription.closed = code
        while not subscription.queue.empty():  # make room for the wake-up
            subscription.queue.get_nowait()
        subscription.queue.put_nowait(None)


class Presence:
    """Say which devices are online: a socket open, or a request in the last minute.

    Each change is published once, as ``device.online`` or ``device.offline``.
    """

    def __init__(self, hub: EventHub, *, recent_s: float = 60.0) -> None:
        self._hub = hub
        self._recent_s = recent_s
        self._sockets: dict[str, int] = {}
        self._last_request: dict[str, float] = {}  # loop time
        self._names: dict[str, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def is_online(self, device_id: str) -> bool:
        """Say whether the device is online now."""
        return device_id in self._names

    def seen(self, device_id: str, name: str) -> None:
        """Note a request from the device. Loop-only."""
        self._last_request[device_id] = asyncio.get_running_loop().time()
        self._came(device_id, name)
        if device_id not in self._timers:
            self._check_later(device_id, self._recent_s)

    def connected(self, device_id: str, name: str) -> None:
        """Note a socket the device opened."""
        self._sockets[device_id] = self._sockets.get(device_id, 0) + 1
        self._came(device_id, name)

    def disconnected(self, device_id: str) -> None:
        """Note that one of the device's sockets closed."""
        left = self._sockets.get(device_id, 0) - 1
        if left > 0:
            self._sockets[device_id] = left
            return
        self._sockets.pop(device_id, None)
        self._check(device_id)

    def gone(self, device_id: str) -> None:
        """Forget a device at once (revoked)."""
        self._sockets.pop(device_id, None)
        self._last_request.pop(device_id, None)
        self._check(device_id)

    def _came(self, device_id: str, name: str) -> None:
        if device_id not in self._names:
            self._names[device_id] = name
            self._hub.publish("device.online", {"device_id": device_id, "device_name": name})

    def _check_later(self, device_id: str, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers[device_id] = loop.call_later(delay_s, self._timed_out, device_id)

    def _timed_out(self, device_id: str) -> None:
        del self._timers[device_id]
        self._check(device_id)

    def _check(self, device_id: str) -> None:
        """Publish ``device.offline`` if nothing keeps the device online any more."""
        if device_id not in self._names or self._sockets.get(device_id):
            return
        last = self._last_request.get(device_id)
        left_s = self._recent_s - (asyncio.get_running_loop().time() - last) if last else 0.0
        if left_s > 0:
            if device_id not in self._timers:
                self._check_later(device_id, left_s)
            return
        timer = self._timers.pop(device_id, None)
        if timer is not None:
            timer.cancel()
        self._last_request.pop(device_id, None)
        name = self._names.pop(device_id)
        self._hub.publish("device.offline", {"device_id": device_id, "device_name": name})


class UploadProgress:
    """Publish ``upload.progress`` for one file as it arrives: every so often, and at the end.

    ``bytes`` counts what arrived so far; ``total`` is the file's length when known. The
    first word comes ``every_s`` after the start: a file done sooner (most photos on a
    LAN) is only ever "done", with no bar to draw for it. Loop-only.
    """

    _numbers = itertools.count(1)

    def __init__(
        self,
        hub: EventHub,
        device: Device | None,  # None: this PC's own upload
        *,
        name: str,
        total: int | None,
        upload: str | None = None,
        arrived: int = 0,
        every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self._hub = hub
        self._every_s = every_s
        self._last = asyncio.get_running_loop().time()
        self.bytes = arrived
        self._data: dict[str, Any] = {
            "upload": upload or f"up{next(self._numbers)}",
            "device_id": device.device_id if device else "pc",
            "device_name": device.device_name if device else "this PC",
            "name": name,
            "total": total,
        }

    def add(self, n_bytes: int) -> None:
        """Count bytes that arrived; publish if the last word is old enough."""
        self.bytes += n_bytes
        now = asyncio.get_running_loop().time()
        if now - self._last >= self._every_s:
            self._last = now
            self._publish("sending")

    def end(self, state: str) -> None:
        """Publish the outcome: ``done``, ``paused`` (resumable) or ``failed``."""
        self._publish(state)

    def _publish(self, state: str) -> None:
        self._hub.publish("upload.progress", {**self._data, "bytes": self.bytes, "state": state})
