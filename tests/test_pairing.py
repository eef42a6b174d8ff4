"""The pairing lifecycle over a real database: codes, tokens, expiry, revocation, limits."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from lanpair import pairing
from lanpair.clock import ManualClock
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
from lanpair.models import OWNER, Caller, Confirmation, DeviceStatus
from lanpair.store import Store

PENDING_TTL_S = 15 * 60
PAIRING_TTL_S = 30 * 86400
PHONE = "192.168.1.50"


@dataclass
class World:
    """A Pairing over a real store, with the clock that drives it."""

    pairing: pairing.Pairing
    store: Store
    clock: ManualClock
    db: Path


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Yield a Pairing over an open Store in tmp_path, on a ManualClock."""
    clock = ManualClock()
    db = tmp_path / "db"
    async with Store(db) as store:
        yield World(
            pairing=pairing.Pairing(
                store, clock, pending_ttl_s=PENDING_TTL_S, pairing_ttl_s=PAIRING_TTL_S
            ),
            store=store,
            clock=clock,
            db=db,
        )


async def pair(
    world: World, name: str = "Anna's phone", client_id: str = "client-1", addr: str = PHONE
) -> Confirmation:
    """Generate a code and confirm it; return the confirmation."""
    code = await world.pairing.generate("127.0.0.1")
    return await world.pairing.confirm(code.token, name, client_id, addr)


def decodes_to_24_bytes(token: str) -> bool:
    """Return whether ``token`` is 32 URL-safe base64 characters encoding 24 bytes."""
    return (
        len(token) == 32
        and pairing.TOKEN_RE.fullmatch(token) is not None
        and len(base64.urlsafe_b64decode(token)) == 24
    )


async def test_tokens_are_24_bytes_of_urlsafe_base64(world: World) -> None:
    """Pairing codes and device tokens are 32 URL-safe base64 chars decoding to 24 bytes."""
    code = await world.pairing.generate()
    assert decodes_to_24_bytes(code.token)
    confirmation = await world.pairing.confirm(code.token, "Phone", "c1", PHONE)
    assert decodes_to_24_bytes(confirmation.device_token)
    assert confirmation.device_token != code.token


async def test_generate_sets_the_pending_expiry(world: World) -> None:
    """A new code expires pending_ttl after it was issued."""
    code = await world.pairing.generate()
    assert (code.expires_at - world.clock.now()).total_seconds() == PENDING_TTL_S


async def test_confirm_pairs_a_device(world: World) -> None:
    """Confirming a fresh code returns a confirmed device expiring pairing_ttl from now."""
    confirmation = await pair(world, name="Anna's phone", client_id="client-1")
    device = confirmation.device
    assert pairing.DEVICE_ID_RE.fullmatch(device.device_id)
    assert device.device_name == "Anna's phone"
    assert device.client_device_id == "client-1"
    assert device.status is DeviceStatus.CONFIRMED
    assert (device.expires_at - world.clock.now()).total_seconds() == PAIRING_TTL_S
    assert [d.device_id for d in await world.pairing.devices()] == [device.device_id]


async def test_code_works_only_once(world: World) -> None:
    """A second confirm of the same code is CodeUsed."""
    code = await world.pairing.generate()
    await world.pairing.confirm(code.token, "Phone", "c1", PHONE)
    with pytest.raises(CodeUsed):
        await world.pairing.confirm(code.token, "Other", "c2", PHONE)


async def test_code_expires_after_pending_ttl(world: World) -> None:
    """A code confirmed once pending_ttl has passed is CodeExpired."""
    code = await world.pairing.generate()
    world.clock.advance(PENDING_TTL_S)
    with pytest.raises(CodeExpired):
        await world.pairing.confirm(code.token, "Phone", "c1", PHONE)


async def test_code_still_works_just_before_expiry(world: World) -> None:
    """A code confirmed a second before it expires still pairs."""
    code = await world.pairing.generate()
    world.clock.advance(PENDING_TTL_S - 1)
    await world.pairing.confirm(code.token, "Phone", "c1", PHONE)


