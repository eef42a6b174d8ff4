"""Be found on the LAN and find others: mDNS advertisement of the daemon, browsing for daemons.

The daemon enters an ``Advertisement`` for as long as it serves: ``_lanpair._tcp.local.``
(TXT ``v``, ``id``, ``fp``, ``scheme``, ``path``) plus a generic ``_https._tcp`` (or
``_http._tcp``) under the same instance name, so ordinary service browsers list it too.
Clients ``browse`` for every daemon, or ``resolve`` one by its device id after its address
changed.

Who answers for ``<hostname>.local``. On most Linux desktops avahi-daemon already owns
that name and publishes its A/AAAA records. Tried in a network namespace with avahi 0.8
(Debian 12) running under the same host name: while lanpair published address records
for the name with exactly avahi's address set, avahi kept its name (its conflict check
accepts a record equal to one of its own); one extra address in lanpair's set and avahi
logged "Host name conflict, retrying with <host>-2" and renamed the machine. Any
difference does that: an interface avahi ignores, an address avahi already withdrew after
a DHCP change. And while an address moved, clients got mixed answers (the old address
from one responder, the new from the other) for seconds. So, before publishing, the
advertisement asks the LAN who answers for ``<hostname>.local``:

- nobody: lanpair publishes the address records itself;
- a responder on this host (an answer holds one of our addresses: avahi,
  systemd-resolved): lanpair publishes no address records at all and lets it answer;
  the SRV record still points at ``<hostname>.local.``;
- another machine (only foreign addresses): the name is taken on this LAN, and lanpair
  takes ``<hostname>-2.local`` (then -3...) the way avahi would, and says so.

This is decided once, on entering; ``server`` tells the daemon which name it got.

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
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import ifaddr
from zeroconf import (  # type: ignore[attr-defined]  # public names missing from __all__
    AddressResolver,
    DNSOutgoing,
    IPVersion,
    NonUniqueNameException,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from lanpair.errors import ConfigError, LanpairError, MdnsRefused
from lanpair.tasks import spawn

log = logging.getLogger(__name__)

SERVICE_TYPE = "_lanpair._tcp.local."
PROTOCOL_VERSION = "1"
PAIRING_PATH = "/pairing"
BROWSE_TIMEOUT_S = 0.5
# RFC 6762 §8.1 waits 250 ms for a defence of a probed name; avahi answers at once.
HOST_CHECK_S = 0.3
MAX_LABEL_BYTES = 63  # one DNS label: an instance name or a host name
MAX_TXT_ITEM_BYTES = 255  # one TXT string: key=value
MAX_NAME_TRIES = 20
RESPONSE_FLAGS = 0x8400  # QR (a response) + AA (authoritative), RFC 6762 §18
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


async def _open_zeroconf(names: Sequence[str]) -> AsyncZeroconf:
    """Open zeroconf's sockets on the named interfaces (default: every one but loopback)."""
    refuse_forbidden_netns()
    interfaces = await asyncio.to_thread(zeroconf_interfaces, names)
    if interfaces:
        return AsyncZeroconf(interfaces=list(interfaces))
    if names:
        raise ConfigError(f"No address on the interface(s) {', '.join(names)} to use for mDNS.")
    # no address anywhere yet (an offline laptop): zeroconf's own default
    return AsyncZeroconf(ip_version=IPVersion.V4Only)


