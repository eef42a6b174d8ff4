"""Fixtures: a real daemon app on a real TLS socket, with a clock and owner check to steer."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp_pin import SpkiPin
from lan import Lan

from lanpair import certs, tls
from lanpair.clock import ManualClock
from lanpair.events import EventHub
from lanpair.library import Library
from lanpair.netif import LocalAddressSet
from lanpair.pairing import Pairing
from lanpair.paths import LibraryPaths, Paths
from lanpair.server import Services, Site, create_app, serving
from lanpair.store import Store
from lanpair.watcher import WatchMode

PENDING_TTL_S = 15 * 60
ONLINE_AFTER_REQUEST_S = 1.0  # a device without a socket goes offline this soon
PAIRING_TTL_S = 30 * 86400


@dataclass
class Daemon:
    """An app served over real TLS on 127.0.0.1, with its collaborators."""

    url: str
    port: int
    fingerprint: str
    clock: ManualClock
    store: Store
    site: Site
    library: Library
    app: web.Application
    cert_path: Path

    def session(
        self,
        *,
        source: str | None = None,
        headers: dict[str, str] | None = None,
        pin: str | None = None,
    ) -> aiohttp.ClientSession:
        """Return a client session pinned to this daemon's key, optionally from ``source``."""
        connector = aiohttp.TCPConnector(
            ssl=SpkiPin(pin or self.fingerprint),
            local_addr=(source, 0) if source else None,
        )
        return aiohttp.ClientSession(
            self.url,
            connector=connector,
            headers=headers,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )


StartDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture(scope="session")
def cert_info(tmp_path_factory: pytest.TempPathFactory) -> tls.CertInfo:
    """Return a certificate made for this test session's daemon."""
    folder = tmp_path_factory.mktemp("tls")
    return certs.ensure_certificate(
        folder / "key.pem",
        folder / "cert.pem",
        hostname="testhost",
        addresses=[ipaddress.ip_address("127.0.0.1")],
    )


@pytest.fixture
async def make_daemon(tmp_path: Path, cert_info: tls.CertInfo) -> AsyncIterator[StartDaemon]:
    """Yield a factory that serves the app; ``owner_addresses`` steers the owner check."""
    servers = contextlib.AsyncExitStack()
    stores: list[Store] = []
    libraries: list[Library] = []

    async def start(
        owner_addresses: Container[str] | None = None,
        *,
        reserve_bytes: int = 0,
        max_upload_bytes: int = 0,
        library_root: Path | None = None,
        watch: WatchMode | None = WatchMode.EVENTS,
    ) -> Daemon:
        clock = ManualClock()
        paths = Paths(tmp_path / f"data{len(stores)}")
        paths.ensure()
        store = Store(paths.database)
        await store.__aenter__()
        stores.append(store)
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        site = Site(
            name="Test PC",
            device_id="pc_test",
            hostname="testhost",
            port=port,
            scheme="https",
            ip="127.0.0.1",
            fingerprint=cert_info.fingerprint,
        )
        hub = EventHub(clock.now)
        pairing = Pairing(
            store,
            clock,
            pending_ttl_s=PENDING_TTL_S,
            pairing_ttl_s=PAIRING_TTL_S,
            hub=hub,
            online_after_request_s=ONLINE_AFTER_REQUEST_S,
        )
        library = Library(
            store,
            LibraryPaths(library_root or paths.data_dir / "library"),
            clock,
            thumbs_dir=paths.thumbs,
            pc_folder="Test PC",
            reserve_bytes=reserve_bytes,
            max_upload_bytes=max_upload_bytes,
            hub=hub,
            watch=watch,
        )
        await library.__aenter__()
        libraries.append(library)
        services = Services(
            store=store,
            pairing=pairing,
            library=library,
            hub=hub,
            clock=clock,
            site=site,
            owner_addresses=owner_addresses if owner_addresses is not None else LocalAddressSet(),
        )
        app = create_app(services)
        context = tls.server_context(cert_info)
        await servers.enter_async_context(serving(app, [sock], context, shutdown_timeout_s=3.0))
        return Daemon(
            url=f"https://127.0.0.1:{port}",
            port=port,
            fingerprint=cert_info.fingerprint,
            clock=clock,
            store=store,
            site=site,
            library=library,
            app=app,
            cert_path=cert_info.cert_path,
        )

    yield start
    await servers.aclose()
    for library in libraries:
        await library.__aexit__(None, None, None)
    for store in stores:
        await store.__aexit__(None, None, None)


@pytest.fixture
async def daemon(make_daemon: StartDaemon) -> Daemon:
    """Return a daemon whose owner is anything on loopback."""
    return await make_daemon()


@pytest.fixture
async def lan_daemon(make_daemon: StartDaemon) -> Daemon:
    """Return a daemon whose owner is 127.0.0.1 only, so 127.0.0.2 is a LAN peer."""
    return await make_daemon(owner_addresses={"127.0.0.1"})


@pytest.fixture(scope="module")
def shared_lan() -> Iterator[Lan]:
    """Build one virtual LAN (pc, phone, laptop) for a module's tests (root only)."""
    from lan import virtual_lan

    with virtual_lan() as built:
        yield built


@pytest.fixture
def lan(shared_lan: Lan) -> Iterator[Lan]:
    """Yield the module's LAN; afterwards stop its processes, re-plug cables, reset addresses."""
    yield shared_lan
    shared_lan.reset()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped test fails the run: CI installs everything the tests need."""
    from support import running_in_ci

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if running_in_ci() and skipped and exitstatus == 0:
        reporter.write_line(f"CI=true: {len(skipped)} skipped test(s) count as failures")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