@pytest.mark.parametrize("token", ["", "garbage", "x" * 200, "../../etc/passwd", "A" * 31 + "!"])
async def test_malformed_code_is_unknown(world: World, token: str) -> None:
    """A code that is not token-shaped is UnknownCode."""
    with pytest.raises(UnknownCode):
        await world.pairing.confirm(token, "Phone", "c1", PHONE)


async def test_never_issued_code_is_unknown(world: World) -> None:
    """A well-formed code that was never issued is UnknownCode."""
    await world.pairing.generate()
    with pytest.raises(UnknownCode):
        await world.pairing.confirm(pairing.new_token(), "Phone", "c1", PHONE)


async def test_device_token_authenticates(world: World) -> None:
    """The device token handed out at confirm authenticates as that device."""
    confirmation = await pair(world)
    device = await world.pairing.authenticate(confirmation.device_token, PHONE)
    assert device.device_id == confirmation.device.device_id


async def test_authenticate_records_last_seen(world: World) -> None:
    """A successful authentication stores when the device was last seen."""
    confirmation = await pair(world)
    world.clock.advance(5)
    await world.pairing.authenticate(confirmation.device_token, PHONE)
    stored = await world.store.pairings.device(confirmation.device.device_id)
    assert stored is not None
    assert stored.last_seen == world.clock.now()


@pytest.mark.parametrize("token", ["", "nope", "A" * 32])
async def test_unknown_device_token_is_not_paired(world: World, token: str) -> None:
    """A token that no device holds is NotPaired."""
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(token, PHONE)


async def test_pairing_code_is_not_a_device_token(world: World) -> None:
    """The one-time pairing code itself never authenticates a device."""
    code = await world.pairing.generate()
    await world.pairing.confirm(code.token, "Phone", "c1", PHONE)
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(code.token, PHONE)


async def test_pairing_expires_after_pairing_ttl(world: World) -> None:
    """Once pairing_ttl has passed, the device token is NotPaired."""
    confirmation = await pair(world)
    world.clock.advance(PAIRING_TTL_S - 1)
    await world.pairing.authenticate(confirmation.device_token, PHONE)
    world.clock.advance(1)
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(confirmation.device_token, PHONE)
    assert world.pairing.status(confirmation.device) is DeviceStatus.EXPIRED


async def test_owner_revokes_by_device_id(world: World) -> None:
    """The owner revokes a device by id; its token is NotPaired afterwards."""
    confirmation = await pair(world)
    revoked = await world.pairing.revoke(confirmation.device.device_id, OWNER, "127.0.0.1")
    assert revoked.status is DeviceStatus.REVOKED
    assert revoked.revoked_at == world.clock.now()
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(confirmation.device_token, PHONE)


async def test_owner_revokes_by_device_token(world: World) -> None:
    """The owner revokes a device by its token; the token is NotPaired afterwards."""
    confirmation = await pair(world)
    revoked = await world.pairing.revoke(confirmation.device_token, OWNER, "127.0.0.1")
    assert revoked.device_id == confirmation.device.device_id
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(confirmation.device_token, PHONE)


@pytest.mark.parametrize("target", ["dev_000000000000", "nonsense", pairing.new_token()])
async def test_revoking_an_unknown_device_is_not_found(world: World, target: str) -> None:
    """Revoking an id or token no device has is NotFound."""
    await pair(world)
    with pytest.raises(NotFound):
        await world.pairing.revoke(target, OWNER, "127.0.0.1")


async def test_device_cannot_revoke_another_device(world: World) -> None:
    """A device revoking another device's pairing is NotOwner, and the other stays paired."""
    mine = await pair(world, client_id="mine")
    theirs = await pair(world, client_id="theirs")
    me = Caller(device=mine.device)
    with pytest.raises(NotOwner):
        await world.pairing.revoke(theirs.device.device_id, me, PHONE)
    with pytest.raises(NotOwner):
        await world.pairing.revoke(theirs.device_token, me, PHONE)
    await world.pairing.authenticate(theirs.device_token, PHONE)


