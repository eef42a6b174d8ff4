"""The pairing API over real HTTPS: who may do what, and how every refusal looks."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import ssl
from typing import Any

import aiohttp
import pytest
from conftest import PAIRING_TTL_S, PENDING_TTL_S, Daemon
from support import skip_or_fail

from lanpair.client import ApiClient
from lanpair.errors import PinMismatch

JSON = {"Content-Type": "application/json"}


async def generate(session: aiohttp.ClientSession) -> dict[str, Any]:
    """Make a pairing code as the owner."""
    async with session.post("/api/pairing/generate", json={}) as response:
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]


async def confirm(
    session: aiohttp.ClientSession, token: str, name: str = "Phone", client_id: str = "c-1"
) -> aiohttp.ClientResponse:
    """Confirm a pairing code; return the (read) response."""
    async with session.post(
        "/api/pairing/confirm",
        json={"pairing_token": token, "device_name": name, "device_id": client_id},
    ) as response:
        await response.read()
        return response


async def pair(daemon: Daemon, name: str = "Phone", client_id: str = "c-1") -> dict[str, Any]:
    """Pair a device through the API; return the confirm response body."""
    async with daemon.session() as owner, daemon.session() as phone:
        code = await generate(owner)
        response = await confirm(phone, code["pairing_token"], name, client_id)
        assert response.status == 200
        return await response.json()  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    """Return an Authorization header for a device token."""
    return {"Authorization": f"Bearer {token}"}


async def status_of(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> int:
    """Send a request; return its status."""
    async with session.request(method, path, **kw) as response:
        await response.read()
        return response.status


async def test_full_pairing_flow_over_pinned_https(daemon: Daemon) -> None:
    """Generate, confirm, and use the device token by cookie and by Bearer, pinned to the key."""
    async with daemon.session() as owner, daemon.session() as phone:
        code = await generate(owner)
        assert code["type"] == "device_pairing"
        assert code["device_id"] == "pc_test"
        assert (code["ip"], code["port"], code["protocol"]) == ("127.0.0.1", daemon.port, "https")
        assert code["hostname"] == "testhost.local"
        assert code["fingerprint"] == daemon.fingerprint
        assert code["url"] == (
            f"https://127.0.0.1:{daemon.port}/pair-confirm#t={code['pairing_token']}"
            f"&h=testhost.local&fp={daemon.fingerprint}&id=pc_test"
        )
        assert code["expires_at"].endswith("Z")
        assert code["qr_svg"].startswith("<svg")
        assert code["qr_png"].startswith("data:image/png;base64,")

        response = await confirm(phone, code["pairing_token"], "Anna's phone")
        assert response.status == 200
        body = await response.json()
        assert body["device_id"].startswith("dev_")
        assert body["device_name"] == "Anna's phone"
        assert len(base64.urlsafe_b64decode(body["device_token"])) == 24
        cookie = response.headers["Set-Cookie"]
        assert f"lanpair_device={body['device_token']}" in cookie
        for attribute in ("HttpOnly", "Secure", "SameSite=Strict", f"Max-Age={PAIRING_TTL_S}"):
            assert attribute in cookie

        async with phone.get("/api/me") as me:
            assert (await me.json())["device_id"] == body["device_id"]
    async with daemon.session(headers=bearer(body["device_token"])) as device:
        async with device.get("/api/me") as me:
            assert me.status == 200
            assert (await me.json())["device_name"] == "Anna's phone"
        async with device.get("/api/devices") as listed:
            assert [d["device_id"] for d in await listed.json()] == [body["device_id"]]
    async with daemon.session() as owner, owner.get("/api/pairing/devices") as listed:
        (row,) = await listed.json()
        assert row["status"] == "confirmed"
        assert set(row) >= {
            "device_id",
            "device_name",
            "status",
            "confirmed_at",
            "expires_at",
            "last_seen",
            "last_sync",
            "file_count",
        }


async def test_qr_png_decodes_to_exactly_the_url(daemon: Daemon) -> None:
    """The PNG QR code is a full QR code that decodes to the pairing URL."""
    try:
        from pyzbar import pyzbar
    except (ImportError, OSError) as exc:
        skip_or_fail(f"pyzbar cannot load libzbar ({exc}); apt-get install libzbar0")
    from PIL import Image

    async with daemon.session() as owner:
        code = await generate(owner)
    png = base64.b64decode(code["qr_png"].removeprefix("data:image/png;base64,"))
    (decoded,) = pyzbar.decode(Image.open(io.BytesIO(png)), symbols=[pyzbar.ZBarSymbol.QRCODE])
    assert decoded.data.decode() == code["url"]


async def test_client_refuses_a_server_with_another_key(daemon: Daemon) -> None:
    """A pinned client refuses to talk to a server presenting a different public key."""
    wrong = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    async with ApiClient(daemon.url, fingerprint=wrong) as client:
        with pytest.raises(PinMismatch):
            await client.call("GET", "/api/info")
    async with ApiClient(daemon.url, fingerprint=daemon.fingerprint) as client:
        assert (await client.call("GET", "/api/info"))["device_id"] == "pc_test"


async def test_pending_code_confirms_exactly_once(daemon: Daemon) -> None:
    """A second confirm with the same code is refused with 409."""
    async with daemon.session() as owner, daemon.session() as phone:
        code = await generate(owner)
        assert (await confirm(phone, code["pairing_token"])).status == 200
        again = await confirm(phone, code["pairing_token"], client_id="c-2")
        assert again.status == 409
        assert (await again.json())["error"] == "code_used"


async def test_pending_code_expires(daemon: Daemon) -> None:
    """A code older than the pending lifetime is refused."""
    async with daemon.session() as owner, daemon.session() as phone:
        code = await generate(owner)
        daemon.clock.advance(PENDING_TTL_S)
        response = await confirm(phone, code["pairing_token"])
        assert response.status == 401
        assert (await response.json())["error"] == "code_expired"


async def test_pairing_expires_after_its_lifetime(daemon: Daemon) -> None:
    """A device token stops working once the pairing lifetime has passed."""
    device = await pair(daemon)
    async with daemon.session(headers=bearer(device["device_token"])) as phone:
        daemon.clock.advance(PAIRING_TTL_S - 60)
        assert await status_of(phone, "GET", "/api/me") == 200
        daemon.clock.advance(60)
        assert await status_of(phone, "GET", "/api/me") == 401


async def test_revoked_device_gets_401_on_its_next_request(daemon: Daemon) -> None:
    """After the owner revokes a device, its token is refused, even from loopback."""
    device = await pair(daemon)
    async with daemon.session() as owner:
        path = f"/api/pairing/revoke/{device['device_id']}"
        assert await status_of(owner, "POST", path, json={}) == 200
    async with daemon.session(headers=bearer(device["device_token"])) as phone:
        async with phone.get("/api/me") as response:
            assert response.status == 401
            assert (await response.json())["error"] == "not_paired"
        # A revoked token is judged as that device alone: no owner rights from loopback.
        assert await status_of(phone, "GET", "/api/pairing/devices") == 401


async def test_owner_revokes_by_token_on_the_seed_route(daemon: Daemon) -> None:
    """The seed's /api/pairing/revoke/<token> revokes the device holding that token."""
    device = await pair(daemon)
    async with daemon.session() as owner:
        path = f"/api/pairing/revoke/{device['device_token']}"
        async with owner.post(path, json={}) as response:
            assert (await response.json())["device_id"] == device["device_id"]
    async with daemon.session(headers=bearer(device["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 401


async def test_device_revokes_itself_but_not_another(daemon: Daemon) -> None:
    """A device may revoke only its own pairing."""
    first = await pair(daemon, "First", "c-1")
    second = await pair(daemon, "Second", "c-2")
    async with daemon.session(headers=bearer(first["device_token"])) as phone:
        other = f"/api/pairing/revoke/{second['device_id']}"
        async with phone.post(other, json={}) as response:
            assert response.status == 403
            assert (await response.json())["error"] == "forbidden"
        own = f"/api/pairing/revoke/{first['device_id']}"
        assert await status_of(phone, "POST", own, json={}) == 200
        assert await status_of(phone, "GET", "/api/me") == 401
    async with daemon.session(headers=bearer(second["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 200


async def test_repairing_the_same_client_replaces_the_old_pairing(daemon: Daemon) -> None:
    """Confirming again with the same client device id revokes the earlier token."""
    old = await pair(daemon, "Phone", "same-client")
    new = await pair(daemon, "Phone", "same-client")
    assert old["device_id"] != new["device_id"]
    async with daemon.session(headers=bearer(old["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 401
    async with daemon.session(headers=bearer(new["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 200


@pytest.mark.parametrize(
    "spoof",
    [{}, {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"}],
)
async def test_lan_peer_gets_403_on_owner_routes(lan_daemon: Daemon, spoof: dict[str, str]) -> None:
    """A peer that is not this PC is refused owner actions, forwarding headers or not."""
    device = await pair(lan_daemon)
    async with lan_daemon.session(source="127.0.0.2", headers=spoof) as peer:
        for method, path in [
            ("POST", "/api/pairing/generate"),
            ("GET", "/api/pairing/devices"),
            ("POST", f"/api/pairing/revoke/{device['device_id']}"),
        ]:
            async with peer.request(method, path, json={} if method == "POST" else None) as r:
                assert r.status == 403, path
                assert (await r.json())["error"] == "forbidden"
        assert await status_of(peer, "GET", "/pairing") == 403
        assert await status_of(peer, "GET", "/pair-confirm") == 200
        assert await status_of(peer, "GET", "/api/info") == 200


async def test_lan_peer_pairs_and_uses_its_token(lan_daemon: Daemon) -> None:
    """A phone on the LAN confirms a code and its token works from there."""
    async with lan_daemon.session() as owner:
        code = await generate(owner)
    async with lan_daemon.session(source="127.0.0.2") as phone:
        assert (await confirm(phone, code["pairing_token"])).status == 200
        assert await status_of(phone, "GET", "/api/me") == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:443", "10.9.8.7"])
async def test_owner_with_a_foreign_host_header_is_refused(daemon: Daemon, host: str) -> None:
    """DNS rebinding: a loopback request naming another host is not the owner."""
    async with daemon.session() as owner:
        assert (
            await status_of(owner, "POST", "/api/pairing/generate", json={}, headers={"Host": host})
            == 403
        )
        for name in ["localhost", "testhost.local", f"127.0.0.1:{daemon.port}"]:
            assert (
                await status_of(owner, "GET", "/api/pairing/devices", headers={"Host": name}) == 200
            )


async def test_owner_with_a_cross_site_origin_is_refused(daemon: Daemon) -> None:
    """A page on another site cannot drive the owner's API through the owner's browser."""
    async with daemon.session() as owner:
        evil = {"Origin": "https://evil.example"}
        async with owner.post("/api/pairing/generate", json={}, headers=evil) as response:
            assert response.status == 403
            assert (await response.json())["error"] == "cross_origin"
        assert await status_of(owner, "GET", "/api/pairing/devices", headers=evil) == 403
        same = {"Origin": daemon.url}
        assert await status_of(owner, "POST", "/api/pairing/generate", json={}, headers=same) == 200


async def test_cookie_requests_that_change_state_need_same_origin_and_json(daemon: Daemon) -> None:
    """CSRF: a cookie-authenticated revoke from another origin, or as a form, is refused."""
    async with daemon.session() as owner, daemon.session() as phone:
        code = await generate(owner)
        device = await (await confirm(phone, code["pairing_token"])).json()
        path = f"/api/pairing/revoke/{device['device_id']}"
        assert (
            await status_of(
                phone, "POST", path, json={}, headers={"Origin": "https://evil.example"}
            )
            == 403
        )
        assert (
            await status_of(
                phone,
                "POST",
                path,
                data="x=1",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            == 415
        )
        assert await status_of(phone, "GET", "/api/me") == 200


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", JSON, 400, "bad_request"),
        (b"[1, 2]", JSON, 400, "bad_request"),
        (b'{"device_name": "x", "device_id": "y"}', JSON, 400, "bad_request"),
        (b'{"pairing_token": 5, "device_name": "x", "device_id": "y"}', JSON, 400, "bad_request"),
        (
            b'{"pairing_token": "t", "device_name": ["x"], "device_id": "y"}',
            JSON,
            400,
            "bad_request",
        ),
        (
            b'{"pairing_token": "t", "device_name": "   ", "device_id": "y"}',
            JSON,
            400,
            "bad_request",
        ),
        (
            b'{"pairing_token": "t", "device_name": "x", "device_id": "y"}',
            JSON,
            401,
            "invalid_code",
        ),
        (
            b"pairing_token=t",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (b'{"pad": "' + b"x" * 1_000_000 + b'"}', JSON, 413, "too_large"),
    ],
)
async def test_bad_confirm_bodies_get_documented_json_errors(
    daemon: Daemon, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    """Malformed, incomplete, mistyped or oversized confirm bodies get the JSON envelope."""
    async with (
        daemon.session() as phone,
        phone.post("/api/pairing/confirm", data=body, headers=headers) as response,
    ):
        assert response.status == status
        assert response.content_type == "application/json"
        error = await response.json()
        assert error["error"] == code
        assert error["message"]
        assert "Traceback" not in error["message"]


async def test_failed_confirms_are_rate_limited_per_address(lan_daemon: Daemon) -> None:
    """Ten bad codes from one address bring 429 with Retry-After; other addresses still pair."""
    async with lan_daemon.session(source="127.0.0.3") as attacker:
        for _ in range(10):
            assert (await confirm(attacker, "A" * 32)).status == 401
        async with lan_daemon.session() as owner:
            code = await generate(owner)
        blocked = await confirm(attacker, code["pairing_token"])
        assert blocked.status == 429
        assert int(blocked.headers["Retry-After"]) > 0
        assert (await blocked.json())["error"] == "too_many_attempts"
    async with lan_daemon.session(source="127.0.0.4") as phone:
        assert (await confirm(phone, code["pairing_token"])).status == 200


async def test_unknown_routes_and_methods_answer_json(daemon: Daemon) -> None:
    """404 and 405 under /api are JSON envelopes too."""
    async with daemon.session() as owner:
        async with owner.get("/api/nothing-here") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "not_found"
        async with owner.get("/api/pairing/generate") as response:
            assert response.status == 405
            assert (await response.json())["error"] == "method_not_allowed"


async def test_anonymous_callers_are_told_they_are_not_paired(lan_daemon: Daemon) -> None:
    """/api/me and /api/devices answer 401 to a peer without a token."""
    async with lan_daemon.session(source="127.0.0.2") as peer:
        for path in ["/api/me", "/api/devices"]:
            async with peer.get(path) as response:
                assert response.status == 401
                assert (await response.json())["error"] == "not_paired"


def raw_get(daemon: Daemon, path: str, header: bytes) -> tuple[int, bytes]:
    """Send a GET with one raw header line (any bytes); return the status and the body."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection(("127.0.0.1", daemon.port))) as tls:
        tls.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
            + header
            + b"\r\n\r\n"
        )
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_tokens_that_are_not_text_are_refused_as_unknown(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """A cookie or Bearer token of bytes that are not UTF-8 is no token: 401, no traceback
    (it once failed in the hashing, a 500 and a traceback in the log at each request)."""
    for header in (b"Authorization: Bearer \xff\xfe\xfd", b"Cookie: lanpair_device=\xff\xfe"):
        status, body = await asyncio.to_thread(raw_get, daemon, "/api/me", header)
        assert (status, json.loads(body)["error"]) == (401, "not_paired")
    assert "Traceback" not in caplog.text


async def test_a_token_link_keeps_the_pairing_only_when_the_device_opens_it(
    lan_daemon: Daemon,
) -> None:
    """/explorer/<token> puts the pairing in a cookie for the phone that opens it; not when
    another site sent the browser there, nor on the PC itself (a guest's link once made the
    owner's browser that guest: login CSRF)."""
    device = await pair(lan_daemon, "Guest", "guest")
    link = f"/explorer/{device['device_token']}"

    async def cookie_set(source: str | None, fetch_site: str) -> bool:
        async with (
            lan_daemon.session(source=source) as browser,
            browser.get(link, headers={"Sec-Fetch-Site": fetch_site}, allow_redirects=False) as r,
        ):
            assert (r.status, r.headers["Location"]) == (302, "/explorer")
            return "lanpair_device" in r.cookies

    assert await cookie_set("127.0.0.2", "none")  # the phone, from its bookmark
    assert not await cookie_set("127.0.0.2", "cross-site")
    assert not await cookie_set(None, "none")  # the PC's own browser


async def test_owner_me_and_info_hold_no_secrets(daemon: Daemon) -> None:
    """/api/me says owner; /api/info describes the daemon without any token."""
    async with daemon.session() as owner:
        async with owner.get("/api/me") as response:
            assert (await response.json())["owner"] is True
        async with owner.get("/api/info") as response:
            info = await response.json()
    assert info == {
        "name": "Test PC",
        "version": info["version"],
        "device_id": "pc_test",
        "hostname": "testhost.local",
        "fingerprint": daemon.fingerprint,
        "protocol": "https",
    }


async def test_a_stale_cookie_does_not_block_pairing_again(daemon: Daemon) -> None:
    """A phone whose old pairing was revoked can confirm a new code despite its dead cookie."""
    async with daemon.session() as owner, daemon.session() as phone:
        first = await (await confirm(phone, (await generate(owner))["pairing_token"])).json()
        await status_of(owner, "POST", f"/api/pairing/revoke/{first['device_id']}", json={})
        assert await status_of(phone, "GET", "/api/me") == 401
        assert (await confirm(phone, (await generate(owner))["pairing_token"])).status == 200
        assert await status_of(phone, "GET", "/api/me") == 200


@pytest.mark.parametrize(
    "path", ["/api/info", "/api/nothing", "/pair-confirm", "/static/api.js", "/pairing"]
)
async def test_every_response_carries_the_security_headers(daemon: Daemon, path: str) -> None:
    """CSP without inline script, nosniff, no-referrer and no framing, on every response."""
    async with daemon.session() as owner, owner.get(path) as response:
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_pages_are_served_to_the_right_people(lan_daemon: Daemon) -> None:
    """The owner gets the pairing page; a LAN peer gets the confirm page and a 403 page."""
    async with lan_daemon.session() as owner:
        async with owner.get("/pairing") as response:
            assert response.status == 200
            assert "/static/pairing.js" in await response.text()
        async with owner.get("/", allow_redirects=False) as response:
            assert response.headers["Location"] == "/pairing"
    async with lan_daemon.session(source="127.0.0.2") as peer:
        async with peer.get("/pairing") as response:
            assert response.status == 403
            assert response.content_type == "text/html"
        async with peer.get("/", allow_redirects=False) as response:
            assert response.headers["Location"] == "/pair-confirm"
        async with peer.get("/pair-confirm") as response:
            assert "/static/pair-confirm.js" in await response.text()


async def test_codes_drawn_ahead_follow_a_changed_address(daemon: Daemon) -> None:
    """A code drawn before the PC's address changed is redrawn with the new address."""
    async with daemon.session() as owner:
        first = await generate(owner)
        daemon.site.ip = "127.0.0.9"
        second = await generate(owner)
        third = await generate(owner)
    assert "//127.0.0.1:" in first["url"]
    for code in (second, third):
        assert code["url"].startswith(f"https://127.0.0.9:{daemon.port}/pair-confirm#t=")
        assert code["ip"] == "127.0.0.9"
    tokens = {c["pairing_token"] for c in (first, second, third)}
    assert len(tokens) == 3


async def test_a_device_revokes_itself_with_its_token_in_the_path(lan_daemon: Daemon) -> None:
    """The seed's /api/pairing/revoke/<token> works for the device itself, with no cookie."""
    device = await pair(lan_daemon)
    async with lan_daemon.session(source="127.0.0.2") as phone:
        path = f"/api/pairing/revoke/{device['device_token']}"
        assert await status_of(phone, "POST", path, json={}) == 200
    async with lan_daemon.session(headers=bearer(device["device_token"])) as phone:
        assert await status_of(phone, "GET", "/api/me") == 401


async def test_parallel_bad_confirms_cannot_outrun_the_rate_limit(lan_daemon: Daemon) -> None:
    """Sixty guesses sent at once from one address still meet 429 after the tenth."""
    async with lan_daemon.session(source="127.0.0.5") as attacker:
        statuses = await asyncio.gather(
            *(
                status_of(
                    attacker,
                    "POST",
                    "/api/pairing/confirm",
                    json={"pairing_token": "B" * 32, "device_name": "x", "device_id": "y"},
                )
                for _ in range(60)
            )
        )
    assert statuses.count(401) == 10
    assert statuses.count(429) == 50


async def test_deeply_nested_json_is_a_bad_request(daemon: Daemon) -> None:
    """A body that would blow the JSON parser's stack is a 400, not a 500."""
    async with (
        daemon.session() as phone,
        phone.post("/api/pairing/confirm", data=b"[" * 10_000, headers=JSON) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"] == "bad_request"


@pytest.mark.parametrize(
    "host", ["[::1", "evil.example@localhost", "localhost:99999999", "local host", ""]
)
async def test_malformed_host_headers_are_not_the_owner(daemon: Daemon, host: str) -> None:
    """A Host header that does not parse strictly is refused, never a 500."""
    async with daemon.session() as owner:
        assert (
            await status_of(owner, "POST", "/api/pairing/generate", json={}, headers={"Host": host})
            == 403
        )
