"""Find lanpair daemons on the LAN: mDNS browsing, and what advertising shares with it.

Clients ``browse`` for every daemon, or ``resolve`` one by its device id after its address
changed. The daemon's own advertisement is ``lanpair.advertise``.

Zeroconf opens multicast sockets on every interface it is given. Tests set
``LANPAIR_FORBID_MDNS_IN_NETNS`` to the inodes of the network namespaces where no
multicast may ever go (the machine's own); opening zeroconf there then fails. The
daemon a user runs has no such variable and advertises on the real LAN, as it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from lanpair.errors import ConfigError, MdnsRefused

log = logging.getLogger(__name__)

SERVICE_TYPE = "_lanpair._tcp.local."
PROTOCOL_VERSION = "1"
PAIRING_PATH = "/pairing"
BROWSE_TIMEOUT_S = 0.5
FORBID_ENV = "LANPAIR_FORBID_MDNS_IN_NETNS"
NETNS_PATH = Path("/proc/self/ns/net")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
ZeroconfInterfaces = list[str | int]


@dataclass(frozen=True, slots=True)
class Found:
    """A lanpair daemon seen on the LAN."""

    name: str
    server: str
    addresses: tuple[str, ...]
    port: int
    device_id: str
    fingerprint: str | None
    version: str
    scheme: str
    path: str

    def url(self, path: str | None = None, address: str | None = None) -> str:
        """Return a URL on this daemon, at its first address unless told another."""
        host = address or (self.addresses[0] if self.addresses else self.server)
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}{self.path if path is None else path}"


def refuse_forbidden_netns() -> None:
    """Raise MdnsRefused when this process sits in a network namespace tests forbid."""
    forbidden = {i.strip() for i in os.environ.get(FORBID_ENV, "").split(",")} - {""}
    if not forbidden:
        return
    try:
        current = str(NETNS_PATH.stat().st_ino)
    except OSError as exc:
        raise MdnsRefused(f"cannot tell which network namespace this is ({exc})") from exc
    if current in forbidden:
        raise MdnsRefused()


def interface_addresses(interfaces: Sequence[str] = ()) -> list[str]:
    """Return the addresses to advertise: not loopback, not link-local. Blocking."""
    found: list[str] = []
    for adapter in _adapters(interfaces):
        for ip in adapter.ips:
            address = _address_of(ip)
            if address is None or address.is_loopback or address.is_link_local:
                continue
            if str(address) not in found:
                found.append(str(address))
    return found


def zeroconf_interfaces(interfaces: Sequence[str] = ()) -> ZeroconfInterfaces:
    """Return what zeroconf should listen on: IPv4 addresses and IPv6 interface indexes.

    Loopback is left out: it carries no multicast, and zeroconf would log a send error
    on it for every packet. Blocking.
    """
    chosen: ZeroconfInterfaces = []
    for adapter in _adapters(interfaces):
        addresses = [a for a in map(_address_of, adapter.ips) if a is not None]
        if not addresses or all(a.is_loopback for a in addresses):
            continue
        chosen.extend(str(a) for a in addresses if a.version == 4)
        if any(a.version == 6 for a in addresses) and adapter.index is not None:
            chosen.append(adapter.index)
    return chosen


def _adapters(interfaces: Sequence[str]) -> list[ifaddr.Adapter]:
    adapters = list(ifaddr.get_adapters())
    if interfaces:
        adapters = [a for a in adapters if a.nice_name in interfaces or a.name in interfaces]
    return adapters


def _address_of(ip: ifaddr.IP) -> Address | None:
    text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


async def open_zeroconf(names: Sequence[str]) -> AsyncZeroconf:
    """Open zeroconf's sockets on the named interfaces (default: every one but loopback)."""
    refuse_forbidden_netns()
    interfaces = await asyncio.to_thread(zeroconf_interfaces, names)
    if interfaces:
        return AsyncZeroconf(interfaces=list(interfaces))
    if names:
        raise ConfigError(f"No address on the interface(s) {', '.join(names)} to use for mDNS.")
    # no address anywhere yet (an offline laptop): zeroconf's own default
    return AsyncZeroconf(ip_version=IPVersion.V4Only)


