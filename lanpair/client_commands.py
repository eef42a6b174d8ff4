"""The client side's commands discover, pair and status (``cli`` dispatches here).

They make a few small pinned calls with the standard library (``pinned``), never load
aiohttp, and so ``discover`` answers within a second. push and pull:
``transfer_commands``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from lanpair import credentials, pinned
from lanpair.credentials import Book, ClientPaths, PairedPC
from lanpair.errors import (
    BadPairingLink,
    CodeExpired,
    CodeUsed,
    LanpairError,
    PinMismatch,
    RemoteError,
    TooManyAttempts,
    UnknownCode,
    UnknownPC,
    Unreachable,
)
from lanpair.locate import REACH_TIMEOUT_S, reach

if TYPE_CHECKING:
    from lanpair.discovery import Found

PROBE_TIMEOUT_S = 1.0
PAIR_BROWSE_TIMEOUT_S = 1.0
TOKEN_CHARS = 32
REFUSALS: dict[str, type[LanpairError]] = {
    "invalid_code": UnknownCode,
    "code_expired": CodeExpired,
    "code_used": CodeUsed,
    "too_many_attempts": TooManyAttempts,
}


def _paths(args: argparse.Namespace) -> ClientPaths:
    return ClientPaths.default(getattr(args, "client_dir", None))


def _out(text: str = "") -> None:
    print(text, flush=True)  # noqa: T201 - a command's output


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # noqa: T201 - a command's output


# --- discover -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """A daemon found on the LAN, and whether it answered over HTTP(S) with its own key."""

    found: Found
    status: str  # reachable | unreachable | wrong key | not lanpair
    reached_at: str | None
    version: str | None


def discover(args: argparse.Namespace) -> int:
    """List every lanpair daemon on the LAN, each checked over HTTP(S)."""
    seen = asyncio.run(_discover(args.timeout))
    paired = {pc.pc_id for pc in credentials.load(_paths(args).pairings).pcs}
    if args.json:
        _out(json.dumps([_seen_record(s, s.found.device_id in paired) for s in seen], indent=2))
        return 0
    if not seen:
        _err(f"No lanpair daemon answered within {args.timeout:g} s.")
        return 0
    rows: list[tuple[str, ...]] = [
        ("NAME", ".LOCAL NAME", "ADDRESSES", "PORT", "VERSION", "FINGERPRINT", "STATUS")
    ]
    for s in seen:
        f = s.found
        status = s.status + (", paired" if f.device_id in paired else "")
        rows.append(
            (
                f.name,
                f.server,
                ", ".join(f.addresses),
                str(f.port),
                s.version or f"v{f.version}",
                f.fingerprint or f"none ({f.scheme})",
                status,
            )
        )
    _table(rows)
    return 0


def _seen_record(seen: Seen, paired: bool) -> dict[str, Any]:
    found = seen.found
    return {
        "name": found.name,
        "local_name": found.server,
        "addresses": list(found.addresses),
        "port": found.port,
        "fingerprint": found.fingerprint,
        "version": seen.version,
        "protocol": found.version,
        "scheme": found.scheme,
        "device_id": found.device_id,
        "reachable": seen.status == "reachable",
        "status": seen.status,
        "reached_at": seen.reached_at,
        "paired": paired,
    }


async def _discover(timeout_s: float) -> list[Seen]:
    from lanpair import discovery

    found = await discovery.browse(timeout_s)
    return list(await asyncio.gather(*(_check(f) for f in found)))


async def _check(found: Found) -> Seen:
    """Ask every advertised address for /api/info, pinned to the advertised key."""
    outcomes = await asyncio.gather(
        *(_info_at(found, address) for address in found.addresses), return_exceptions=True
    )
    status = "unreachable"
    for address, outcome in zip(found.addresses, outcomes, strict=True):
        if isinstance(outcome, PinMismatch):
            status = "wrong key"
        elif isinstance(outcome, pinned.Answer):
            body = outcome.body if isinstance(outcome.body, dict) else {}
            if outcome.status == 200 and body.get("device_id") == found.device_id:
                return Seen(found, "reachable", address, str(body.get("version") or ""))
            if status == "unreachable":
                status = "not lanpair"
    return Seen(found, status, None, None)


async def _info_at(found: Found, address: str) -> pinned.Answer:
    return await pinned.call(
        found.scheme,
        address,
        found.port,
        "GET",
        "/api/info",
        fingerprint=found.fingerprint,
        timeout_s=PROBE_TIMEOUT_S,
    )


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# --- pair -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where to pair, and with which key and code."""

    scheme: str
    addresses: tuple[str, ...]
    port: int
    token: str
    fingerprint: str | None
    pc_id: str | None
    local_name: str | None
    announced_key: bool = False  # the key came from mDNS, not from the QR


