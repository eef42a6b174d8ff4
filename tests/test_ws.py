"""The live events WebSocket: uploads and pairings pushed at once, revocation closes sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from conftest import ONLINE_AFTER_REQUEST_S, PAIRING_TTL_S, Daemon
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
        while closing.type is aiohttp.WSMsgType.TEXT:  # presence news from before
            closing = await asyncio.wait_for(doomed_socket.receive(), 5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert doomed_socket.close_code == 4401
        event = await next_event(other_socket, "device.revoked")
        assert event["data"]["device_id"] == doomed["device_id"]
        assert not other_socket.closed


async def test_an_expired_pairing_gets_no_more_events_and_its_socket_closes(
    daemon: Daemon,
) -> None:
    """Once a pairing's lifetime has passed, its open socket is closed with 4401 instead of
    being sent the next event (it once went on receiving every event, and showed online)."""
    expiring = await pair(daemon, "Expiring", "expiring")
    async with (
        daemon.session(headers=bearer(expiring["device_token"])) as session,
        session.ws_connect("/api/events") as socket,
    ):
        daemon.clock.advance(PAIRING_TTL_S + 1)
        sender = await pair(daemon, "Sender", "sender-2")
        status, _ = await upload(daemon, sender["device_token"], ("after.jpg", jpeg(color="gray")))
        assert status == 200
        message = await asyncio.wait_for(socket.receive(), 5)
        while message.type is aiohttp.WSMsgType.TEXT:  # what came before the expiry passed
            assert json.loads(message.data)["type"] != "file.added"
            message = await asyncio.wait_for(socket.receive(), 5)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert socket.close_code == 4401


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


async def test_a_device_is_online_while_its_socket_is_open_and_shortly_after_a_request(
    daemon: Daemon,
) -> None:
    """device.online when it connects; device.offline once it closed and made no request."""
    phone = await pair(daemon, "Phone", "presence")
    async with daemon.session() as owner, owner.ws_connect("/api/events") as pc_socket:
        async with daemon.session(headers=bearer(phone["device_token"])) as device:
            async with device.ws_connect("/api/events"):
                online = await next_event(pc_socket, "device.online")
                assert online["data"] == {"device_id": phone["device_id"], "device_name": "Phone"}
                async with owner.get("/api/pairing/devices") as response:
                    listed = {d["device_id"]: d["online"] for d in await response.json()}
                assert listed[phone["device_id"]] is True
            # Closed, but it made a request just now: online for a little longer.
            started = asyncio.get_running_loop().time()
            offline = await next_event(pc_socket, "device.offline")
            waited_s = asyncio.get_running_loop().time() - started
        assert offline["data"]["device_id"] == phone["device_id"]
        assert 0.3 < waited_s < ONLINE_AFTER_REQUEST_S + 2
        async with owner.get("/api/devices") as response:
            listed = {d["device_id"]: d["online"] for d in await response.json()}
        assert listed[phone["device_id"]] is False


async def test_the_pc_sees_a_phones_upload_advance(daemon: Daemon) -> None:
    """upload.progress events carry the bytes so far and end with done."""
    phone = await pair(daemon, "Phone", "progress")
    size = 8 * 1024 * 1024
    payload = os.urandom(size)
    async with daemon.session() as owner, owner.ws_connect("/api/events") as pc_socket:
        data = aiohttp.FormData()
        data.add_field("size", str(size))
        data.add_field("file", io.BytesIO(payload), filename="big.bin")
        async with (
            daemon.session(headers=bearer(phone["device_token"])) as device,
            device.post("/api/upload", data=data) as response,
        ):
            assert response.status == 200
        seen = []
        while not seen or seen[-1]["state"] == "sending":
            seen.append((await next_event(pc_socket, "upload.progress"))["data"])
    assert seen[-1]["state"] == "done"
    assert seen[-1]["bytes"] == size
    assert {s["upload"] for s in seen} == {seen[0]["upload"]}
    assert seen[0] | {"bytes": 0, "state": ""} == {
        "upload": seen[0]["upload"],
        "device_id": phone["device_id"],
        "device_name": "Phone",
        "name": "big.bin",
        "total": size,
        "bytes": 0,
        "state": "",
    }
    counts = [s["bytes"] for s in seen]
    assert counts == sorted(counts)


@contextlib.asynccontextmanager
async def tus_phone_seen_by_the_pc(
    daemon: Daemon, client_id: str
) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]]:
    """Yield a newly paired phone's session (tus headers set) and the PC's event socket."""
    phone = await pair(daemon, "Phone", client_id)
    headers = {**bearer(phone["device_token"]), "Tus-Resumable": "1.0.0"}
    async with (
        daemon.session() as owner,
        owner.ws_connect("/api/events") as pc_socket,
        daemon.session(headers=headers) as device,
    ):
        yield device, pc_socket


async def create_upload(device: aiohttp.ClientSession, length: int, metadata: str) -> str:
    """Create a tus upload of ``length`` bytes; return its location."""
    create = {"Upload-Length": str(length), "Upload-Metadata": metadata}
    async with device.post("/api/tus/", headers=create) as response:
        return response.headers["Location"]


async def test_a_resumable_upload_reports_progress_from_where_it_resumes(daemon: Daemon) -> None:
    """A tus PATCH that completes the file says done, counting bytes sent before."""
    async with tus_phone_seen_by_the_pc(daemon, "tus-progress") as (device, pc_socket):
        name = base64.b64encode(b"clip.bin").decode()
        location = await create_upload(device, 2000, f"filename {name}")
        patch = {"Content-Type": "application/offset+octet-stream"}
        for offset in (0, 1000):
            async with device.patch(
                location, data=b"x" * 1000, headers={**patch, "Upload-Offset": str(offset)}
            ) as response:
                assert response.status == 204
        # The answer to the last bytes says what was stored, to check end to end.
        assert response.headers["Lanpair-Sha256"] == hashlib.sha256(b"x" * 2000).hexdigest()
        states = []
        while not states or states[-1]["state"] != "done":
            states.append((await next_event(pc_socket, "upload.progress"))["data"])
    assert (states[-1]["bytes"], states[-1]["total"], states[-1]["name"]) == (
        2000,
        2000,
        "clip.bin",
    )


async def test_a_refused_resumable_upload_is_not_said_to_be_saved(daemon: Daemon) -> None:
    """A tus upload whose bytes do not match its sha256 is refused (460): the PC's page is
    told ``failed``, never ``done`` (it once showed "Saved" for a file that never came)."""
    async with tus_phone_seen_by_the_pc(daemon, "tus-refused") as (device, pc_socket):
        meta = (
            f"filename {base64.b64encode(b'wrong.bin').decode()},sha256 "
            + base64.b64encode(b"0" * 64).decode()
        )
        location = await create_upload(device, 1000, meta)
        patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        async with device.patch(location, data=b"x" * 1000, headers=patch) as response:
            assert response.status == 460
        states = [(await next_event(pc_socket, "upload.progress"))["data"]["state"]]
        while states[-1] == "sending":
            states.append((await next_event(pc_socket, "upload.progress"))["data"]["state"])
    assert states[-1] == "failed"
    assert "done" not in states