class Browser:
    """Look for lanpair daemons on the LAN; one set of sockets for many looks."""

    def __init__(self, *, interfaces: Sequence[str] = ()) -> None:
        self._interfaces = tuple(interfaces)
        self._zc: AsyncZeroconf | None = None

    async def __aenter__(self) -> Self:
        """Open the multicast sockets."""
        self._zc = await open_zeroconf(self._interfaces)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the sockets."""
        zc, self._zc = self._zc, None
        if zc is not None:
            await zc.async_close()

    async def browse(self, timeout_s: float = BROWSE_TIMEOUT_S) -> list[Found]:
        """Return every daemon that answered within ``timeout_s``, sorted by name."""
        return await self._look(timeout_s, lambda found: False)

    async def resolve(self, device_id: str, timeout_s: float = BROWSE_TIMEOUT_S) -> Found | None:
        """Return the daemon whose id is ``device_id`` as soon as it answers, or None."""
        matches = await self._look(timeout_s, lambda found: found.device_id == device_id)
        return next((found for found in matches if found.device_id == device_id), None)

    async def _look(self, timeout_s: float, enough: Callable[[Found], bool]) -> list[Found]:
        """Browse, resolving each instance as it appears, until the deadline or ``enough``."""
        if self._zc is None:
            raise RuntimeError("the browser is not entered")
        zc = self._zc.zeroconf
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        found: dict[str, Found] = {}
        done = asyncio.Event()
        lookups: dict[str, asyncio.Task[None]] = {}

        async def look_up(name: str) -> None:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            remaining_ms = max(deadline - loop.time(), 0.0) * 1000
            if await info.async_request(zc, remaining_ms):
                service = _found(info)
                if service is not None:
                    found[name] = service
                    if enough(service):
                        done.set()

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            if (pending := lookups.pop(name, None)) is not None:
                pending.cancel()
            if state_change is ServiceStateChange.Removed:
                found.pop(name, None)
                return
            task = loop.create_task(look_up(name), name=f"mdns-lookup {name}")
            lookups[name] = task
            task.add_done_callback(_log_lookup_failure)

        browser = AsyncServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_s)
        finally:
            await browser.async_cancel()
            for task in lookups.values():
                task.cancel()
            await asyncio.gather(*lookups.values(), return_exceptions=True)
        return sorted(found.values(), key=lambda service: (service.name, service.server))


def _log_lookup_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("looking up %s failed", task.get_name(), exc_info=task.exception())


def _found(info: AsyncServiceInfo) -> Found | None:
    """Return what a resolved instance says about itself; None if it is not a lanpair daemon."""
    txt = info.decoded_properties
    device_id = txt.get("id")
    if not device_id or info.port is None or info.server is None:
        log.debug("ignoring %s: no device id in its TXT record", info.name)
        return None
    return Found(
        name=info.name.removesuffix("." + SERVICE_TYPE),
        server=info.server.rstrip("."),
        addresses=tuple(info.parsed_scoped_addresses(IPVersion.All)),
        port=info.port,
        device_id=device_id,
        fingerprint=txt.get("fp") or None,
        version=txt.get("v") or "",
        scheme=txt.get("scheme") or "https",
        path=txt.get("path") or PAIRING_PATH,
    )


async def browse(
    timeout_s: float = BROWSE_TIMEOUT_S, *, interfaces: Sequence[str] = ()
) -> list[Found]:
    """Return every lanpair daemon that answers within ``timeout_s``."""
    async with Browser(interfaces=interfaces) as browser:
        return await browser.browse(timeout_s)


async def resolve(
    device_id: str, timeout_s: float = BROWSE_TIMEOUT_S, *, interfaces: Sequence[str] = ()
) -> Found | None:
    """Return the daemon with ``device_id`` (the client follows a PC whose address changed)."""
    async with Browser(interfaces=interfaces) as browser:
        return await browser.resolve(device_id, timeout_s)