def parse_link(link: str) -> Target:
    """Read a pairing QR's text. Raises BadPairingLink."""
    parts = urlsplit(link.strip())
    fragment = {k: v[-1] for k, v in parse_qs(parts.fragment, keep_blank_values=True).items()}
    token = fragment.get("t", "")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadPairingLink() from None
    if (
        parts.scheme not in ("https", "http")
        or not parts.hostname
        or parts.path.rstrip("/") != "/pair-confirm"
        or len(token) != TOKEN_CHARS
    ):
        raise BadPairingLink()
    fingerprint = fragment.get("fp") or None
    if parts.scheme == "https" and not fingerprint:
        raise BadPairingLink(
            "This link carries no key fingerprint (fp=…) to pin: use the QR code's whole text."
        )
    return Target(
        scheme=parts.scheme,
        addresses=(parts.hostname,),
        port=port,
        token=token,
        fingerprint=fingerprint,
        pc_id=fragment.get("id") or None,
        local_name=fragment.get("h") or None,
    )


def pair(args: argparse.Namespace) -> int:
    """Pair with a PC from its QR link, or its name and code; store the credentials."""
    paths = _paths(args)
    if "://" in args.target:
        if args.code:
            raise BadPairingLink("Give either the QR code's link or a name with --code.")
        target = parse_link(args.target)
    else:
        if not args.code:
            raise BadPairingLink()
        target = asyncio.run(_target_by_name(args.target, args.code, args.fingerprint))
    client_id = credentials.load(paths.pairings).client_id  # a new one if the file is new
    name = args.name or socket.gethostname() or "lanpair client"
    pc = asyncio.run(_pair(target, name, client_id))
    with credentials.editing(paths.pairings, client_id=client_id) as book:
        book.put(pc)
    _out(f"Paired with {pc.name!r} at {pc.base_url} as {pc.device_name!r} ({pc.device_id}).")
    if pc.fingerprint:
        origin = (
            "announced on the LAN, the one `lanpair qr` shows"
            if target.announced_key
            else "from the QR code"
        )
        _out(f"Pinned its key {pc.fingerprint} ({origin}).")
    else:
        _out("Warning: this PC serves plain HTTP; nothing sent to it is encrypted.")
    _out(f"Credentials saved in {paths.pairings}.")
    return 0


async def _target_by_name(name: str, code: str, fingerprint: str | None) -> Target:
    from lanpair import discovery

    if len(code) != TOKEN_CHARS:
        raise BadPairingLink(f"A pairing code has {TOKEN_CHARS} characters; see `lanpair qr`.")
    wanted = name.casefold().removesuffix(".")
    matches = [
        f
        for f in await discovery.browse(PAIR_BROWSE_TIMEOUT_S)
        if wanted in {f.name.casefold(), f.server.casefold(), f.device_id.casefold()}
    ]
    if not matches:
        raise UnknownPC(f"No lanpair daemon called {name!r} answered; see `lanpair discover`.")
    if len(matches) > 1:
        raise UnknownPC(f"Several daemons are called {name!r}; use the QR code's link instead.")
    found = matches[0]
    if found.scheme != "https":
        raise PinMismatch(
            f"{name!r} serves plain HTTP: the code would cross the network unprotected. "
            "Use the QR code's link."
        )
    if not fingerprint:
        # Anyone on the LAN can announce a name: the code goes only to a key the user vouched
        # for (the one `lanpair qr` shows on the PC), typed in or confirmed here.
        fingerprint = _confirm_key(name, found.fingerprint)
    if fingerprint and found.fingerprint != fingerprint:
        raise PinMismatch(
            f"{name!r} announces the key {found.fingerprint}, not {fingerprint}: not pairing."
        )
    if found.scheme == "https" and not found.fingerprint:
        raise PinMismatch(f"{name!r} announces no key fingerprint: use the QR code's link.")
    return Target(
        scheme=found.scheme,
        addresses=found.addresses,
        port=found.port,
        token=code,
        fingerprint=fingerprint or found.fingerprint,
        pc_id=found.device_id,
        local_name=found.server,
        announced_key=True,
    )


def _confirm_key(name: str, announced: str | None) -> str:
    """Ask the user to compare the announced key with the PC's; return it once they agree."""
    if not sys.stdin.isatty():
        raise PinMismatch(
            "Pairing by name needs the PC's key: add --fingerprint as `lanpair qr` prints it."
        )
    _out(f"{name!r} announces the key {announced}.")
    answer = input("Does `lanpair qr` on the PC show the same fingerprint? [y/N] ")
    if answer.strip().lower() not in {"y", "yes"}:
        raise PinMismatch("Not pairing: the keys were not confirmed to match.")
    return announced or ""


