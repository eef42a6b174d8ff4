"""The hand-off to the .local name: a paired phone carries its pairing to a second origin."""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from conftest import PAIRING_TTL_S, Daemon
from test_api import bearer, pair, status_of

from lanpair.pairing import HANDOFF_TTL_S, TOKEN_RE


def local_host(daemon: Daemon) -> str:
    """Return the Host header a browser sends on the daemon's .local address."""
    return f"testhost.local:{daemon.port}"


async def mint(daemon: Daemon, device_token: str, **body: Any) -> aiohttp.ClientResponse:
    """Ask for a hand-off as the device of ``device_token``; return the (read) response."""
    async with (
        daemon.session(headers=bearer(device_token)) as phone,
        phone.post("/api/pairing/handoff", json=body) as response,
    ):
        await response.read()
        return response


async def handoff_token(daemon: Daemon, device_token: str) -> str:
    """Return a fresh hand-off token of the device of ``device_token``."""
    response = await mint(daemon, device_token)
    assert response.status == 200, await response.text()
    token: str = (await response.json())["handoff_token"]
    return token


async def redeem(
    daemon: Daemon, token: str, *, host: str | None = None, **kw: Any
) -> aiohttp.ClientResponse:
    """Spend a hand-off on the .local name (or ``host``), as its page would; return the response."""
    headers = {"Host": host or local_host(daemon), **kw.pop("headers", {})}
    async with (
        daemon.session(**kw) as browser,
        browser.post(
            "/api/pairing/handoff/redeem", json={"handoff_token": token}, headers=headers
        ) as response,
    ):
        await response.read()
        return response


def cookie_of(response: aiohttp.ClientResponse) -> SimpleCookie:
    """Return the device cookie a response sets."""
    jar = SimpleCookie()
    jar.load(response.headers["Set-Cookie"])
    return jar


async def me_on_local(daemon: Daemon, cookie_value: str) -> aiohttp.ClientResponse:
    """Call /api/me on the .local name with a device cookie, as that origin's browser does."""
    headers = {"Host": local_host(daemon), "Cookie": f"lanpair_device={cookie_value}"}
    async with daemon.session() as browser, browser.get("/api/me", headers=headers) as response:
        await response.read()
        return response


