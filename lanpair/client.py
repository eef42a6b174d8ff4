"""Talk to a lanpair daemon over its HTTP API, pinning its key; nothing else.

``ApiClient.call`` makes JSON calls; ``request`` streams (downloads); the ``tus_*``
methods are a tus 1.0.0 client (core, creation) for resumable uploads. tuspy, the stock
tus client, is synchronous and built on requests: it is only a test dependency, a second
implementation the daemon's tus server is checked against.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_reqrep import Fingerprint

from lanpair.errors import DaemonNotRunning, PinMismatch, RemoteError, Unreachable
from lanpair.paths import Paths
from lanpair.pinned import pin_digest, spki_digest

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)
TUS_VERSION = "1.0.0"


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


@dataclass(frozen=True, slots=True)
class LocalDaemon:
    """A daemon running on this machine for a data directory."""

    url: str
    fingerprint: str | None
    pid: int


def find_local_daemon(paths: Paths) -> LocalDaemon:
    """Return the daemon serving ``paths``' data directory. Raises DaemonNotRunning. Blocking."""
    try:
        data = json.loads(paths.runtime_file.read_text())
        daemon = LocalDaemon(url=data["url"], fingerprint=data["fingerprint"], pid=int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise DaemonNotRunning() from None
    if not _alive(daemon.pid):
        raise DaemonNotRunning()
    return daemon


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ApiClient:
    """A small JSON client for one daemon, pinned to its key when it speaks HTTPS."""

    def __init__(
        self,
        base_url: str,
        *,
        fingerprint: str | None = None,
        token: str | None = None,
        local_addr: tuple[str, int] | None = None,
        timeout: aiohttp.ClientTimeout = TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._pin = SpkiPin(fingerprint) if fingerprint else None
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local_addr = local_addr
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        """Open the connection pool."""
        connector = aiohttp.TCPConnector(local_addr=self._local_addr)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the decoded JSON. Raises RemoteError, PinMismatch."""
        try:
            async with self.request(
                method, path, json_body=body if body is not None or method != "GET" else None
            ) as response:
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = None
        except Unreachable as exc:
            raise RemoteError(exc.message) from exc
        except aiohttp.ClientError as exc:
            raise RemoteError(f"The lanpair daemon at {self.base_url} failed: {exc}") from exc
        if data is None:
            raise RemoteError(f"HTTP {response.status}", status=response.status)
        return data

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (),
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request and yield its response for streaming.

        A status of 400 or more raises RemoteError unless listed in ``ok``; a refused
        key raises PinMismatch; no connection raises Unreachable.
        """
        if self._session is None:
            raise RuntimeError("ApiClient is not open")
        if self.base_url.startswith("https:") and self._pin is None:
            raise PinMismatch("No fingerprint to pin this HTTPS server to.")
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                headers=headers,
                data=data,
                json=json_body,
                ssl=self._pin if self._pin else True,
            ) as response:
                if response.status >= 400 and response.status not in ok:
                    raise await _remote_error(response)
                yield response
        except aiohttp.ServerFingerprintMismatch:
            raise PinMismatch() from None
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(
                f"Cannot reach the lanpair daemon at {self.base_url}: {exc.os_error}"
            ) from exc

    async def tus_create(self, length: int, metadata: Mapping[str, str]) -> str:
        """Create a resumable upload of ``length`` bytes; return its path on the server."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Length": str(length),
            "Upload-Metadata": encode_metadata(metadata),
        }
        async with self.request("POST", "/api/tus/", headers=headers) as response:
            location = response.headers.get("Location", "")
        path = urlsplit(location).path
        if response.status != 201 or not path.startswith("/api/tus/"):
            raise RemoteError(f"The PC answered the upload's creation with {response.status}.")
        return path

    async def tus_offset(self, location: str) -> int | None:
        """Return how many bytes of an upload the server has; None if it has no such upload."""
        headers = {"Tus-Resumable": TUS_VERSION}
        async with self.request("HEAD", location, headers=headers, ok=(404, 410)) as response:
            if response.status in (404, 410):
                return None
            return _offset(response)

    async def tus_append(
        self, location: str, offset: int, body: AsyncIterable[bytes], length: int
    ) -> TusAnswer:
        """Send ``length`` bytes at ``offset`` in one PATCH; return where the upload stands."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }
        async with self.request("PATCH", location, headers=headers, data=body) as response:
            file_id = response.headers.get("Lanpair-File-Id", "")
            return TusAnswer(
                offset=_offset(response),
                file_id=int(file_id) if file_id.isdigit() else None,
                duplicate=response.headers.get("Lanpair-Duplicate") == "true",
            )


@dataclass(frozen=True, slots=True)
class TusAnswer:
    """Where an upload stands after a PATCH; a finished one names the file it became."""

    offset: int
    file_id: int | None
    duplicate: bool


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """Write tus Upload-Metadata: ``key base64(value)`` pairs, comma-separated."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


def _offset(response: aiohttp.ClientResponse) -> int:
    text = response.headers.get("Upload-Offset", "")
    if not text.isdigit():
        raise RemoteError("The PC's answer has no Upload-Offset.", status=response.status)
    return int(text)


async def _remote_error(response: aiohttp.ClientResponse) -> RemoteError:
    """Return the error a failed response describes (the daemon's JSON envelope)."""
    data: Any = None
    with contextlib.suppress(ValueError, aiohttp.ClientError):
        data = await response.json(content_type=None)
    error = data if isinstance(data, dict) else {}
    return RemoteError(
        str(error.get("message") or f"HTTP {response.status}"),
        status=response.status,
        code=str(error.get("error", "")),
    )


def owner_client(data_dir: Path) -> ApiClient:
    """Return a client for the daemon running on this data directory. Blocking."""
    daemon = find_local_daemon(Paths(data_dir))
    return ApiClient(daemon.url, fingerprint=daemon.fingerprint)
