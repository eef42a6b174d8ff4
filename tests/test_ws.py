"""The live events WebSocket: uploads and pairings pushed at once, revocation closes sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from conftest import Daemon
from test_api import bearer, pair, status_of
from test_library import jpeg, upload


async def next_event(socket: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """Return the next event of type ``kind`` (others are skipped), within 5 s."""
    while True:
        message = await asyncio.wait_for(socket.receive(), 5)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        event: dict[str, Any] = json.loads(message.data)
        if event["type"] == kind:
            return event


async def test_an_upload_is_pushed_to_every_open_gallery(daemon: Daemon) -> None:
    """Another device's socket and the owner's get file.added with the gallery item."""
    sender = await pair(daemon, "Sender", "sender")
    watcher = await pair(daemon, "Watcher", "watcher")
    async with (
        daemon.session(headers=bearer(watcher["device_token"])) as device,
        daemon.session() as owner,
        device.ws_connect("/api/events") as phone_socket,
        owner.ws_connect("/api/events") as pc_socket,
    ):
        status, body = await upload(daemon, sender["device_token"], ("new.jpg", jpeg(800, 600)))
        assert status == 200
        for socket in (phone_socket, pc_socket):
            event = await next_event(socket, "file.added")
            assert event["data"]["item"]["id"] == body["files"][0]["id"]
            assert event["data"]["item"]["thumb"] == f"/thumbs/{body['files'][0]['id']}"
            assert isinstance(event["id"], int)
            assert event["time"].endswith("Z")


async def test_revoking_a_device_closes_its_socket_and_no_other(daemon: Daemon) -> None:
    """Revoke ends that device's socket with 4401; another device's stays open."""
    doomed = await pair(daemon, "Doomed", "doomed")
    other = await pair(daemon, "Other", "other")
    async with (
        daemon.session(headers=bearer(doomed["device_token"])) as a,
        daemon.session(headers=bearer(other["device_token"])) as b,
        a.ws_connect("/api/events") as doomed_socket,
        b.ws_connect("/api/events") as other_socket,
    ):
        async with daemon.session() as owner:
            await status_of(owner, "POST", f"/api/pairing/revoke/{doomed['device_id']}", json={})
        closing = await asyncio.wait_for(doomed_socket.receive(), 5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert doomed_socket.close_code == 4401
        event = await next_event(other_socket, "device.revoked")
        assert event["data"]["device_id"] == doomed["device_id"]
        assert not other_socket.closed


async def test_reconnecting_with_since_replays_what_was_missed(daemon: Daemon) -> None:
    """Events published while a client was away come back, in order, with ?since=."""
    device = await pair(daemon, "Phone", "phone")
    async with daemon.session(headers=bearer(device["device_token"])) as session:
        async with session.ws_connect("/api/events") as socket:
            await upload(daemon, device["device_token"], ("one.txt", b"1"))
            last = (await next_event(socket, "file.added"))["id"]
        for name in ("two.txt", "three.txt"):
            await upload(daemon, device["device_token"], (name, name.encode()))
        async with session.ws_connect(f"/api/events?since={last}") as socket:
            names = [
                (await next_event(socket, "file.added"))["data"]["item"]["name"] for _ in range(2)
            ]
    assert names == ["two.txt", "three.txt"]


async def test_the_socket_refuses_strangers_and_other_sites(daemon: Daemon) -> None:
    """No token: 401. A cross-site Origin: 403. Neither gets a socket."""
    async with daemon.session(headers=bearer("Q" * 32)) as stranger:
        assert await status_of(stranger, "GET", "/api/events") == 401
    device = await pair(daemon)
    async with daemon.session(
        headers={**bearer(device["device_token"]), "Origin": "https://evil.example"}
    ) as session:
        assert await status_of(session, "GET", "/api/events") == 403
