"""Pin aiohttp test clients to a daemon's key, as ``lanpair.pinned`` pins the CLI's."""

from __future__ import annotations

import asyncio
import hmac

import aiohttp
from aiohttp.client_reqrep import Fingerprint

from lanpair.pinned import pin_digest, spki_digest


class SpkiPin(Fingerprint):
    """Accept a TLS server only if its public key hashes to the pinned fingerprint.

    Checked after the handshake and before a single byte of the request is sent.
    """

    def __init__(self, fingerprint: str) -> None:
        super().__init__(pin_digest(fingerprint))
        self.expected = fingerprint

    def check(self, transport: asyncio.Transport) -> None:
        """Refuse the connection unless the peer's key is the pinned one."""
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is None:
            return
        der = sslobj.getpeercert(binary_form=True) or b""
        try:
            got = spki_digest(der)
        except ValueError:
            got = b""
        if not hmac.compare_digest(got, self.fingerprint):
            host, port, *_ = transport.get_extra_info("peername")
            raise aiohttp.ServerFingerprintMismatch(self.fingerprint, got, host, port)