async def _pair(target: Target, device_name: str, client_id: str) -> PairedPC:
    """Check the PC's key and id, spend the code, return the new pairing."""
    address, info = await _first_answer(target)
    if target.pc_id and info.get("device_id") != target.pc_id:
        raise PinMismatch(
            f"The daemon at {address} is {info.get('device_id')!r}, not the PC of the QR code "
            f"({target.pc_id}): not pairing."
        )
    answer = await pinned.call(
        target.scheme,
        address,
        target.port,
        "POST",
        "/api/pairing/confirm",
        fingerprint=target.fingerprint,
        body={"pairing_token": target.token, "device_name": device_name, "device_id": client_id},
    )
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status != 200:
        refusal = REFUSALS.get(str(body.get("error")))
        if refusal is not None:
            raise refusal()
        raise RemoteError(str(body.get("message") or f"HTTP {answer.status}"), status=answer.status)
    return PairedPC(
        name=str(info.get("name") or target.local_name or address),
        pc_id=str(info.get("device_id") or target.pc_id),
        fingerprint=target.fingerprint,
        scheme=target.scheme,
        address=address,
        port=target.port,
        local_name=str(info.get("hostname") or target.local_name or ""),
        device_id=str(body["device_id"]),
        device_name=str(body.get("device_name") or device_name),
        token=str(body["device_token"]),
        paired_at=credentials.now_iso(),
        expires_at=body.get("expires_at"),
    )


async def _first_answer(target: Target) -> tuple[str, dict[str, Any]]:
    """Return the first address whose daemon answers /api/info with the pinned key."""
    failure: LanpairError = Unreachable()
    for address in target.addresses:
        try:
            answer = await pinned.call(
                target.scheme,
                address,
                target.port,
                "GET",
                "/api/info",
                fingerprint=target.fingerprint,
                timeout_s=REACH_TIMEOUT_S,
            )
        except PinMismatch as exc:
            raise PinMismatch(
                f"The server at {address}:{target.port} presents another key than the one "
                f"{'announced' if target.announced_key else 'in the QR code'}: refusing to "
                "pair. Someone on this network may be posing as the PC."
            ) from exc
        except Unreachable as exc:
            failure = exc
            continue
        if answer.status == 200 and isinstance(answer.body, dict):
            return address, answer.body
        failure = Unreachable(f"{address}:{target.port} does not look like lanpair.")
    raise failure


# --- status ---------------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    """Show every pairing: reachable or not, still valid or not, last sync."""
    paths = _paths(args)
    book = credentials.load(paths.pairings)
    if not book.pcs:
        if args.json:
            _out("[]")
        else:
            _out("Not paired with any PC. Run `lanpair pair` with a pairing QR code's text.")
        return 0
    reports = asyncio.run(_status(book, paths.pairings, use_mdns=args.mdns))
    if args.json:
        _out(json.dumps(reports, indent=2))
        return 0
    for report in reports:
        if report.get("moved_from"):
            _err(
                f"{report['name']!r} moved: {report['moved_from']} → {report['url']} "
                "(found by mDNS); stored address updated."
            )
        _out(f"{report['name']} ({report['pc_id']})  {report['url']}  {report['state']}")
        detail = f"  paired as {report['device_name']} ({report['device_id']})"
        if report.get("expires_at"):
            detail += f" until {report['expires_at']}"
        detail += f"; last sync {report.get('last_sync') or 'never'}"
        if report.get("file_count") is not None:
            detail += f"; {report['file_count']} files sent"
        _out(detail)
        _out(f"  key {report['fingerprint'] or 'none (plain HTTP)'}")
    return 0


async def _status(book: Book, book_path: Path, *, use_mdns: bool) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_one_status(pc, book_path, use_mdns) for pc in book.pcs)))


async def _one_status(pc: PairedPC, book_path: Path, use_mdns: bool) -> dict[str, Any]:
    report: dict[str, Any] = {**pc.public(), "moved_from": None, "reachable": False}
    try:
        reached = await reach(pc, book_path, use_mdns=use_mdns)
    except PinMismatch as exc:
        report["state"] = f"refused: {exc.message}"
        return {**report, "url": pc.base_url}
    except Unreachable:
        report["state"] = "unreachable"
        return {**report, "url": pc.base_url}
    pc = reached.pc
    report.update(pc.public(), url=pc.base_url, moved_from=reached.moved_from, reachable=True)
    try:
        answer = await pinned.call(
            pc.scheme,
            pc.address,
            pc.port,
            "GET",
            "/api/devices",
            fingerprint=pc.fingerprint,
            token=pc.token,
            timeout_s=REACH_TIMEOUT_S,
        )
    except (Unreachable, PinMismatch) as exc:
        report["state"] = f"reachable, but: {exc.message}"
        return report
    if answer.status == 401:
        report["state"] = "reachable, but this device is no longer paired (pair again)"
        return report
    devices = answer.body if isinstance(answer.body, list) else []
    mine = [d for d in devices if isinstance(d, dict) and d.get("device_id") == pc.device_id]
    me = mine[0] if mine else {}
    report["state"] = "reachable, paired"
    report["last_sync"] = me.get("last_sync") or pc.last_sync
    report["file_count"] = me.get("file_count")
    return report
