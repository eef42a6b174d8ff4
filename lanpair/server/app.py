"""The application factory: wires services into routes; starts nothing."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from aiohttp import web

from lanpair.clock import Clock
from lanpair.events import EventHub
from lanpair.library import Library
from lanpair.models import Site
from lanpair.pairing import Pairing
from lanpair.paths import web_dir
from lanpair.server import api_library, api_pairing, api_tus, pages, ws
from lanpair.server.api_tus import TusStore
from lanpair.server.codes import CodeMint
from lanpair.server.keys import HUB_KEY, LIBRARY_KEY, MINT_KEY, SERVICES_KEY, SOCKETS_KEY, TUS_KEY
from lanpair.server.middleware import (
    access_of,
    auth_middleware,
    error_middleware,
    security_headers,
)
from lanpair.store import Store


@dataclass(frozen=True, slots=True)
class Services:
    """The collaborators the HTTP layer uses, already built by the daemon or a test."""

    store: Store
    pairing: Pairing
    library: Library
    hub: EventHub
    clock: Clock
    site: Site
    owner_addresses: Container[str]


def create_app(services: Services) -> web.Application:
    """Build the web application around ``services``."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[SERVICES_KEY] = services
    app[MINT_KEY] = CodeMint(services.pairing, services.site)
    app[LIBRARY_KEY] = services.library
    app[TUS_KEY] = TusStore(services.library.paths.resumable)
    app[HUB_KEY] = services.hub
    app[SOCKETS_KEY] = set()
    app.on_shutdown.append(ws.close_all)
    # on_startup runs after every cleanup_ctx has started, so the site is complete by then.
    app.on_startup.append(_prepare_first_code)
    app.cleanup_ctx.append(api_tus.purge_hourly)
    app.on_cleanup.append(_stop_drawing_codes)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(api_tus.tus_headers)
    app.add_routes(api_pairing.routes)
    app.add_routes(api_library.routes)
    app.add_routes(api_tus.routes)
    app.add_routes(ws.routes)
    app.add_routes(pages.routes)
    app.router.add_static("/static/", web_dir(), name="static")
    _check_every_route_declares_access(app)
    return app


async def _prepare_first_code(app: web.Application) -> None:
    """Draw the first pairing code while the daemon starts."""
    app[MINT_KEY].prepare_next()


async def _stop_drawing_codes(app: web.Application) -> None:
    """Stop drawing pairing codes."""
    await app[MINT_KEY].close()


def _check_every_route_declares_access(app: web.Application) -> None:
    for route in app.router.routes():
        if isinstance(route.resource, web.StaticResource):
            continue
        if access_of(route.handler) is None:
            raise RuntimeError(f"route {route.method} {route.resource} declares no access level")
