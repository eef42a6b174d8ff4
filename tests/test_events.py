"""The event hub: ordered fan-out, slow subscribers dropped, replay with since."""

from __future__ import annotations

import asyncio

import pytest

from lanpair.clock import ManualClock
from lanpair.events import CLOSE_NOT_PAIRED, CLOSE_TOO_SLOW, Closed, EventHub, Presence


def hub(**kwargs: int) -> EventHub:
    """Return a hub on a manual clock."""
    return EventHub(ManualClock().now, **kwargs)


async def test_every_subscriber_gets_every_event_in_order() -> None:
    """Events carry sequential ids and reach all subscribers in order."""
    events = hub()
    start = events.last_id + 1
    first, second = events.subscribe(), events.subscribe()
    for n in range(5):
        events.publish("file.added", {"n": n})
    for subscription in (first, second):
        got = [await subscription.next() for _ in range(5)]
        assert [e.id - start for e in got] == [0, 1, 2, 3, 4]
        assert [e.data["n"] for e in got] == [0, 1, 2, 3, 4]


async def test_a_slow_subscriber_is_dropped_and_a_fast_one_keeps_going() -> None:
    """A full queue ends that subscription with 4408; publish never blocks; others go on."""
    events = hub(queue_size=10)
    slow, fast = events.subscribe(), events.subscribe()
    for n in range(25):
        events.publish("file.added", {"n": n})
        await fast.next()
    with pytest.raises(Closed) as closed:
        await slow.next()
    assert closed.value.code == CLOSE_TOO_SLOW
    events.publish("file.added", {"n": 25})
    assert (await fast.next()).data == {"n": 25}


async def test_reconnecting_with_since_replays_exactly_what_was_missed() -> None:
    """since=<last seen id> replays the events after it, then continues live."""
    events = hub()
    ids = [events.publish("file.added", {"n": n}).id for n in range(10)]
    again = events.subscribe(since=ids[7])
    last = events.publish("file.added", {"n": 10}).id
    assert [(await again.next()).id for _ in range(3)] == [*ids[8:], last]
    assert not events.subscribe(since=last).pending


async def test_too_far_behind_means_resync() -> None:
    """When the missed events left the ring buffer, the subscription asks for a resync."""
    events = hub(ring=5)
    ids = [events.publish("file.added", {"n": n}).id for n in range(20)]
    assert events.subscribe(since=ids[3]).resync is True
    assert events.subscribe(since=ids[15]).resync is False


async def test_closing_a_device_ends_only_its_subscriptions() -> None:
    """Revoking a device closes its sockets (4401) and no one else's."""
    events = hub()
    mine, other = events.subscribe(key="dev_a"), events.subscribe(key="dev_b")
    assert events.close("dev_a") == 1
    with pytest.raises(Closed) as closed:
        await mine.next()
    assert closed.value.code == CLOSE_NOT_PAIRED
    events.publish("device.revoked", {"device_id": "dev_a"})
    assert (await asyncio.wait_for(other.next(), 1)).type == "device.revoked"


async def test_a_burst_is_taken_at_once_without_waiting() -> None:
    events = hub()
    subscription = events.subscribe()
    for n in range(5):
        events.publish("file.added", {"n": n})
    first = await subscription.next()
    assert [first.data["n"], *(e.data["n"] for e in subscription.ready())] == [0, 1, 2, 3, 4]
    assert subscription.ready() == []


async def test_presence_says_online_once_and_offline_when_nothing_keeps_it() -> None:
    events = hub()
    subscription = events.subscribe()
    presence = Presence(events, recent_s=0.2)
    presence.connected("dev_a", "A")
    presence.seen("dev_a", "A")
    presence.connected("dev_a", "A")
    presence.disconnected("dev_a")
    presence.disconnected("dev_a")  # no socket left, but a request 0.2 s ago at most
    assert presence.is_online("dev_a")
    await asyncio.sleep(0.35)
    assert not presence.is_online("dev_a")
    presence.seen("dev_b", "B")
    presence.gone("dev_b")  # revoked: offline at once
    got = [(e.type, e.data["device_id"]) for e in subscription.ready()]
    assert got == [
        ("device.online", "dev_a"),
        ("device.offline", "dev_a"),
        ("device.online", "dev_b"),
        ("device.offline", "dev_b"),
    ]


async def test_an_id_from_before_a_restart_means_resync() -> None:
    before = hub()
    old_id = before.publish("file.added", {}).id
    clock = ManualClock()
    clock.advance(60)
    after = EventHub(clock.now)  # the daemon restarted a minute later
    assert after.subscribe(since=old_id).resync
    future = hub()
    assert future.subscribe(since=future.last_id + 5).resync


async def test_a_hub_can_go_on_from_a_reserved_id() -> None:
    events = hub()
    before = events.last_id
    events.start_at(before + 1_000)
    first = events.publish("file.added", {}).id
    assert first == before + 1_000
    events.start_at(5)  # never backwards
    assert events.publish("file.added", {}).id == first + 1
