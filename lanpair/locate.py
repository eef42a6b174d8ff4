"""Find a paired PC: at the address it was paired on, else again by its id over mDNS.

DHCP hands PCs new addresses; the pairing keeps the PC's device id and pinned key, so
the daemon announcing that id, answering with that key, is the PC wherever it went. Its
new address is stored for next time. The checks are small pinned calls (``pinned``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lanpair import credentials, pinned
from lanpair.credentials import PairedPC
from lanpair.errors import MdnsRefused, PinMismatch, Unreachable

if TYPE_CHECKING:
    from lanpair.discovery import Found

REACH_TIMEOUT_S = 1.5
RESOLVE_TIMEOUT_S = 1.5


@dataclass(frozen=True, slots=True)
class Reached:
    """A paired PC that answered, and where it was before if it had moved."""

    pc: PairedPC
    moved_from: str | None = None


async def reach(pc: PairedPC, book_path: Path, *, use_mdns: bool) -> Reached:
    """Find the PC at its stored address, or again by its id over mDNS (then store where).

    Raises Unreachable, or PinMismatch when only a server with another key answers.
    """
    wrong_key: PinMismatch | None = None
    try:
        if await _is_it(pc, pc.address, pc.port):
            return Reached(pc)
    except PinMismatch as exc:
        wrong_key = exc  # the address may belong to another machine by now: look further
    if use_mdns:
        found = await _resolve(pc.pc_id)
        for address in found.addresses if found else ():
            if found is not None and await _is_it(pc, address, found.port, quiet=True):
                moved = replace(pc, address=address, port=found.port)
                await asyncio.to_thread(
                    credentials.update, book_path, pc.pc_id, address=address, port=found.port
                )
                return Reached(moved, moved_from=pc.base_url)
    if wrong_key is not None:
        raise wrong_key
    raise Unreachable(
        f"{pc.name!r} does not answer at {pc.base_url}"
        + (" and was not found on the LAN by mDNS" if use_mdns else "")
        + ": is its lanpair daemon running, and is this device on its network?"
    )


async def _is_it(pc: PairedPC, address: str, port: int, *, quiet: bool = False) -> bool:
    """Return whether the daemon at ``address`` is this PC, with its pinned key."""
    try:
        answer = await pinned.call(
            pc.scheme,
            address,
            port,
            "GET",
            "/api/info",
            fingerprint=pc.fingerprint,
            timeout_s=REACH_TIMEOUT_S,
        )
    except Unreachable:
        return False
    except PinMismatch:
        if quiet:
            return False
        raise
    body = answer.body if isinstance(answer.body, dict) else {}
    return answer.status == 200 and body.get("device_id") == pc.pc_id


async def _resolve(pc_id: str) -> Found | None:
    from lanpair import discovery

    try:
        return await discovery.resolve(pc_id, RESOLVE_TIMEOUT_S)
    except MdnsRefused:
        return None
