"""Be found on the LAN: the daemon's mDNS advertisement.

The daemon enters an ``Advertisement`` for as long as it serves: ``_lanpair._tcp.local.``
(TXT ``v``, ``id``, ``fp``, ``scheme``, ``path``) plus a generic ``_https._tcp`` (or
``_http._tcp``) under the same instance name, so ordinary service browsers list it too.
Clients find it with ``lanpair.discovery``.

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
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from zeroconf import (  # type: ignore[attr-defined]  # public names missing from __all__
    AddressResolver,
    DNSOutgoing,
    IPVersion,
    NonUniqueNameException,
    ServiceInfo,
)
from zeroconf.asyncio import AsyncZeroconf

from lanpair.discovery import (
    PAIRING_PATH,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    interface_addresses,
    open_zeroconf,
    zeroconf_interfaces,
)
from lanpair.errors import LanpairError
from lanpair.tasks import spawn

log = logging.getLogger(__name__)

# RFC 6762 §8.1 waits 250 ms for a defence of a probed name; avahi answers at once.
HOST_CHECK_S = 0.3
MAX_LABEL_BYTES = 63  # one DNS label: an instance name or a host name
MAX_TXT_ITEM_BYTES = 255  # one TXT string: key=value
MAX_NAME_TRIES = 20
RESPONSE_FLAGS = 0x8400  # QR (a response) + AA (authoritative), RFC 6762 §18


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
        self._zc = await open_zeroconf(self._interfaces)
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
