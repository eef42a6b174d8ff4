"""The composition root: bind, build, start, serve, stop. Nothing else starts anything."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import json
import logging
import os
import resource
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from lanpair import advertise, discovery, netif, tls
from lanpair.clock import Clock, SystemClock
from lanpair.config import Settings
from lanpair.errors import CertificateError, ConfigError
from lanpair.events import EventHub
from lanpair.library import Library
from lanpair.models import Site
from lanpair.pairing import Pairing
from lanpair.paths import LibraryPaths, Paths, replace_file
from lanpair.server import Services, add_lifecycle, create_app, serving
from lanpair.store import Store
from lanpair.tasks import spawn
from lanpair.watcher import WatchMode
from lanpair.workers import WorkerPool

log = logging.getLogger(__name__)

ADDRESS_CHECK_S = 5.0
M_ARENA_MAX = -8  # glibc's mallopt() parameter number
EVENT_ID_BLOCK = 10_000_000  # event ids one run may use before they could repeat
CERT_CHECK_S = 6 * 3600.0
CERT_RETRY_S = 10 * 60  # after a failed renewal
SHUTDOWN_TIMEOUT_S = 3.0
THUMB_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Ready:
    """What a started daemon tells whoever launched it."""

    listen_url: str
    pairing_urls: tuple[str, ...]
    fingerprint: str | None
    data_dir: str
    library: str


def run(settings: Settings, on_ready: Callable[[Ready], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly. Blocking."""
    with asyncio.Runner(loop_factory=_loop_factory(tls=settings.tls)) as runner:
        runner.run(serve(settings, on_ready=on_ready))


def _loop_factory(*, tls: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's event loop for a TLS daemon, where uvloop is installed.

    Measured (bench/RESULTS.md): under TLS uvloop cuts an idle WebSocket from 292 to 45 KiB
    (asyncio keeps a 256 KiB buffer per TLS connection) and serves more requests; over
    plain HTTP asyncio wins downloads, because its transports do real sendfile() and
    uvloop's do not.
    """
    if not tls:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[Ready], None] | None = None,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start every part in order, serve until ``stop`` is set (or a signal), stop in reverse."""
    stop = stop or asyncio.Event()
    with _stop_on_signals(stop):
        await _serve(settings, on_ready, clock or SystemClock(), stop)


async def _serve(
    settings: Settings, on_ready: Callable[[Ready], None] | None, clock: Clock, stop: asyncio.Event
) -> None:
    _raise_open_files_limit()
    _fewer_malloc_arenas()
    paths = Paths(settings.data_dir)
    await asyncio.to_thread(_usable, paths.ensure, "data folder", settings.data_dir)
    with _only_daemon(paths):
        await _serve_alone(settings, paths, on_ready, clock, stop)


def _usable(ensure: Callable[[], None], what: str, folder: Path) -> None:
    """Create a folder lanpair needs, or say in a sentence why it cannot. Blocking."""
    try:
        ensure()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != folder else ""
        why = "it is a file" if exc.errno == errno.EEXIST else f"{exc.strerror or exc}{where}"
        raise ConfigError(f"Cannot use {folder} as the {what}: {why}.") from None


@contextlib.contextmanager
def _only_daemon(paths: Paths) -> Iterator[None]:
    """Hold the data folder's lock for as long as this daemon runs; refuse to run beside
    another daemon on the same data (two would overwrite each other's runtime file, and
    the owner's commands would reach neither for sure)."""
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"Another lanpair daemon is already running on {paths.data_dir}; stop it first "
                "(or give this one another --data-dir)."
            ) from None
        yield
    finally:
        os.close(fd)  # the lock goes with it