async def test_anonymous_caller_cannot_revoke(world: World) -> None:
    """A caller that is neither owner nor a device cannot revoke anything."""
    confirmation = await pair(world)
    with pytest.raises(NotOwner):
        await world.pairing.revoke(confirmation.device.device_id, Caller(), PHONE)


async def test_device_can_revoke_itself(world: World) -> None:
    """A device may revoke its own pairing; its token is NotPaired afterwards."""
    confirmation = await pair(world)
    me = Caller(device=confirmation.device)
    await world.pairing.revoke(confirmation.device.device_id, me, PHONE)
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(confirmation.device_token, PHONE)


async def test_repairing_same_client_revokes_old_pairing(world: World) -> None:
    """Pairing again with the same client device id revokes the old device and token."""
    old = await pair(world, client_id="same-phone")
    new = await pair(world, client_id="same-phone")
    assert new.device.device_id != old.device.device_id
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(old.device_token, PHONE)
    await world.pairing.authenticate(new.device_token, PHONE)
    stored = await world.store.pairings.device(old.device.device_id)
    assert stored is not None
    assert stored.status is DeviceStatus.REVOKED


async def test_other_clients_keep_their_pairing(world: World) -> None:
    """Pairing a different client leaves earlier devices paired."""
    first = await pair(world, client_id="phone-a")
    await pair(world, client_id="phone-b")
    await world.pairing.authenticate(first.device_token, PHONE)


async def fail_confirms(world: World, addr: str, times: int) -> None:
    """Make ``times`` failed confirms from ``addr``."""
    for _ in range(times):
        with pytest.raises(UnknownCode):
            await world.pairing.confirm("garbage", "Phone", "c1", addr)


async def test_ten_failures_lock_out_an_address(world: World) -> None:
    """After 10 failed confirms from one address, even a valid code is TooManyAttempts."""
    await fail_confirms(world, "192.168.1.66", 10)
    code = await world.pairing.generate()
    with pytest.raises(TooManyAttempts) as raised:
        await world.pairing.confirm(code.token, "Phone", "c1", "192.168.1.66")
    assert 0 < raised.value.retry_after_s <= 300
    with pytest.raises(TooManyAttempts):
        world.pairing.check_attempts("192.168.1.66")


async def test_nine_failures_do_not_lock_out(world: World) -> None:
    """Nine failed confirms still leave an address able to pair."""
    await fail_confirms(world, "192.168.1.66", 9)
    await pair(world, addr="192.168.1.66")


async def test_lockout_is_per_address(world: World) -> None:
    """A locked-out address does not stop another address from pairing."""
    await fail_confirms(world, "192.168.1.66", 10)
    await pair(world, addr="192.168.1.67")


async def test_ipv6_addresses_in_one_slash64_share_the_limit(world: World) -> None:
    """Failures from addresses in one IPv6 /64 count together; another /64 is unaffected."""
    for host in range(1, 11):
        with pytest.raises(UnknownCode):
            await world.pairing.confirm("garbage", "Phone", "c1", f"2001:db8:1:2::{host:x}")
    code = await world.pairing.generate()
    with pytest.raises(TooManyAttempts):
        await world.pairing.confirm(code.token, "Phone", "c1", "2001:db8:1:2:ffff::99")
    await world.pairing.confirm(code.token, "Phone", "c1", "2001:db8:1:3::1")


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.168.1.5", "192.168.1.5"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:10.0.0.7", "10.0.0.7"),
        ("not an address", "not an address"),
    ],
)
def test_address_key_buckets(address: str, key: str) -> None:
    """address_key keeps IPv4 as is, unwraps mapped IPv4 and buckets IPv6 by /64."""
    assert pairing.address_key(address) == key


