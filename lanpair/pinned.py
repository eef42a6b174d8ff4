"""Talk to a daemon over HTTP with its key pinned, standard library only.

``Connection`` is one keep-alive connection (``http.client``), blocking, run in a thread.
``call`` makes one small JSON request on one of its own (``Connection: close``):
``discover``, ``pair`` and ``status`` make a handful of those and must start fast.
Transfers stream through one kept alive: a blocking socket sends and receives with the least CPU
of any Python option (no event-loop hops per chunk, no memory-BIO copies), and nothing
here imports aiohttp, which costs ~0.3 s to import on a small machine — most of what
separates ``lanpair push`` from ``curl`` on one big file.

The pin is the SHA-256 of the certificate's SubjectPublicKeyInfo (``certs.spki_fingerprint``
on the daemon's side), checked after the handshake and before a byte of a request is
sent. The certificate comes from the TLS library already parsed as valid DER; ``spki_of``
only walks to its seventh field, so the client side needs no X.509 library
(cryptography costs another 0.1 s to import).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from lanpair.errors import PinMismatch, Unreachable

MAX_RESPONSE_BYTES = 4 << 20
DEFAULT_TIMEOUT_S = 3.0
BLOCK_BYTES = 1 << 20  # a streamed body is read and sent this much at a time


class Readable(Protocol):
    """What a streamed request body is read from (a file, or a wrapper of one)."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes; b"" at the end."""
        ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A response: status, decoded JSON body (None if it had none), and headers."""

    status: int
    body: Any
    headers: dict[str, str]


def fingerprint_of(cert_der: bytes) -> str:
    """Return the pin of a DER certificate: SHA-256 of its SPKI, unpadded base64url."""
    return base64.urlsafe_b64encode(spki_digest(cert_der)).rstrip(b"=").decode()


def spki_digest(cert_der: bytes) -> bytes:
    """Return the SHA-256 of a DER certificate's SPKI. Raises ValueError."""
    return hashlib.sha256(spki_of(cert_der)).digest()


def pin_digest(fingerprint: str) -> bytes:
    """Return the digest a fingerprint (unpadded base64url) writes. Raises ValueError."""
    digest = base64.urlsafe_b64decode(fingerprint + "=" * (-len(fingerprint) % 4))
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError(f"{fingerprint!r} is not a SHA-256 fingerprint")
    return digest


def spki_of(cert_der: bytes) -> bytes:
    """Return the DER SubjectPublicKeyInfo of a DER certificate. Raises ValueError."""
    _, start, _ = _element(cert_der, 0, 0x30)  # Certificate
    _, pos, _ = _element(cert_der, start, 0x30)  # TBSCertificate
    if cert_der[pos] == 0xA0:  # [0] version, present in every v3 certificate
        pos = _element(cert_der, pos, 0xA0)[2]
    pos = _element(cert_der, pos, 0x02)[2]  # serialNumber
    for _ in range(4):  # signature, issuer, validity, subject
        pos = _element(cert_der, pos, 0x30)[2]
    _, _, end = _element(cert_der, pos, 0x30)
    return cert_der[pos:end]


def _element(der: bytes, pos: int, tag: int) -> tuple[int, int, int]:
    """Return (tag position, content start, end) of the DER element at ``pos``."""
    if pos + 2 > len(der) or der[pos] != tag:
        raise ValueError("not the certificate layout expected")
    length, start = der[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("truncated DER")
    return pos, start, start + length


def _tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The daemon's certificate is self-signed by design: the SPKI pin is the check.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def call(
    scheme: str,
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    fingerprint: str | None,
    body: Any = None,
    token: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Answer:
    """Make one request on a connection of its own; return the answer whatever its status.

    Raises Unreachable (no connection, timeout, not HTTP) or PinMismatch (another key).
    """
    connection = Connection(scheme, host, port, fingerprint=fingerprint, timeout_s=timeout_s)
    payload = None if body is None else json.dumps(body).encode()
    headers = {
        "Accept": "application/json",
        "Connection": "close",
        "Content-Length": str(len(payload or b"")),
    }
    if payload is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def exchange() -> Answer:
        try:
            response = connection.exchange(method, path, headers, payload)
            raw = response.read(MAX_RESPONSE_BYTES + 1)
        finally:
            connection.close()
        if len(raw) > MAX_RESPONSE_BYTES:
            raise EOFError("the response is too large")
        try:
            decoded = json.loads(raw) if raw.strip() else None
        except ValueError:
            decoded = None
        got = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, decoded, got)

    try:
        async with asyncio.timeout(timeout_s):
            answer: Answer = await in_thread(connection, exchange)
            return answer
    except TimeoutError:
        raise Unreachable(f"{connection.origin} did not answer within {timeout_s:g} s.") from None
    except (OSError, EOFError, ValueError, http.client.HTTPException) as exc:
        raise Unreachable(f"Cannot reach {connection.origin}: {exc}") from None


