"""The client's transport (``ApiClient`` over ``pinned.Connection``) against small raw
HTTP servers on loopback: kept-alive connections the server dropped, silence, cancelling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from lanpair.client import ApiClient
from lanpair.errors import RemoteError, Unreachable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BODY = b'{"ok": true}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[str]]]:
    """Serve ``handler`` on 127.0.0.1; yield its URL and a log of what happened."""
    log: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.append("connected")
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.close()


async def test_a_kept_alive_connection_the_server_dropped_is_replaced_for_the_next_call() -> None:
    """A server that closes after each answer (without saying so) costs nothing but a redial."""

    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()

    async with raw_server(one_answer) as (url, log), ApiClient(url) as api:
        assert await api.call("GET", "/a") == {"ok": True}
        await asyncio.sleep(0.05)  # the server has closed its end by now
        assert await api.call("POST", "/b", {"x": 1}) == {"ok": True}
    assert log.count("connected") == 2


async def test_a_server_that_says_nothing_is_unreachable_after_the_timeout() -> None:
    """No byte for ``timeout_s``: the request ends with a clear error, not a hang."""
    heard = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        heard.set()
        await reader.read()  # until the client gives up

    async with raw_server(silent) as (url, _), ApiClient(url, timeout_s=0.3) as api:
        started = time.monotonic()
        with pytest.raises(Unreachable, match=r"nothing for 0\.3 s"):
            async with api.request("GET", "/slow"):
                pass
        assert heard.is_set()
        assert time.monotonic() - started < 2.0
        with pytest.raises(RemoteError) as refused:
            await api.call("GET", "/slow")
        assert refused.value.status == 0


async def test_cancelling_a_request_cuts_its_connection_at_once() -> None:
    """A cancelled request (Ctrl-C, a timeout around it) closes its socket at once, so the
    thread under it ends too instead of waiting out the connection's timeout."""
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # returns when the client's end is shut
        closed.set()

    async with raw_server(silent) as (url, _), ApiClient(url, timeout_s=30) as api:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(api.call("GET", "/slow"), 0.2)
        await asyncio.wait_for(closed.wait(), 2.0)


async def test_an_error_answer_becomes_a_remote_error_and_keeps_the_connection() -> None:
    """The daemon's JSON error envelope is read whole; the connection serves the next call."""

    async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"error": "not_found", "message": "No such file."}'
        for _ in range(2):
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 404 Not Found\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()

    async with raw_server(refusing) as (url, log), ApiClient(url) as api:
        for _ in range(2):
            with pytest.raises(RemoteError) as refused:
                await api.call("GET", "/files/9")
            assert (refused.value.status, refused.value.remote_code) == (404, "not_found")
            assert refused.value.message == "No such file."
    assert log.count("connected") == 1