async def _serve_alone(
    settings: Settings,
    paths: Paths,
    on_ready: Callable[[Ready], None] | None,
    clock: Clock,
    stop: asyncio.Event,
) -> None:
    await asyncio.to_thread(
        _usable, LibraryPaths(settings.library).ensure, "library folder", settings.library
    )
    addresses = netif.LocalAddressSet()
    await asyncio.to_thread(addresses.refresh)
    server_tls = await _set_up_tls(settings, paths, clock)
    sockets = await asyncio.to_thread(_bind, settings)

    store = Store(paths.database)
    site = Site(
        name=settings.name,
        device_id="",
        hostname=settings.hostname,
        port=sockets[0].getsockname()[1],
        scheme="https" if server_tls else "http",
        ip=settings.advertise_ip or await asyncio.to_thread(_advertise_ip, settings),
        fingerprint=server_tls.info.fingerprint if server_tls else None,
        extra_names=settings.owner_hosts,
    )
    hub = EventHub(clock.now)
    pairing = Pairing(
        store,
        clock,
        pending_ttl_s=settings.pending_ttl_s,
        pairing_ttl_s=settings.pairing_ttl_s,
        hub=hub,
    )
    pool = WorkerPool(settings.thumb_workers, timeout_s=THUMB_TIMEOUT_S, name="lanpair-thumbs")
    library = Library(
        store,
        LibraryPaths(settings.library),
        clock,
        thumbs_dir=paths.thumbs,
        pc_folder=settings.name,
        reserve_bytes=settings.reserve_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        run_job=pool.run,
        thumb_tasks=settings.thumb_workers,
        hub=hub,
        watch=WatchMode(settings.watch),
    )
    app = create_app(
        Services(
            store=store,
            pairing=pairing,
            library=library,
            hub=hub,
            clock=clock,
            site=site,
            owner_addresses=addresses,
        )
    )
    add_lifecycle(app, _opened(store, site, hub))
    add_lifecycle(app, pool)
    add_lifecycle(app, library)
    announcer = Announcer(settings, site)
    if settings.mdns:
        add_lifecycle(app, announcer)
    else:
        log.info("mDNS is off (--no-mdns): other machines find this PC by its QR code or address")
    add_lifecycle(
        app,
        background(
            _watch_network(settings, paths, site, addresses, server_tls, clock, announcer),
            name="network-watch",
        ),
    )
    async with serving(
        app,
        sockets,
        server_tls.context if server_tls else None,
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
    ):
        await asyncio.to_thread(_write_runtime_file, paths, site, sockets)
        try:
            log.info(
                "lanpair %s serving %s on port %d", site.version, site.scheme.upper(), site.port
            )
            if on_ready is not None:
                on_ready(_ready(settings, site, sockets))
            await stop.wait()
            log.info("stopping")
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(paths.runtime_file.unlink)
    log.info("stopped")


async def _set_up_tls(settings: Settings, paths: Paths, clock: Clock) -> tls.ServerTls | None:
    if not settings.tls:
        log.warning("TLS is off (--no-tls): serving plain HTTP; anyone on the LAN can read traffic")
        return None
    try:
        info = await _ensure_cert(settings.hostname, paths, clock)
        server_tls = await asyncio.to_thread(tls.ServerTls, info)
    except CertificateError as exc:
        log.error("TLS COULD NOT BE SET UP (%s): SERVING PLAIN HTTP", exc)
        return None
    log.info("TLS certificate fingerprint (SHA-256 of the public key): %s", info.fingerprint)
    return server_tls


async def _ensure_cert(hostname: str, paths: Paths, clock: Clock) -> tls.CertInfo:
    return await tls.ensure_certificate(
        paths.tls_key,
        paths.tls_cert,
        hostname=hostname,
        addresses=await asyncio.to_thread(netif.lan_addresses),
        now=clock.now(),
    )