async def test_a_handoff_pairs_the_local_origin_and_the_ip_keeps_working(daemon: Daemon) -> None:
    """Mint on the IP, redeem on <host>.local: a cookie there that works; the first token too."""
    device = await pair(daemon, "Anna's phone")
    minted = await mint(daemon, device["device_token"])
    assert minted.status == 200
    body = await minted.json()
    token = body["handoff_token"]
    assert TOKEN_RE.fullmatch(token)
    assert body["device_id"] == device["device_id"]
    assert body["url"] == f"https://testhost.local:{daemon.port}/pair-confirm#handoff={token}"
    assert body["address"] == f"https://testhost.local:{daemon.port}/explorer"
    assert body["expires_in_s"] == HANDOFF_TTL_S == 120

    redeemed = await redeem(daemon, token, headers={"Origin": f"https://{local_host(daemon)}"})
    assert redeemed.status == 200, await redeemed.text()
    assert await redeemed.json() == {
        "device_id": device["device_id"],
        "device_name": "Anna's phone",
        "expires_at": device["expires_at"],
    }
    morsel = cookie_of(redeemed)["lanpair_device"]
    assert TOKEN_RE.fullmatch(morsel.value)
    assert morsel.value not in {device["device_token"], token}  # its own, fresh token
    assert morsel["httponly"]
    assert morsel["secure"]
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == PAIRING_TTL_S
    assert not morsel["domain"]  # host-only: the .local origin's, nobody else's

    me = await me_on_local(daemon, morsel.value)
    assert me.status == 200
    assert (await me.json())["device_id"] == device["device_id"]
    async with daemon.session(headers=bearer(device["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 200
    async with daemon.session() as owner, owner.get("/api/pairing/devices") as listed:
        assert [d["device_id"] for d in await listed.json()] == [device["device_id"]]


async def test_a_handoff_is_spent_once(daemon: Daemon) -> None:
    """A second redeem of the same link is refused with a clear JSON error."""
    device = await pair(daemon)
    token = await handoff_token(daemon, device["device_token"])
    assert (await redeem(daemon, token)).status == 200
    again = await redeem(daemon, token)
    assert again.status == 409
    error = await again.json()
    assert error["error"] == "handoff_used"
    assert "already used" in error["message"]
    assert "Set-Cookie" not in again.headers


async def test_a_handoff_expires_after_two_minutes(daemon: Daemon) -> None:
    """Just before its lifetime a link works; at it, it is refused as expired."""
    device = await pair(daemon)
    early = await handoff_token(daemon, device["device_token"])
    daemon.clock.advance(HANDOFF_TTL_S - 1)
    assert (await redeem(daemon, early)).status == 200
    late = await handoff_token(daemon, device["device_token"])
    daemon.clock.advance(HANDOFF_TTL_S)
    response = await redeem(daemon, late)
    assert response.status == 401
    assert (await response.json())["error"] == "handoff_expired"


async def test_a_new_handoff_replaces_the_unspent_one(daemon: Daemon) -> None:
    """A device has at most one live link: minting again voids the one before."""
    device = await pair(daemon)
    first = await handoff_token(daemon, device["device_token"])
    second = await handoff_token(daemon, device["device_token"])
    response = await redeem(daemon, first)
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_handoff"
    assert (await redeem(daemon, second)).status == 200


async def test_only_a_device_mints_and_only_for_itself(lan_daemon: Daemon) -> None:
    """Another device's id is refused; the owner has nothing to hand over; strangers get 401."""
    first = await pair(lan_daemon, "First", "c-1")
    second = await pair(lan_daemon, "Second", "c-2")
    other = await mint(lan_daemon, second["device_token"], device_id=first["device_id"])
    assert other.status == 403
    assert (await other.json())["error"] == "forbidden"
    own = await mint(lan_daemon, second["device_token"], device_id=second["device_id"])
    assert (await own.json())["device_id"] == second["device_id"]
    redeemed = await redeem(lan_daemon, (await own.json())["handoff_token"])
    assert (await redeemed.json())["device_id"] == second["device_id"]

    async with lan_daemon.session() as owner, owner.post("/api/pairing/handoff", json={}) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "bad_request"
    async with (
        lan_daemon.session(source="127.0.0.2") as stranger,
        stranger.post("/api/pairing/handoff", json={}) as r,
    ):
        assert r.status == 401
        assert (await r.json())["error"] == "not_paired"


async def test_revoking_the_device_ends_every_token_it_has(daemon: Daemon) -> None:
    """Revoked by the owner, the IP token and the .local token both get 401 at once."""
    device = await pair(daemon)
    redeemed = await redeem(daemon, await handoff_token(daemon, device["device_token"]))
    local = cookie_of(redeemed)["lanpair_device"].value
    assert (await me_on_local(daemon, local)).status == 200  # now remembered for a while
    async with daemon.session() as owner:
        path = f"/api/pairing/revoke/{device['device_id']}"
        assert await status_of(owner, "POST", path, json={}) == 200
    assert (await me_on_local(daemon, local)).status == 401
    async with daemon.session(headers=bearer(device["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 401


async def test_the_local_token_revokes_its_device_itself(daemon: Daemon) -> None:
    """The seed's revoke-by-token route takes a handed-over token too, and ends both."""
    device = await pair(daemon)
    redeemed = await redeem(daemon, await handoff_token(daemon, device["device_token"]))
    local = cookie_of(redeemed)["lanpair_device"].value
    async with daemon.session() as anyone:
        path = f"/api/pairing/revoke/{local}"
        async with anyone.post(path, json={}) as response:
            assert (await response.json())["device_id"] == device["device_id"]
    async with daemon.session(headers=bearer(device["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 401


async def test_every_token_expires_with_the_pairing(daemon: Daemon) -> None:
    """A handed-over token lasts exactly as long as the pairing, not from its own redeem."""
    device = await pair(daemon)
    daemon.clock.advance(PAIRING_TTL_S / 2)
    redeemed = await redeem(daemon, await handoff_token(daemon, device["device_token"]))
    morsel = cookie_of(redeemed)["lanpair_device"]
    assert int(morsel["max-age"]) == PAIRING_TTL_S // 2
    daemon.clock.advance(PAIRING_TTL_S / 2 - 1)
    assert (await me_on_local(daemon, morsel.value)).status == 200
    daemon.clock.advance(1)
    assert (await me_on_local(daemon, morsel.value)).status == 401


async def test_pairing_again_replaces_every_token_of_the_old_pairing(daemon: Daemon) -> None:
    """Re-pairing the same client revokes the old pairing's .local token and unspent link too."""
    old = await pair(daemon, "Phone", "same-client")
    local = cookie_of(await redeem(daemon, await handoff_token(daemon, old["device_token"])))
    unspent = await handoff_token(daemon, old["device_token"])
    await pair(daemon, "Phone", "same-client")
    assert (await me_on_local(daemon, local["lanpair_device"].value)).status == 401
    late = await redeem(daemon, unspent)
    assert late.status == 401
    assert (await late.json())["error"] == "not_paired"


async def test_a_second_handoff_to_the_same_host_replaces_its_token(daemon: Daemon) -> None:
    """One token per host name: the .local name's earlier token ends, the IP token stays."""
    device = await pair(daemon)
    first = cookie_of(await redeem(daemon, await handoff_token(daemon, device["device_token"])))
    assert (await me_on_local(daemon, first["lanpair_device"].value)).status == 200
    second = cookie_of(await redeem(daemon, await handoff_token(daemon, device["device_token"])))
    assert (await me_on_local(daemon, first["lanpair_device"].value)).status == 401
    assert (await me_on_local(daemon, second["lanpair_device"].value)).status == 200
    async with daemon.session(headers=bearer(device["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 200


async def test_a_redeem_from_another_origin_is_refused(daemon: Daemon) -> None:
    """Only the page on the .local origin itself may spend the link (Origin must match Host)."""
    device = await pair(daemon)
    token = await handoff_token(daemon, device["device_token"])
    refused = await redeem(daemon, token, headers={"Origin": daemon.url})
    assert refused.status == 403
    assert (await refused.json())["error"] == "cross_origin"
    assert (await redeem(daemon, token)).status == 200  # not spent by the refusal


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"handoff_token=x", 415, "unsupported_media_type"),
        (b"{}", 400, "bad_request"),
        (b'{"handoff_token": 7}', 400, "bad_request"),
        (b'{"handoff_token": "short"}', 401, "invalid_handoff"),
        (b'{"handoff_token": "' + b"C" * 32 + b'"}', 401, "invalid_handoff"),
    ],
)
async def test_bad_redeems_get_documented_json_errors(
    daemon: Daemon, body: bytes, status: int, code: str
) -> None:
    """Malformed or unknown hand-offs get the JSON envelope, never a cookie."""
    content_type = "application/json" if body.startswith(b"{") else "text/plain"
    async with (
        daemon.session() as browser,
        browser.post(
            "/api/pairing/handoff/redeem",
            data=body,
            headers={"Content-Type": content_type, "Host": local_host(daemon)},
        ) as response,
    ):
        assert response.status == status
        assert (await response.json())["error"] == code
        assert "Set-Cookie" not in response.headers


async def test_failed_redeems_are_rate_limited_per_address(lan_daemon: Daemon) -> None:
    """Ten bad links from one address bring 429 even for a good one; other addresses redeem."""
    device = await pair(lan_daemon)
    for _ in range(10):
        assert (await redeem(lan_daemon, "D" * 32, source="127.0.0.3")).status == 401
    token = await handoff_token(lan_daemon, device["device_token"])
    blocked = await redeem(lan_daemon, token, source="127.0.0.3")
    assert blocked.status == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert (await redeem(lan_daemon, token, source="127.0.0.4")).status == 200


async def test_the_local_name_is_one_of_the_daemons_own(daemon: Daemon) -> None:
    """Host <host>.local:port is ours: the PC's own browser there is the owner."""
    headers = {"Host": local_host(daemon), "Origin": f"https://{local_host(daemon)}"}
    async with daemon.session() as owner:
        async with owner.get("/api/me", headers=headers) as response:
            assert (await response.json())["owner"] is True
        async with owner.post("/api/pairing/generate", json={}, headers=headers) as response:
            assert response.status == 200


async def test_no_token_of_a_handoff_reaches_the_log(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the link's token nor the token it buys appears in any log record."""
    with caplog.at_level(logging.DEBUG):
        device = await pair(daemon)
        token = await handoff_token(daemon, device["device_token"])
        redeemed = await redeem(daemon, token)
        local = cookie_of(redeemed)["lanpair_device"].value
        await me_on_local(daemon, local)
        await redeem(daemon, token)  # refused: used
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "handed" in text  # the redeem was logged, without its secrets
    for secret in (token, local, device["device_token"]):
        assert secret not in text
