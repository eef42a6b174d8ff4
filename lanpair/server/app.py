"""The application factory: wires services into routes; starts nothing."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from aiohttp import web

from lanpair import __version__
from lanpair.clock import Clock
from lanpair.pairing import Pairing
from lanpair.paths import web_dir
from lanpair.server import api_pairing, pages
from lanpair.server.keys import SERVICES_KEY
from lanpair.server.middleware import (
    access_of,
    auth_middleware,
    error_middleware,
    security_headers,
)
from lanpair.store import Store


@dataclass(slots=True)
class Site:
    """What this daemon is and where phones reach it; the daemon keeps it current."""

    name: str
    device_id: str
    hostname: str
    port: int
    scheme: str
    ip: str
    fingerprint: str | None
    extra_names: tuple[str, ...] = ()
    version: str = __version__
    addresses: tuple[str, ...] = field(default_factory=tuple)

    @property
    def local_name(self) -> str:
        """Return ``<hostname>.local``."""
        return f"{self.hostname}.local"

    def own_names(self) -> frozenset[str]:
        """Return the Host names under which this PC's browser talks to lanpair."""
        return frozenset(
            {
                "localhost",
                "127.0.0.1",
                "::1",
                self.local_name,
                self.hostname,
                self.ip,
                *self.addresses,
                *(n.lower() for n in self.extra_names),
            }
        )

    def url(self, path: str = "/", host: str | None = None) -> str:
        """Return an absolute URL on this daemon."""
        host = host or self.ip
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}{path}"


@dataclass(frozen=True, slots=True)
class Services:
    """The collaborators the HTTP layer uses, already built by the daemon or a test."""

    store: Store
    pairing: Pairing
    clock: Clock
    site: Site
    owner_addresses: Container[str]


def create_app(services: Services) -> web.Application:
    """Build the web application around ``services``."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[SERVICES_KEY] = services
    app.on_response_prepare.append(security_headers)
    app.add_routes(api_pairing.routes)
    app.add_routes(pages.routes)
    app.router.add_static("/static/", web_dir(), name="static")
    _check_every_route_declares_access(app)
    return app


def _check_every_route_declares_access(app: web.Application) -> None:
    for route in app.router.routes():
        if isinstance(route.resource, web.StaticResource):
            continue
        if access_of(route.handler) is None:
            raise RuntimeError(f"route {route.method} {route.resource} declares no access level")
