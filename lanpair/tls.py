"""The daemon's TLS: its listening context, and its certificate, made by a short-lived child.

The X.509 work is ``lanpair.certs``, run as ``python -m lanpair.certs`` at start, when the
addresses change and every few hours; the daemon itself needs only ``ssl``. This module
holds what both sides share: ``CertInfo`` and the fingerprint's text form.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lanpair.errors import CertificateError
from lanpair.paths import python_module

log = logging.getLogger(__name__)
child_log = logging.getLogger("lanpair.certs")

HELPER_TIMEOUT_S = 60.0  # making a key and a certificate takes ~0.3 s; a stuck disk, longer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CertInfo:
    """Where the key and certificate are, and what a client pins."""

    cert_path: Path
    key_path: Path
    fingerprint: str
    not_after: datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the fields as JSON values."""
        return {
            "cert_path": str(self.cert_path),
            "key_path": str(self.key_path),
            "fingerprint": self.fingerprint,
            "not_after": self.not_after.isoformat(),
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CertInfo:
        """Read what ``to_json`` wrote. Raises KeyError, TypeError or ValueError."""
        return cls(
            cert_path=Path(data["cert_path"]),
            key_path=Path(data["key_path"]),
            fingerprint=str(data["fingerprint"]),
            not_after=datetime.fromisoformat(data["not_after"]),
            dns_names=tuple(map(str, data["dns_names"])),
            ip_addresses=tuple(map(str, data["ip_addresses"])),
        )


def encode_fingerprint(digest: bytes) -> str:
    """Write a pin digest as unpadded base64url."""
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def ensure_certificate(
    key_path: Path,
    cert_path: Path,
    *,
    hostname: str,
    addresses: Iterable[IPAddress],
    now: datetime,
) -> CertInfo:
    """Return a certificate covering ``hostname``.local and ``addresses``, issuing one if needed.

    ``certs.ensure_certificate`` does the work, in a child process; its log lines are
    logged here. Raises CertificateError.
    """
    request = {
        "key_path": str(key_path),
        "cert_path": str(cert_path),
        "hostname": hostname,
        "addresses": [str(a) for a in addresses],
        "now": now.isoformat(),
    }
    command, env = python_module("lanpair.certs")
    try:
        child = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise CertificateError(f"Cannot start the certificate helper: {exc}") from exc
    try:
        async with asyncio.timeout(HELPER_TIMEOUT_S):
            out, err = await child.communicate(json.dumps(request).encode())
    except TimeoutError:
        raise CertificateError(
            f"The certificate helper did not finish within {HELPER_TIMEOUT_S:.0f} s"
        ) from None
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    _relay(err.decode(errors="replace"))
    try:
        answer = json.loads(out)
        if child.returncode == 0:
            return CertInfo.from_json(answer)
        message = str(answer["error"])
    except (KeyError, TypeError, ValueError):
        message = f"The certificate helper failed (exit status {child.returncode})"
    raise CertificateError(message)


def _relay(text: str) -> None:
    """Log the child's lines ("LEVEL message") at their level; anything else as a warning."""
    levels = logging.getLevelNamesMapping()
    for line in text.splitlines():
        name, _, message = line.partition(" ")
        if name in levels and message:
            child_log.log(levels[name], "%s", message)
        elif line.strip():
            child_log.warning("%s", line)


def server_context(info: CertInfo) -> ssl.SSLContext:
    """Return a server-side TLS context for ``info`` (TLS 1.2 or newer). Blocking."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(info.cert_path, info.key_path)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"Cannot load the TLS certificate: {exc}") from exc
    return context


class ServerTls:
    """The listening TLS context; a re-issued certificate takes over for new connections.

    Each handshake is steered to the newest context from the SNI callback (called with or
    without SNI), so no context is changed while the event loop's handshakes use it.
    """

    def __init__(self, info: CertInfo) -> None:
        self.info = info
        self.context = server_context(info)
        self._current = self.context
        self.context.sni_callback = self._steer

    def use(self, info: CertInfo) -> None:
        """Serve ``info``'s certificate to every new connection. Blocking (reads the files)."""
        fresh = server_context(info)
        self.info, self._current = info, fresh

    def _steer(self, ssl_object: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._current is not self.context:
            ssl_object.context = self._current