def instance_name(display_name: str) -> str:
    """Return a display name made into one DNS-SD instance label."""
    # zeroconf splits names at dots, so a dot would cut the label in two
    text = "".join(
        " " if ch.isspace() else ch
        for ch in display_name.replace(".", "-")
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    text = " ".join(text.split()) or "lanpair"
    return _cap(text, MAX_LABEL_BYTES)


def numbered(name: str, number: int) -> str:
    """Return the ``number``-th alternative to a taken instance name: ``Name (2)``."""
    suffix = f" ({number})"
    return _cap(name, MAX_LABEL_BYTES - len(suffix.encode())) + suffix


def _cap(text: str, limit: int) -> str:
    return text.encode()[:limit].decode(errors="ignore").rstrip()


def txt_record(items: dict[str, str | None]) -> dict[str, str]:
    """Return the TXT items, refusing any ``key=value`` over 255 bytes; None leaves one out."""
    record = {key: value for key, value in items.items() if value is not None}
    for key, value in record.items():
        if len(f"{key}={value}".encode()) > MAX_TXT_ITEM_BYTES:
            raise ValueError(f"TXT item {key!r} is over {MAX_TXT_ITEM_BYTES} bytes")
    return record


class Advertisement:
    """Announce this daemon on the LAN while entered; say goodbye on leaving."""

    def __init__(
        self,
        *,
        name: str,
        hostname: str,
        port: int,
        device_id: str,
        scheme: str,
        fingerprint: str | None,
        addresses: Sequence[str] | None = None,
        interfaces: Sequence[str] = (),
        path: str = PAIRING_PATH,
    ) -> None:
        self._base_name = instance_name(name)
        self._hostname = _cap(hostname.rstrip(".").removesuffix(".local"), MAX_LABEL_BYTES)
        self._port = port
        self._interfaces = tuple(interfaces)
        self._given_addresses = None if addresses is None else tuple(addresses)
        self._addresses: tuple[str, ...] = ()
        self._lanpair_txt = txt_record(
            {
                "v": PROTOCOL_VERSION,
                "id": device_id,
                "fp": fingerprint,
                "scheme": scheme,
                "path": path,
            }
        )
        self._generic_txt = txt_record({"path": path})
        self._generic_type = "_https._tcp.local." if scheme == "https" else "_http._tcp.local."
        self._zc: AsyncZeroconf | None = None
        self._server = f"{self._hostname}.local."
        self._publish_addresses = True
        self._infos: list[ServiceInfo] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._generic: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """Return the instance name in use (``Name (2)`` after a clash)."""
        return self._infos[0].name.removesuffix("." + SERVICE_TYPE) if self._infos else ""

    @property
    def server(self) -> str:
        """Return the ``.local`` host name the service points at, without the final dot."""
        return self._server.rstrip(".")

    @property
    def publishes_addresses(self) -> bool:
        """Return whether lanpair answers for the host name (False: avahi or the like does)."""
        return self._publish_addresses

    @property
    def addresses(self) -> tuple[str, ...]:
        """Return the addresses advertised."""
        return self._addresses

    async def __aenter__(self) -> Self:
        """Check who owns the host name, probe for a free instance name, announce."""
        self._addresses = await self._current_addresses(self._given_addresses)
        self._zc = await _open_zeroconf(self._interfaces)
        try:
            await self._choose_server()
            self._infos.append(
                await self._register(SERVICE_TYPE, self._base_name, self._lanpair_txt)
            )
        except BaseException:
            await self._close()
            raise
        instance = self.name
        if instance != self._base_name:
            log.warning(
                "mDNS name '%s' is taken on this LAN: using '%s'", self._base_name, instance
            )
        log.info(
            "advertising '%s' as _lanpair._tcp on port %d at %s (%s)",
            instance,
            self._port,
            ", ".join(self._addresses) or "no address yet",
            self.server,
        )
        # the generic listing probes for another second; nothing waits for it
        self._generic = spawn(self._register_generic(instance), "mdns-generic")
        return self

    async def _register_generic(self, instance: str) -> None:
        info = await self._register(self._generic_type, instance, self._generic_txt)
        self._infos.append(info)
        log.info("also listed as '%s' (%s)", _instance(info), self._generic_type.rstrip("."))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Send goodbye packets, then close the sockets."""
        await self._close()

    async def update(self, addresses: Sequence[str] | None = None) -> None:
        """Re-announce at ``addresses`` (default: the interfaces' current ones)."""
        zc = self._zeroconf()
        fresh = await self._current_addresses(None if addresses is None else tuple(addresses))
        old = self._addresses
        if fresh == old:
            return
        self._addresses = fresh
        if self._generic is not None:
            # a registration still probing would announce the old addresses
            await asyncio.gather(self._generic, return_exceptions=True)
        if self._publish_addresses:
            # The cache-flush bit on the new records retires only what a cache learned over
            # a second ago; a goodbye retires the old addresses wherever they came from.
            self._goodbye(sorted(set(old) - set(fresh)))
            for index, info in enumerate(self._infos):
                self._infos[index] = self._info(info.type, _instance(info), info.text)
                self._track(await zc.async_update_service(self._infos[index]))
        # the sockets are bound per address: after a DHCP change the old ones send nothing
        if hasattr(zc, "async_update_interfaces"):  # zeroconf >= 0.150
            interfaces = await asyncio.to_thread(zeroconf_interfaces, self._interfaces)
            await zc.async_update_interfaces(interfaces=list(interfaces) or None)
        log.info(
            "re-advertising '%s' on port %d at %s",
            self.name,
            self._port,
            ", ".join(self._addresses) or "no address",
        )

    def _goodbye(self, addresses: list[str]) -> None:
        """Withdraw address records of this host name that no longer hold (TTL 0)."""
        if not addresses:
            return
        gone = ServiceInfo(
            SERVICE_TYPE, f"gone.{SERVICE_TYPE}", server=self._server, parsed_addresses=addresses
        )
        out = DNSOutgoing(RESPONSE_FLAGS)
        for record in gone.dns_addresses(override_ttl=0):
            out.add_answer_at_time(record, 0)
        self._zeroconf().zeroconf.async_send(out)

    async def _current_addresses(self, given: tuple[str, ...] | None) -> tuple[str, ...]:
        if given is not None:
            return given
        return tuple(await asyncio.to_thread(interface_addresses, self._interfaces))

    def _zeroconf(self) -> AsyncZeroconf:
        if self._zc is None:
            raise RuntimeError("the advertisement is not entered")
        return self._zc

    async def _choose_server(self) -> None:
        """Find a host name nobody else answers for, or one this host's avahi answers for."""
        zc = self._zeroconf()
        ours = set(self._addresses)
        for number in range(1, MAX_NAME_TRIES + 1):
            label = self._hostname if number == 1 else f"{self._hostname}-{number}"
            candidate = f"{_cap(label, MAX_LABEL_BYTES)}.local."
            answered = await _who_answers(zc, candidate, HOST_CHECK_S)
            if not answered:
                self._server, self._publish_addresses = candidate, True
                break
            if answered & ours:
                self._server, self._publish_addresses = candidate, False
                log.info(
                    "%s is answered by another mDNS responder on this host (avahi?): "
                    "leaving its address records to it",
                    candidate.rstrip("."),
                )
                break
            log.warning(
                "another machine on this LAN answers for %s (%s)",
                candidate.rstrip("."),
                ", ".join(sorted(answered)),
            )
        else:
            raise LanpairError(f"no free .local host name near {self._hostname}.local")

    async def _register(self, service_type: str, base: str, txt: dict[str, str]) -> ServiceInfo:
        """Register under ``base``, or ``base (2)``... when another host already has it."""
        zc = self._zeroconf()
        for number in range(1, MAX_NAME_TRIES + 1):
            candidate = base if number == 1 else numbered(base, number)
            info = self._info(service_type, candidate, txt)
            try:
                announced = await zc.async_register_service(info)
            except NonUniqueNameException:
                log.info("mDNS instance '%s' (%s) is taken", candidate, service_type)
                continue
            self._track(announced)
            return info
        raise LanpairError(f"no free mDNS instance name near '{base}'")

    def _info(self, service_type: str, instance: str, txt: dict[str, str] | bytes) -> ServiceInfo:
        return ServiceInfo(
            service_type,
            f"{instance}.{service_type}",
            port=self._port,
            properties=txt,
            server=self._server,
            parsed_addresses=list(self._addresses) if self._publish_addresses else [],
        )

    def _track(self, announcement: Any) -> None:
        """Keep an announcement (a task zeroconf made) referenced and its failure logged."""
        future = asyncio.ensure_future(announcement)
        self._tasks.add(future)
        future.add_done_callback(self._announced)

    def _announced(self, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("an mDNS announcement failed", exc_info=future.exception())

    async def _close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        pending = [*self._tasks, *([self._generic] if self._generic else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            goodbyes = [await zc.async_unregister_service(info) for info in self._infos]
            await asyncio.gather(*goodbyes)
            if self._infos:
                log.info("withdrew '%s' from mDNS", self.name)
        finally:
            await zc.async_close()


def _instance(info: ServiceInfo) -> str:
    return info.name.removesuffix("." + info.type)


async def _who_answers(zc: AsyncZeroconf, host: str, timeout_s: float) -> set[str]:
    """Return the addresses someone on the LAN gives for ``host`` within the timeout."""
    resolver = AddressResolver(host)
    if not await resolver.async_request(zc.zeroconf, timeout_s * 1000):
        return set()
    return set(resolver.parsed_addresses(IPVersion.All))


class Browser:
    """Look for lanpair daemons on the LAN; one set of sockets for many looks."""

    def __init__(self, *, interfaces: Sequence[str] = ()) -> None:
        self._interfaces = tuple(interfaces)
        self._zc: AsyncZeroconf | None = None

    async def __aenter__(self) -> Self:
        """Open the multicast sockets."""
        self._zc = await _open_zeroconf(self._interfaces)
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