async def in_thread(connection: Connection, work: Callable[..., Any], *args: Any) -> Any:
    """Run ``work`` in a thread; if the caller is cancelled, cut the connection under it."""
    try:
        return await asyncio.to_thread(work, *args)
    except asyncio.CancelledError:
        connection.abort()
        raise


def _check_pin(cert: bytes, fingerprint: str, origin: str) -> None:
    """Raise PinMismatch unless the server's certificate (DER) carries the pinned key."""
    try:
        got = fingerprint_of(cert)
    except ValueError:
        got = ""
    if not hmac.compare_digest(got.encode(), fingerprint.encode()):
        raise PinMismatch(
            f"{origin} presented another key ({got or 'none'}) than the pinned one "
            f"({fingerprint}): refusing to talk to it. If the PC's key really changed, pair "
            "again with a new QR code."
        )


class Connection:
    """One keep-alive HTTP/1.1 connection to a daemon, pinned when it speaks HTTPS.

    Blocking, for one thread at a time; ``abort`` may come from any thread. Every socket
    operation waits at most ``timeout_s``, so a cut cable ends a transfer by itself.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        fingerprint: str | None,
        timeout_s: float,
        source_address: tuple[str, int] | None = None,
    ) -> None:
        self.https = scheme == "https"
        if self.https and not fingerprint:
            raise PinMismatch("No fingerprint to pin this HTTPS server to.")
        self.origin = _origin(scheme, host, port)
        self._fingerprint = fingerprint or ""
        self._timeout_s = timeout_s
        self._host = _host_header(host, port)
        self._http = (
            http.client.HTTPSConnection(
                host,
                port,
                timeout=timeout_s,
                source_address=source_address,
                context=_tls_context(),
                blocksize=BLOCK_BYTES,
            )
            if self.https
            else http.client.HTTPConnection(
                host, port, timeout=timeout_s, source_address=source_address, blocksize=BLOCK_BYTES
            )
        )
        self._http.auto_open = 0  # (re)connect only through _connect, which checks the pin
        self._aborted = False

    def exchange(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | Readable | None = None,
        *,
        answer_timeout_s: float | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request; return its response, body unread (read it all before the next).

        ``body`` is bytes, or a file object read ``BLOCK_BYTES`` at a time (give its
        Content-Length in ``headers``). ``answer_timeout_s``: how long the server may think
        once the whole body is sent. A bytes request on a kept-alive connection the server
        has meanwhile closed is sent again on a new one. Raises PinMismatch, OSError
        (TimeoutError when nothing moved for ``timeout_s``), http.client.HTTPException.
        """
        repeatable = self._http.sock is not None and (body is None or isinstance(body, bytes))
        try:
            try:
                return self._exchange(method, path, headers, body, answer_timeout_s)
            except (ConnectionResetError, BrokenPipeError):  # incl. RemoteDisconnected
                if not repeatable or self._aborted:
                    raise
                self.close()
            return self._exchange(method, path, headers, body, answer_timeout_s)
        except BaseException:
            self.close()
            raise

    def _exchange(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | Readable | None,
        answer_timeout_s: float | None,
    ) -> http.client.HTTPResponse:
        if self._http.sock is None:
            self._connect()
        self._http.request(method, path, body=body, headers={"Host": self._host, **headers})
        sock = self._http.sock
        if answer_timeout_s is not None and sock is not None:
            sock.settimeout(answer_timeout_s)
        response = self._http.getresponse()
        if answer_timeout_s is not None and self._http.sock is not None:
            self._http.sock.settimeout(self._timeout_s)
        return response

    def _connect(self) -> None:
        if self._aborted:
            raise ConnectionAbortedError("the transfer was stopped")
        self._http.connect()
        if self.https:
            sock = self._http.sock
            cert = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
            _check_pin(cert or b"", self._fingerprint, self.origin)

    def abort(self) -> None:
        """Make whatever a thread is doing on this connection fail at once; never reuse it."""
        self._aborted = True
        sock = self._http.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: no TLS state

    @property
    def usable(self) -> bool:
        """Whether the connection can take another request."""
        return not self._aborted

    def close(self) -> None:
        """Close the socket (a later request opens a new one, unless aborted)."""
        self._http.close()


def _host_header(host: str, port: int) -> str:
    bare = host.split("%")[0]
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def _origin(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{_host_header(host, port)}"