async def test_lockout_lifts_after_the_window(world: World) -> None:
    """TooManyAttempts lifts once the failures fall out of the 5-minute window."""
    await fail_confirms(world, "192.168.1.66", 10)
    world.clock.advance(299)
    with pytest.raises(TooManyAttempts):
        world.pairing.check_attempts("192.168.1.66")
    world.clock.advance(2)
    world.pairing.check_attempts("192.168.1.66")
    await pair(world, addr="192.168.1.66")


async def test_expired_and_used_codes_count_as_failures(world: World) -> None:
    """Spent and expired codes count towards the lockout like unknown ones."""
    stale = await world.pairing.generate()
    world.clock.advance(PENDING_TTL_S)
    used = await world.pairing.generate()
    await world.pairing.confirm(used.token, "Phone", "c1", PHONE)
    for _ in range(5):
        with pytest.raises(CodeUsed):
            await world.pairing.confirm(used.token, "Phone", "c1", "10.0.0.9")
    for _ in range(5):
        with pytest.raises(CodeExpired):
            await world.pairing.confirm(stale.token, "Phone", "c1", "10.0.0.9")
    with pytest.raises(TooManyAttempts):
        world.pairing.check_attempts("10.0.0.9")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Anna's   phone ", "Anna's phone"),
        ("Anna\x00's\x1b[31m phone\x7f", "Anna's[31m phone"),
        ("Cafe\u0301", "Caf\u00e9"),
        ("\u00c5ngstr\u00f6m", "\u00c5ngstr\u00f6m"),
        ("x" * 64, "x" * 64),
        ("e\x00\u0301", "\u00e9"),
        ("line\nbreak\ttab", "line break tab"),
        ("\U0001f468\u200d\U0001f469", "\U0001f468\u200d\U0001f469"),
        ("\u202egnp.exe", "gnp.exe"),
    ],
)
async def test_device_names_are_cleaned(world: World, raw: str, clean: str) -> None:
    """Names lose control and direction-override characters (emoji joiners stay), end NFC."""
    confirmation = await pair(world, name=raw)
    assert confirmation.device.device_name == clean
    stored = await world.store.pairings.device(confirmation.device.device_id)
    assert stored is not None
    assert stored.device_name == clean


@pytest.mark.parametrize("raw", ["", "   ", "\x00\x01\x7f", "x" * 65, 42, None])
async def test_bad_device_names_are_bad_requests(world: World, raw: object) -> None:
    """An empty, all-control, over-64-character or non-string name is BadRequest."""
    code = await world.pairing.generate()
    with pytest.raises(BadRequest):
        await world.pairing.confirm(code.token, raw, "c1", PHONE)
    await world.pairing.confirm(code.token, "Fine name", "c1", PHONE)


async def test_bad_client_device_id_is_a_bad_request(world: World) -> None:
    """A missing or over-128-character client device id is BadRequest."""
    code = await world.pairing.generate()
    for raw in ("", "y" * 129, None):
        with pytest.raises(BadRequest):
            await world.pairing.confirm(code.token, "Phone", raw, PHONE)


async def test_only_token_hashes_are_stored(world: World) -> None:
    """After a full flow no table and no database file holds a token or its raw bytes."""
    code = await world.pairing.generate("127.0.0.1")
    confirmation = await world.pairing.confirm(code.token, "Phone", "c1", PHONE)
    await world.pairing.authenticate(confirmation.device_token, PHONE)
    await world.pairing.revoke(confirmation.device_token, OWNER, "127.0.0.1")
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(confirmation.device_token, PHONE)
    secrets = [code.token, confirmation.device_token]
    secret_bytes = [s.encode() for s in secrets] + [base64.urlsafe_b64decode(s) for s in secrets]
    hashes = {pairing.hash_token(s) for s in secrets}

    with closing(sqlite3.connect(world.db)) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        assert {"pending", "devices", "audit"} <= set(tables)
        cells = [
            cell
            for table in tables
            for row in conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from sqlite_master
            for cell in row
        ]
    stored_hashes = {cell for cell in cells if isinstance(cell, bytes)}
    assert hashes <= stored_hashes
    for cell in cells:
        blob = cell if isinstance(cell, bytes) else str(cell).encode()
        for secret in secret_bytes:
            assert secret not in blob

    files = [p for p in world.db.parent.iterdir() if p.name.startswith(world.db.name)]
    for path in files:
        data = path.read_bytes()
        for secret in secret_bytes:
            assert secret not in data, path.name


