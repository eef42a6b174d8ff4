"""Serve an application on sockets the daemon bound, and tie components to its lifetime."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

from aiohttp import web

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'


def add_lifecycle(
    app: web.Application, component: contextlib.AbstractAsyncContextManager[object]
) -> None:
    """Enter ``component`` when the app starts and leave it when the app stops (in reverse)."""

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        async with component:
            yield

    app.cleanup_ctx.append(lifecycle)


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    sockets: list[socket.socket],
    ssl_context: ssl.SSLContext | None,
    *,
    shutdown_timeout_s: float,
) -> AsyncIterator[None]:
    """Start the app's lifecycles, accept connections on ``sockets``, and undo it all after.

    Whatever part of start-up succeeded is undone, even when a later part fails.
    """
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_format=ACCESS_LOG_FORMAT,
        shutdown_timeout=shutdown_timeout_s,
    )
    try:
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        yield
    finally:
        await runner.cleanup()
        for sock in sockets:
            sock.close()