def _advertise_ip(settings: Settings) -> str:
    """Pick the address for the QR code: one the daemon listens on, a phone can reach."""
    specific = [h for h in settings.host if h not in {"0.0.0.0", "::"}]
    if specific:
        reachable = [h for h in specific if not ipaddress.ip_address(h).is_loopback]
        if not reachable:
            log.warning("listening on loopback only: phones on the LAN cannot reach this daemon")
        return (reachable or specific)[0]
    ip = netif.default_route_ip()
    if ip is None:
        log.warning("found no LAN address for the QR code; using 127.0.0.1 (set --advertise-ip)")
        return "127.0.0.1"
    return ip


def _bind(settings: Settings) -> list[socket.socket]:
    """Bind the listening sockets first, so the real port is known before anything starts."""
    sockets: list[socket.socket] = []
    try:
        if not settings.host:
            if socket.has_dualstack_ipv6():
                return [
                    socket.create_server(
                        ("::", settings.port),
                        family=socket.AF_INET6,
                        dualstack_ipv6=True,
                        backlog=1024,
                    )
                ]
            return [socket.create_server(("0.0.0.0", settings.port), backlog=1024)]
        port = settings.port
        # "::" alone means every address, IPv4 too, as lanpair advertises IPv4 ones (and as
        # with no --host); beside "0.0.0.0" it is only IPv6, which that one leaves free.
        both = "0.0.0.0" not in settings.host and socket.has_dualstack_ipv6()
        for host in settings.host:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sockets.append(
                socket.create_server(
                    (host, port),
                    family=family,
                    dualstack_ipv6=both and host == "::",
                    backlog=1024,
                )
            )
            port = sockets[-1].getsockname()[1]
        return sockets
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"Cannot listen on port {settings.port}: {exc.strerror}.") from exc


