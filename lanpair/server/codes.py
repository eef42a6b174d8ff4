"""Pairing codes with their QR codes drawn ahead of time, so handing one out is quick.

Drawing a QR code takes tens of milliseconds of CPU; the next code's token and images
are made in a worker thread right after one is handed out. A prepared token exists only
in memory and is stored (its hash, with its expiry starting) only when handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from lanpair import qr
from lanpair.models import PendingPairing, Site
from lanpair.pairing import Pairing, new_token
from lanpair.tasks import spawn

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A pairing code as shown to the owner: token, URL and its QR code."""

    pending: PendingPairing
    url: str
    images: qr.QrImages


@dataclass(frozen=True, slots=True)
class _Prepared:
    token: str
    url: str
    images: qr.QrImages


def pairing_url(site: Site, token: str) -> str:
    """Return the URL the QR code carries: the confirm page with everything in the fragment."""
    fragment = {"t": token, "h": site.local_name}
    if site.fingerprint:
        fragment["fp"] = site.fingerprint
    fragment["id"] = site.device_id
    return site.url("/pair-confirm") + "#" + urlencode(fragment)


class CodeMint:
    """Issue pairing codes, keeping the next one drawn and ready."""

    def __init__(self, pairing: Pairing, site: Site) -> None:
        self._pairing = pairing
        self._site = site
        self._ready: _Prepared | None = None
        self._refill: asyncio.Task[None] | None = None

    async def issue(self, client_addr: str) -> IssuedCode:
        """Hand out a new pairing code and start drawing the one after it."""
        if self._ready is None and self._refill is not None and not self._refill.done():
            await asyncio.shield(self._refill)  # the next code is half drawn: finish it
        prepared, self._ready = self._ready, None
        if prepared is None or prepared.url != pairing_url(self._site, prepared.token):
            prepared = await asyncio.to_thread(self._prepare)
        pending = await self._pairing.generate(client_addr, token=prepared.token)
        self.prepare_next()
        return IssuedCode(pending=pending, url=prepared.url, images=prepared.images)

    def prepare_next(self) -> None:
        """Start drawing the next code in a worker thread, unless one is ready or on its way."""
        if self._ready is not None or (self._refill is not None and not self._refill.done()):
            return
        self._refill = spawn(self._fill(), "pairing-code-prepare")

    async def close(self) -> None:
        """Stop drawing; forget the prepared code."""
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        self._ready = None

    async def _fill(self) -> None:
        try:
            self._ready = await asyncio.to_thread(self._prepare)
        except Exception:
            log.exception("drawing the next pairing code failed")

    def _prepare(self) -> _Prepared:
        token = new_token()
        url = pairing_url(self._site, token)
        return _Prepared(token=token, url=url, images=qr.render(url))
