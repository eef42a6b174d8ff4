"""GET /api/events: the live WebSocket of file and device events (no polling anywhere)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, hdrs, web

from lanpair import errors
from lanpair.events import CLOSE_GOING_AWAY, Closed, EventHub, Subscription, encode
from lanpair.server.keys import HUB_KEY, SERVICES_KEY, SOCKETS_KEY
from lanpair.server.middleware import Access, access, caller, whole_number

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PING_EVERY_S = 20.0


@routes.get("/api/events")
@access(Access.DEVICE)
async def events(request: web.Request) -> web.WebSocketResponse:
    """Stream events as JSON text messages; ``?since=<id>`` replays what was missed."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise errors.CrossOrigin()
    since = _since(request.query.get("since"))
    who = caller(request)
    hub = request.app[HUB_KEY]
    # permessage-deflate would cost ~100 KiB per connection; events are small anyway.
    socket = web.WebSocketResponse(heartbeat=PING_EVERY_S, compress=False)
    await socket.prepare(request)
    request.app[SOCKETS_KEY].add(socket)
    subscription = hub.subscribe(key=who.device.device_id if who.device else None, since=since)
    services = request.app[SERVICES_KEY]
    presence = services.pairing.presence
    expiry: asyncio.TimerHandle | None = None
    if who.device is not None:
        presence.connected(who.device.device_id, who.device.device_name)
        if who.device.expires_at is not None:  # the pairing ends: so do its sockets, 4401
            left_s = (who.device.expires_at - services.clock.now()).total_seconds()
            loop = asyncio.get_running_loop()
            expiry = loop.call_later(max(left_s, 0), hub.close, who.device.device_id)
    # The reader ends the subscription when the client goes: the sender needs no task,
    # and no wait on two things, per event (a broadcast wakes each socket once).
    reader = asyncio.create_task(_drain(socket, hub, subscription), name="events-reader")
    try:
        if subscription.resync:
            await socket.send_str(encode(hub.last_id, "resync", None, {}))
        while True:
            try:
                event = await subscription.next()
            except Closed as closed:
                if not reader.done():  # the hub ended it (revoked, too slow, stopping)
                    await _stop(reader)  # close() reads the client's reply itself
                    await socket.close(code=closed.code, message=b"closed by lanpair")
                break
            # Once per wake-up, not per event: the timer above misses an expiry only when
            # the clocks disagree (a PC that slept: the monotonic clock stood still).
            if who.device is not None and not services.pairing.valid(who.device):
                hub.close(who.device.device_id)  # expired: the next turn closes it
                continue
            for ready in (event, *subscription.ready()):
                await socket.send_str(ready.text)
    finally:
        if expiry is not None:
            expiry.cancel()
        hub.unsubscribe(subscription)
        await _stop(reader)
        request.app[SOCKETS_KEY].discard(socket)
        if who.device is not None:
            presence.disconnected(who.device.device_id)
    return socket


async def close_all(app: web.Application) -> None:
    """On shutdown, close every socket with 1001 (going away)."""
    app[HUB_KEY].close_all(CLOSE_GOING_AWAY)
    sockets = app[SOCKETS_KEY]
    for socket in list(sockets):
        await socket.close(code=CLOSE_GOING_AWAY, message=b"lanpair is stopping")


async def _drain(socket: web.WebSocketResponse, hub: EventHub, subscription: Subscription) -> None:
    """Read (and ignore) what the client sends until it closes; then end its subscription."""
    try:
        async for message in socket:
            if message.type is WSMsgType.ERROR:
                break
    finally:
        hub.end(subscription)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _since(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    since = whole_number(text)
    if since is None:
        raise errors.BadRequest("since must be the id of an event.")
    return since