async def audit_rows(world: World) -> list[dict[str, object]]:
    """Return the audit log oldest first."""
    return list(reversed(await world.store.pairings.audit_log(limit=1000)))


async def test_audit_log_records_the_lifecycle(world: World) -> None:
    """generate, confirm, confirm_failed, revoke and auth_failed each leave an audit row."""
    code = await world.pairing.generate("127.0.0.1")
    confirmation = await world.pairing.confirm(code.token, "Phone", "c1", PHONE)
    device_id = confirmation.device.device_id
    with pytest.raises(CodeUsed):
        await world.pairing.confirm(code.token, "Phone", "c1", "192.168.1.66")
    await world.pairing.revoke(device_id, OWNER, "127.0.0.1")
    with pytest.raises(NotPaired):
        await world.pairing.authenticate(confirmation.device_token, "192.168.1.77")

    rows = await audit_rows(world)
    assert [row["action"] for row in rows] == [
        "generate",
        "confirm",
        "confirm_failed",
        "revoke",
        "auth_failed",
    ]
    by_action = {row["action"]: row for row in rows}
    assert by_action["generate"]["client_addr"] == "127.0.0.1"
    assert by_action["confirm"]["client_addr"] == PHONE
    assert by_action["confirm"]["device_id"] == device_id
    assert by_action["confirm_failed"]["client_addr"] == "192.168.1.66"
    assert by_action["confirm_failed"]["detail"] == "used"
    assert by_action["revoke"]["device_id"] == device_id
    assert by_action["revoke"]["detail"] == "by owner"
    assert by_action["auth_failed"]["client_addr"] == "192.168.1.77"
    assert by_action["auth_failed"]["device_id"] == device_id
    assert by_action["auth_failed"]["detail"] == "revoked"
    for row in rows:
        assert row["time"] == "2026-01-01T00:00:00Z"


async def test_auth_failures_are_audited_once_a_minute_per_address(world: World) -> None:
    """Repeated bad tokens from one address leave one auth_failed row per minute."""
    for _ in range(5):
        with pytest.raises(NotPaired):
            await world.pairing.authenticate("B" * 32, "192.168.1.77")
    world.clock.advance(61)
    with pytest.raises(NotPaired):
        await world.pairing.authenticate("B" * 32, "192.168.1.77")
    failed = [row for row in await audit_rows(world) if row["action"] == "auth_failed"]
    assert len(failed) == 2
    assert all(row["client_addr"] == "192.168.1.77" for row in failed)
    assert failed[0]["detail"] == "unknown token"


async def test_a_handoff_gives_the_device_a_second_token(world: World) -> None:
    """Redeemed once, a hand-off adds a token of the same device; both authenticate."""
    first = await pair(world)
    device = first.device
    handoff = await world.pairing.hand_off(Caller(device=device), None, PHONE)
    assert decodes_to_24_bytes(handoff.token)
    assert handoff.expires_at == world.clock.now() + timedelta(seconds=pairing.HANDOFF_TTL_S)
    second = await world.pairing.redeem_handoff(handoff.token, "Host.local:8443", PHONE)
    assert second.device.device_id == device.device_id
    assert decodes_to_24_bytes(second.device_token)
    assert second.device_token not in {first.device_token, handoff.token}
    for token in (first.device_token, second.device_token):
        authenticated = await world.pairing.authenticate(token, PHONE)
        assert authenticated.device_id == device.device_id
    with pytest.raises(HandoffUsed):
        await world.pairing.redeem_handoff(handoff.token, "host.local:8443", PHONE)
    assert [d.device_id for d in await world.pairing.devices()] == [device.device_id]


