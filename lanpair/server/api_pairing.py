"""Pairing, devices and identity: /api/pairing/*, /api/devices, /api/me, /api/info."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from lanpair.clock import to_iso
from lanpair.models import DeviceStatus
from lanpair.server.keys import MINT_KEY, SERVICES_KEY
from lanpair.server.middleware import (
    COOKIE_NAME,
    Access,
    access,
    caller,
    client_address,
    field,
    json_response,
    read_json,
    set_device_cookie,
)

routes = web.RouteTableDef()


@routes.post("/api/pairing/generate")
@access(Access.OWNER)
async def generate(request: web.Request) -> web.Response:
    """Issue a pairing code and its QR code."""
    services = request.app[SERVICES_KEY]
    await read_json(request)
    code = await request.app[MINT_KEY].issue(client_address(request))
    site = services.site
    return json_response(
        {
            "type": "device_pairing",
            "device_id": site.device_id,
            "pairing_token": code.pending.token,
            "ip": site.ip,
            "port": site.port,
            "protocol": site.scheme,
            "hostname": site.local_name,
            "name": site.name,
            "fingerprint": site.fingerprint,
            "expires_at": to_iso(code.pending.expires_at),
            "expires_in_s": round((code.pending.expires_at - services.clock.now()).total_seconds()),
            "url": code.url,
            "qr_svg": code.images.svg,
            "qr_png": code.images.png_data_url,
        }
    )


@routes.post("/api/pairing/confirm")
@access(Access.ANYONE)
async def confirm(request: web.Request) -> web.Response:
    """Spend a pairing code: pair the device, hand it its token once, and set its cookie."""
    services = request.app[SERVICES_KEY]
    services.pairing.check_attempts(client_address(request))
    data = await read_json(request)
    token = field(data, "pairing_token", str)
    confirmation = await services.pairing.confirm(
        token,
        field(data, "device_name", str),
        field(data, "device_id", str),
        client_address(request),
    )
    device = confirmation.device
    response = json_response(
        {
            "device_id": device.device_id,
            "device_name": device.device_name,
            "device_token": confirmation.device_token,
            "expires_at": to_iso(device.expires_at),
        }
    )
    set_device_cookie(response, request, confirmation.device_token, services.pairing.pairing_ttl_s)
    return response


@routes.post("/api/pairing/handoff")
@access(Access.DEVICE)
async def hand_off(request: web.Request) -> web.Response:
    """Issue a two-minute, one-time link that pairs this device on the PC's .local name too."""
    services = request.app[SERVICES_KEY]
    data = await read_json(request) if request.can_read_body else {}
    device_id = field(data, "device_id", str) if "device_id" in data else None
    handoff = await services.pairing.hand_off(caller(request), device_id, client_address(request))
    site = services.site
    page = site.url("/pair-confirm", host=site.local_name)
    return json_response(
        {
            "device_id": handoff.device_id,
            "handoff_token": handoff.token,
            "url": page + "#" + urlencode({"handoff": handoff.token}),
            "address": site.url("/explorer", host=site.local_name),
            "expires_at": to_iso(handoff.expires_at),
            "expires_in_s": round((handoff.expires_at - services.clock.now()).total_seconds()),
        }
    )


@routes.post("/api/pairing/handoff/redeem")
@access(Access.ANYONE)
async def redeem_handoff(request: web.Request) -> web.Response:
    """Spend a hand-off link's token: pair the browser on this host name as the same device."""
    services = request.app[SERVICES_KEY]
    services.pairing.check_attempts(client_address(request))
    data = await read_json(request)
    confirmation = await services.pairing.redeem_handoff(
        field(data, "handoff_token", str), request.host, client_address(request)
    )
    device = confirmation.device
    response = json_response(
        {
            "device_id": device.device_id,
            "device_name": device.device_name,
            "expires_at": to_iso(device.expires_at),
        }
    )
    left = device.expires_at - services.clock.now()
    set_device_cookie(response, request, confirmation.device_token, left.total_seconds())
    return response


@routes.get("/api/pairing/devices")
@access(Access.OWNER)
async def devices(request: web.Request) -> web.Response:
    """List every pairing, for the owner's management view."""
    pairing = request.app[SERVICES_KEY].pairing
    return json_response([pairing.record(d) for d in await pairing.devices()])


@routes.post("/api/pairing/revoke/{target}")
@access(Access.SELF)
async def revoke(request: web.Request) -> web.Response:
    """Revoke a pairing by device id or token (the owner any, a device only itself)."""
    services = request.app[SERVICES_KEY]
    if request.can_read_body:
        await read_json(request)
    who = caller(request)
    device = await services.pairing.revoke(
        request.match_info["target"], who, client_address(request)
    )
    response = json_response({"device_id": device.device_id, "status": device.status.value})
    if not who.owner:
        response.del_cookie(COOKIE_NAME, path="/")
    return response


@routes.get("/api/devices")
@access(Access.DEVICE)
async def device_list(request: web.Request) -> web.Response:
    """List the paired devices without management fields, for the explorer's panel."""
    pairing = request.app[SERVICES_KEY].pairing
    return json_response(
        [
            {
                "device_id": d.device_id,
                "device_name": d.device_name,
                "last_seen": to_iso(d.last_seen),
                "last_sync": to_iso(d.last_sync),
                "file_count": d.file_count,
                "online": pairing.presence.is_online(d.device_id),
            }
            for d in await pairing.devices()
            if pairing.status(d) is DeviceStatus.CONFIRMED
        ]
    )


@routes.get("/api/me")
@access(Access.DEVICE)
async def me(request: web.Request) -> web.Response:
    """Tell the caller who it is: a paired device (with its expiry) or the owner."""
    who = caller(request)
    if who.device is None:
        return json_response({"owner": True, "name": request.app[SERVICES_KEY].site.name})
    return json_response(
        {
            "owner": False,
            "device_id": who.device.device_id,
            "device_name": who.device.device_name,
            "expires_at": to_iso(who.device.expires_at),
        }
    )


@routes.get("/api/info")
@access(Access.ANYONE)
async def info(request: web.Request) -> web.Response:
    """Describe this daemon without secrets."""
    site = request.app[SERVICES_KEY].site
    return json_response(
        {
            "name": site.name,
            "version": site.version,
            "device_id": site.device_id,
            "hostname": site.local_name,
            "fingerprint": site.fingerprint,
            "protocol": site.scheme,
        }
    )
