"""Talk to a lanpair daemon over its HTTP API, pinning its key; nothing else."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp.client_reqrep import Fingerprint

from lanpair.errors import DaemonNotRunning, PinMismatch, RemoteError
from lanpair.paths import Paths
from lanpair.tls import decode_fingerprint, peer_digest

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)


class SpkiPin(Fingerprint):
    """Accept a TLS server only if its public key hashes to the pinned fingerprint.

    Checked after the handshake and before a single byte of the request is sent.
    """

    def __init__(self, fingerprint: str) -> None:
        super().__init__(decode_fingerprint(fingerprint))
        self.expected = fingerprint

    def check(self, transport: asyncio.Transport) -> None:
        """Refuse the connection unless the peer's key is the pinned one."""
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is None:
            return
        der = sslobj.getpeercert(binary_form=True) or b""
        got = peer_digest(der) if der else b""
        if got != self.fingerprint:
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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._pin = SpkiPin(fingerprint) if fingerprint else None
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local_addr = local_addr
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        """Open the connection pool."""
        connector = aiohttp.TCPConnector(local_addr=self._local_addr)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=TIMEOUT, headers=self._headers
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
        if self._session is None:
            raise RuntimeError("ApiClient is not open")
        if self.base_url.startswith("https:") and self._pin is None:
            raise PinMismatch("No fingerprint to pin this HTTPS server to.")
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                json=body if body is not None or method != "GET" else None,
                ssl=self._pin if self._pin else True,
            ) as response:
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = None
                if response.status >= 400 or data is None:
                    error = data if isinstance(data, dict) else {}
                    raise RemoteError(
                        str(error.get("message") or f"HTTP {response.status}"),
                        status=response.status,
                        code=str(error.get("error", "")),
                    )
                return data
        except aiohttp.ServerFingerprintMismatch:
            raise PinMismatch() from None
        except aiohttp.ClientConnectorError as exc:
            raise RemoteError(f"Cannot reach the lanpair daemon at {self.base_url}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise RemoteError(f"The lanpair daemon at {self.base_url} failed: {exc}") from exc


def owner_client(data_dir: Path) -> ApiClient:
    """Return a client for the daemon running on this data directory. Blocking."""
    daemon = find_local_daemon(Paths(data_dir))
    return ApiClient(daemon.url, fingerprint=daemon.fingerprint)
