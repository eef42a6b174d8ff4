"""Talk to a lanpair daemon over its HTTP API, pinning its key; nothing else.

``ApiClient.call`` makes JSON calls; ``request`` streams (downloads); the ``tus_*``
methods are a tus 1.0.0 client (core, creation) for resumable uploads. Each request runs
on a kept-alive ``pinned.Connection`` in a thread, so a transfer costs one thread hop
per request, not one per chunk, and the client side never imports aiohttp. tuspy, the
stock tus client, is synchronous and built on requests: it is only a test dependency,
a second implementation the daemon's tus server is checked against.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.client
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self
from urllib.parse import urlsplit

from lanpair.errors import DaemonNotRunning, RemoteError, Unreachable
from lanpair.paths import Paths
from lanpair.pinned import BLOCK_BYTES, Connection, Readable, in_thread

TIMEOUT_S = 30.0
TUS_VERSION = "1.0.0"
MAX_JSON_BYTES = 64 << 20


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
    """A client for one daemon: a few kept-alive connections, pinned when it speaks HTTPS."""

    def __init__(
        self,
        base_url: str,
        *,
        fingerprint: str | None = None,
        token: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._fingerprint = fingerprint
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._source_address = source_address
        self._timeout_s = timeout_s
        self._idle: list[Connection] = []
        self._open = False

    async def __aenter__(self) -> Self:
        """Start taking requests."""
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the kept-alive connections."""
        self._open = False
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the decoded JSON. Raises RemoteError, PinMismatch."""
        try:
            async with self.request(
                method, path, json_body=body if body is not None or method != "GET" else None
            ) as response:
                data = await response.json()
        except Unreachable as exc:
            raise RemoteError(exc.message) from exc
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
        body: bytes | Readable | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (),
        answer_timeout_s: float | None = None,
    ) -> AsyncIterator[Response]:
        """Send one request and yield its response, to be read inside the block.

        ``body``: bytes, or a file object read a block at a time (give Content-Length).
        A status of 400 or more raises RemoteError unless listed in ``ok``; a refused key
        raises PinMismatch; no connection, or nothing moving for the timeout, raises
        Unreachable.
        """
        if not self._open:
            raise RuntimeError("ApiClient is not open")
        sent = dict(self._headers, **(headers or {}))
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        if isinstance(body, bytes) or (body is None and method in ("POST", "PUT", "PATCH")):
            sent["Content-Length"] = str(len(body or b""))
        connection = self._idle.pop() if self._idle else self._connection()
        response: Response | None = None
        try:
            try:
                raw = await self._blocking(
                    connection,
                    connection.exchange,
                    method,
                    path,
                    sent,
                    body,
                    answer_timeout_s=answer_timeout_s,
                )
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
            response = Response(raw, connection, self)
            if raw.status >= 400 and raw.status not in ok:
                raise await _remote_error(response)
            yield response
        finally:
            if response is not None and response.finished and connection.usable and self._open:
                self._idle.append(connection)
            else:
                connection.close()

    def _connection(self) -> Connection:
        return Connection(
            self._scheme,
            self._host,
            self._port,
            fingerprint=self._fingerprint,
            timeout_s=self._timeout_s,
            source_address=self._source_address,
        )

    def _unreachable(self, exc: BaseException) -> Unreachable:
        if isinstance(exc, TimeoutError):
            return Unreachable(
                f"The lanpair daemon at {self.base_url} sent or took nothing for "
                f"{self._timeout_s:g} s."
            )
        if isinstance(exc, http.client.HTTPException):
            return Unreachable(f"The lanpair daemon at {self.base_url} broke off: {exc!r}")
        return Unreachable(f"Cannot reach the lanpair daemon at {self.base_url}: {exc}")

    @staticmethod
    async def _blocking(
        connection: Connection, work: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """Run ``work`` in a thread; if the caller is cancelled, cut the connection under it."""
        return await in_thread(connection, functools.partial(work, *args, **kw))

    async def tus_create(self, length: int, metadata: Mapping[str, str]) -> str:
        """Create a resumable upload of ``length`` bytes; return its path on the server."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Length": str(length),
            "Upload-Metadata": encode_metadata(metadata),
        }
        async with self.request("POST", "/api/tus/", headers=headers) as response:
            location = response.headers.get("Location", "")
            await response.read()
        path = urlsplit(location).path
        if response.status != 201 or not path.startswith("/api/tus/"):
            raise RemoteError(f"The PC answered the upload's creation with {response.status}.")
        return path

    async def tus_offset(self, location: str) -> int | None:
        """Return how many bytes of an upload the server has; None if it has no such upload."""
        headers = {"Tus-Resumable": TUS_VERSION}
        async with self.request("HEAD", location, headers=headers, ok=(404, 410)) as response:
            await response.read()
            if response.status in (404, 410):
                return None
            return _offset(response)

    async def tus_append(
        self,
        location: str,
        offset: int,
        body: Readable,
        length: int,
        *,
        answer_timeout_s: float | None = None,
    ) -> TusAnswer:
        """Send ``length`` bytes of ``body`` at ``offset`` in one PATCH; return where the
        upload stands. ``answer_timeout_s``: how long the PC may take to file a finished one."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }
        async with self.request(
            "PATCH", location, headers=headers, body=body, answer_timeout_s=answer_timeout_s
        ) as response:
            await response.read()
            file_id = response.headers.get("Lanpair-File-Id", "")
            return TusAnswer(
                offset=_offset(response),
                file_id=int(file_id) if file_id.isascii() and file_id.isdigit() else None,
                duplicate=response.headers.get("Lanpair-Duplicate") == "true",
                sha256=response.headers.get("Lanpair-Sha256") or None,
            )


class Response:
    """A response whose body is read in the connection's thread."""

    def __init__(
        self, raw: http.client.HTTPResponse, connection: Connection, api: ApiClient
    ) -> None:
        self._raw = raw
        self._connection = connection
        self._api = api
        self.status = raw.status
        self.headers = raw.headers

    @property
    def finished(self) -> bool:
        """Whether the whole body has been read (the connection can take the next request)."""
        return self._raw.isclosed()

    async def read(self, limit: int = MAX_JSON_BYTES) -> bytes:
        """Return the whole body (at most ``limit`` bytes, else Unreachable)."""
        try:
            data: bytes = await self._api._blocking(self._connection, self._raw.read, limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise self._api._unreachable(exc) from None
        if len(data) > limit:
            raise Unreachable(f"The answer from {self._api.base_url} is too large.")
        return data

    async def json(self) -> Any:
        """Return the decoded JSON body; None if there is none or it is not JSON."""
        data = await self.read()
        try:
            return json.loads(data) if data.strip() else None
        except ValueError:
            return None

    async def save_to(self, sink: BinaryIO, on_bytes: Callable[[int], None]) -> int:
        """Write the body to ``sink`` a block at a time; return how many bytes came.

        ``on_bytes`` hears of each block on the event loop, as it lands.
        """
        loop = asyncio.get_running_loop()
        raw = self._raw

        def copy() -> int:
            total = 0
            while True:
                try:
                    block = raw.read(BLOCK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Broken(exc) from exc
                if not block:
                    return total
                sink.write(block)  # a local failure (a full disk) stays an OSError
                total += len(block)
                loop.call_soon_threadsafe(on_bytes, len(block))

        try:
            return int(await self._api._blocking(self._connection, copy))
        except _Broken as broken:
            raise self._api._unreachable(broken.cause) from None


class _Broken(Exception):
    """The connection failed while a body was read (not the file it was written to)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True, slots=True)
class TusAnswer:
    """Where an upload stands after a PATCH; a finished one names the file it became."""

    offset: int
    file_id: int | None
    duplicate: bool
    sha256: str | None = None  # what the PC hashed, once the upload is finished


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """Write tus Upload-Metadata: ``key base64(value)`` pairs, comma-separated."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


def _offset(response: Response) -> int:
    text = response.headers.get("Upload-Offset", "")
    if not (text.isascii() and text.isdigit()):
        raise RemoteError("The PC's answer has no Upload-Offset.", status=response.status)
    return int(text)


async def _remote_error(response: Response) -> RemoteError:
    """Return the error a failed response describes (the daemon's JSON envelope)."""
    data = await response.json()
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