async def test_handoff_refusals(world: World) -> None:
    """Unknown, malformed and expired hand-offs, and minting for another device, are refused."""
    device = (await pair(world)).device
    other = (await pair(world, "Other", "client-2")).device
    with pytest.raises(NotOwner):
        await world.pairing.hand_off(Caller(device=device), other.device_id, PHONE)
    with pytest.raises(BadRequest):
        await world.pairing.hand_off(OWNER, None, "127.0.0.1")
    for token in ["", "x" * 32, pairing.new_token()]:
        with pytest.raises(UnknownHandoff):
            await world.pairing.redeem_handoff(token, "host.local", PHONE)
    handoff = await world.pairing.hand_off(Caller(device=device), device.device_id, PHONE)
    world.clock.advance(pairing.HANDOFF_TTL_S)
    with pytest.raises(HandoffExpired):
        await world.pairing.redeem_handoff(handoff.token, "host.local", PHONE)


async def test_a_revoked_devices_handoff_buys_nothing(world: World) -> None:
    """A link minted before its device was revoked is refused as not paired."""
    device = (await pair(world)).device
    handoff = await world.pairing.hand_off(Caller(device=device), None, PHONE)
    await world.pairing.revoke(device.device_id, OWNER, "127.0.0.1")
    with pytest.raises(NotPaired):
        await world.pairing.redeem_handoff(handoff.token, "host.local", PHONE)


async def test_handoff_tokens_are_stored_only_as_hashes_and_audited(world: World) -> None:
    """The link's token and the token it buys are kept as hashes; each step leaves an audit row."""
    confirmation = await pair(world)
    device_id = confirmation.device.device_id
    handoff = await world.pairing.hand_off(Caller(device=confirmation.device), None, PHONE)
    bought = await world.pairing.redeem_handoff(handoff.token, "host.local:1", "192.168.1.51")
    with pytest.raises(HandoffUsed):
        await world.pairing.redeem_handoff(handoff.token, "host.local:1", "192.168.1.52")

    with closing(sqlite3.connect(world.db)) as conn:
        stored = {row[0] for row in conn.execute("SELECT token_hash FROM handoffs")}
        held = list(conn.execute("SELECT token_hash, device_id, host FROM device_tokens"))
        cells = [
            cell
            for table in ("handoffs", "device_tokens", "audit")
            for row in conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - fixed names
            for cell in row
        ]
    assert stored == {pairing.hash_token(handoff.token)}
    assert held == [(pairing.hash_token(bought.device_token), device_id, "host.local:1")]
    for secret in (handoff.token, bought.device_token):
        for cell in cells:
            assert secret.encode() not in (cell if isinstance(cell, bytes) else str(cell).encode())

    rows = [row for row in await audit_rows(world) if str(row["action"]).startswith("handoff")]
    assert [(r["action"], r["device_id"], r["client_addr"], r["detail"]) for r in rows] == [
        ("handoff", device_id, PHONE, None),
        ("handoff_redeem", device_id, "192.168.1.51", "host.local:1"),
        ("handoff_failed", device_id, "192.168.1.52", "used"),
    ]


async def test_failed_redeems_share_the_confirm_limit(world: World) -> None:
    """Bad hand-offs count against the same per-address budget as bad pairing codes."""
    await fail_confirms(world, "192.168.1.90", 9)
    with pytest.raises(UnknownHandoff):
        await world.pairing.redeem_handoff("E" * 32, "host.local", "192.168.1.90")
    with pytest.raises(TooManyAttempts):
        await world.pairing.redeem_handoff("E" * 32, "host.local", "192.168.1.90")