def _fewer_malloc_arenas() -> None:
    """Keep glibc to two malloc arenas (not eight per core): each worker thread that touches
    an upload's 1 MiB blocks otherwise keeps its own arena's pages resident. Measured over
    a bench round of big and small uploads: peak RSS 106 -> 87 MiB (plain HTTP)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return  # the user chose
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        libc = ctypes.CDLL(None)
        libc.mallopt(M_ARENA_MAX, 2)


def _raise_open_files_limit() -> None:
    """Let every open WebSocket and upload have its file descriptor (the soft limit is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d: %s", soft, exc)
            return
        log.info("raised the open-files limit from %d to %d", soft, wanted)


@contextlib.asynccontextmanager
async def _opened(store: Store, site: Site, hub: EventHub) -> AsyncIterator[None]:
    """Open the store; learn this PC's stable device id and where event ids go on from."""
    async with store:
        site.device_id = await store.meta("device_id", lambda: "pc_" + secrets.token_hex(6))
        # Ids this run never shares with an earlier one, crash or not: a client back with an
        # old id then gets a resync, never another run's events.
        hub.start_at(await store.reserve("event_ids", EVENT_ID_BLOCK, hub.last_id + 1))
        yield


async def _watch_network(
    settings: Settings,
    paths: Paths,
    site: Site,
    addresses: netif.LocalAddressSet,
    server_tls: tls.ServerTls | None,
    clock: Clock,
    announcer: Announcer,
) -> None:
    """Every few seconds: follow address changes (QR address, certificate names, mDNS);
    every few hours: renew the certificate before it expires."""
    cert_checked = time.monotonic()
    cert_stale = moved = False
    named = settings.hostname  # the certificate's .local name
    while True:
        await asyncio.sleep(ADDRESS_CHECK_S)
        try:
            if site.hostname != named:  # mDNS found the name taken: "<host>-2" now
                named, cert_stale = site.hostname, True
            if await asyncio.to_thread(addresses.refresh):
                log.info("network addresses changed")
                if not settings.advertise_ip:
                    site.ip = await asyncio.to_thread(_advertise_ip, settings)
                cert_stale = moved = True
            if time.monotonic() - cert_checked > CERT_CHECK_S:
                cert_stale = True
            if server_tls is not None and cert_stale:
                cert_checked, cert_stale = time.monotonic(), False
                try:
                    info = await _ensure_cert(site.hostname, paths, clock)
                except CertificateError as exc:  # the one in use still serves: try later
                    log.warning(
                        "could not renew the TLS certificate (%s); serving the current one, "
                        "trying again in %d minutes",
                        exc.message,
                        CERT_RETRY_S // 60,
                    )
                    cert_checked -= CERT_CHECK_S - CERT_RETRY_S
                else:
                    if info != server_tls.info:
                        await asyncio.to_thread(server_tls.use, info)
            if moved:  # after the certificate: whoever follows the news finds it covered
                await announcer.update()
                moved = False
        except Exception:
            log.exception("following the network or renewing the certificate failed; retrying")


class Announcer:
    """The daemon's mDNS advertisement, made once the store has told the PC's device id."""

    def __init__(self, settings: Settings, site: Site) -> None:
        self._settings = settings
        self._site = site
        self._advertisement: advertise.Advertisement | None = None

    async def __aenter__(self) -> Self:
        """Advertise on the LAN; take the .local name the advertisement got."""
        site = self._site
        advertisement = advertise.Advertisement(
            name=site.name,
            hostname=site.hostname,
            port=site.port,
            device_id=site.device_id,
            scheme=site.scheme,
            fingerprint=site.fingerprint,
            addresses=self._listened_addresses(),
            interfaces=self._settings.interface,
        )
        try:
            await advertisement.__aenter__()
        except Exception as exc:  # serving matters more than being found by name
            log.error("mDNS advertisement failed (%s): find this PC by its QR code", exc)
            return self
        self._advertisement = advertisement
        site.hostname = advertisement.server.removesuffix(".local")  # "<host>-2" if taken
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Say goodbye on the LAN."""
        advertisement, self._advertisement = self._advertisement, None
        if advertisement is not None:
            await advertisement.__aexit__(None, None, None)

    async def update(self) -> None:
        """Re-announce with the addresses the machine has now."""
        if self._advertisement is not None:
            await self._advertisement.update(self._listened_addresses())

    def _listened_addresses(self) -> list[str] | None:
        """Return the addresses to advertise: the ones listened on, or None for all."""
        hosts = self._settings.host
        specific = [
            h
            for h in hosts
            if h not in {"0.0.0.0", "::"} and not ipaddress.ip_address(h).is_loopback
        ]
        if "0.0.0.0" in hosts and "::" not in hosts:  # every IPv4 address, and no IPv6 one
            return specific + [
                a for a in discovery.interface_addresses(self._settings.interface) if ":" not in a
            ]
        return specific or None


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None], *, name: str) -> AsyncIterator[None]:
    """Run ``coro`` as a named task for the duration of the block; log how it ends."""
    task = spawn(coro, name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM, from the very start, so no signal is lost."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _ready(settings: Settings, site: Site, sockets: list[socket.socket]) -> Ready:
    host = _local_host(sockets)
    pairing_urls = [site.url("/pairing", host)]
    if site.ip != host:
        pairing_urls.append(site.url("/pairing", site.ip))
    pairing_urls.append(site.url("/pairing", site.local_name))
    return Ready(
        listen_url=site.url("", host),
        pairing_urls=tuple(pairing_urls),
        fingerprint=site.fingerprint,
        data_dir=str(settings.data_dir),
        library=str(settings.library),
    )


def _local_host(sockets: list[socket.socket]) -> str:
    """Return an address of this daemon that a local client can connect to."""
    host = str(sockets[0].getsockname()[0])
    return "127.0.0.1" if host in {"::", "0.0.0.0"} else host


def _write_runtime_file(paths: Paths, site: Site, sockets: list[socket.socket]) -> None:
    data = {
        "pid": os.getpid(),
        "url": site.url("", _local_host(sockets)),
        "fingerprint": site.fingerprint,
        "device_id": site.device_id,
    }
    replace_file(paths.runtime_file, json.dumps(data).encode(), mode=0o600)
