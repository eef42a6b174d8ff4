"""This machine's network addresses: which are its own, and which a phone on the LAN would use."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

import ifaddr

# Interfaces a phone on the Wi-Fi cannot reach: container bridges, VPNs, virtual links.
VIRTUAL_PREFIXES = (
    "lo",
    "docker",
    "br-",
    "veth",
    "virbr",
    "vmnet",
    "vboxnet",
    "tun",
    "tap",
    "wg",
    "tailscale",
    "zt",
    "utun",
    "cni",
    "flannel",
    "cali",
    "kube",
    "podman",
    "lxc",
    "lxd",
)
ROUTE_TABLE = Path("/proc/net/route")


def local_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Return every address configured on this host, loopback included. Blocking."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            address = ipaddress.ip_address(text.split("%")[0])
            if address not in found:
                found.append(address)
    return found


def lan_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Return this host's addresses other than loopback and link-local. Blocking."""
    return [a for a in local_addresses() if not a.is_loopback and not a.is_link_local]


def is_virtual(interface: str) -> bool:
    """Return whether an interface is loopback, a container bridge, a VPN or similar."""
    return interface.startswith(VIRTUAL_PREFIXES)


def default_route_ip() -> str | None:
    """Return the IPv4 address a phone on the LAN would reach this PC at, if any. Blocking.

    That is the address of the default route's interface, unless that interface is a
    VPN or bridge; then the first address of a physical-looking interface.
    """
    by_interface = _ipv4_by_interface()
    interface = _default_route_interface()
    if interface and not is_virtual(interface) and by_interface.get(interface):
        return by_interface[interface][0]
    for name, addresses in by_interface.items():
        if not is_virtual(name) and addresses:
            return addresses[0]
    return _routing_guess()


def _ipv4_by_interface() -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                result.setdefault(adapter.nice_name, []).append(ip.ip)
    return result


def _default_route_interface() -> str | None:
    try:
        lines = ROUTE_TABLE.read_text().splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        parts = line.split()
        if len(parts) > 7 and parts[1] == "00000000" and parts[7] == "00000000":
            metric = int(parts[6])
            if best is None or metric < best[0]:
                best = (metric, parts[0])
    return best[1] if best else None


def _routing_guess() -> str | None:
    # connect() on a UDP socket sends nothing; it only asks the kernel for a route.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never a real host
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


class LocalAddressSet:
    """This host's own addresses as last read; ``refresh`` re-reads them."""

    def __init__(self, addresses: Iterable[str] = ()) -> None:
        self._addresses = frozenset(addresses)

    def __contains__(self, address: object) -> bool:
        """Return whether ``address`` is loopback or one of this host's addresses."""
        if not isinstance(address, str):
            return False
        ip = normalize(address)
        if ip is None or ip.is_link_local:
            # Link-local addresses are unique per link only: a peer on the Wi-Fi may claim
            # the link-local address of another of this PC's interfaces.
            return False
        return ip.is_loopback or str(ip) in self._addresses

    def refresh(self) -> bool:
        """Re-read the interfaces; return whether the set changed. Blocking."""
        fresh = frozenset(str(a) for a in local_addresses())
        changed = fresh != self._addresses
        self._addresses = fresh
        return changed


def normalize(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse an address, unwrapping IPv4-mapped IPv6 (``::ffff:1.2.3.4``); None if invalid."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip
