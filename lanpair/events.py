"""The event hub: every change, numbered, fanned out to subscribers that never slow it down.

``publish`` never blocks and never waits for a subscriber: each has a bounded queue, and
one that falls behind is dropped (it reconnects with ``since`` and gets what it missed
from the ring buffer, or a ``resync`` when that is gone too).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

CLOSE_NOT_PAIRED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_GOING_AWAY = 1001


@dataclass(frozen=True, slots=True)
class Event:
    """One change: sequential id, type (``file.added``…), when, and what."""

    id: int
    type: str
    time: datetime
    data: dict[str, Any]


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
        self._ids = itertools.count(1)
        self._ring: deque[Event] = deque(maxlen=ring)
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self.last_id = 0

    def publish(self, type_: str, data: dict[str, Any]) -> Event:
        """Send an event to every subscriber now. Loop-only; never blocks."""
        event = Event(next(self._ids), type_, self._clock(), data)
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
        if since is not None and since < self.last_id:
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
