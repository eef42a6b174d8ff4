"""Which addresses count as this PC's own."""

from __future__ import annotations

import pytest

from lanpair import netif


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "192.168.1.20", "::ffff:192.168.1.20"],
)
def test_loopback_and_configured_addresses_are_ours(address: str) -> None:
    """Loopback (any form) and this host's LAN addresses count as the PC itself."""
    assert address in netif.LocalAddressSet(["192.168.1.20", "fe80::1"])


@pytest.mark.parametrize(
    "address", ["fe80::1", "fe80::1%wlan0", "169.254.10.10", "192.168.1.21", "garbage", ""]
)
def test_link_local_and_foreign_addresses_are_not_ours(address: str) -> None:
    """A link-local address is never trusted: a peer on one link can claim another link's."""
    assert address not in netif.LocalAddressSet(["192.168.1.20", "fe80::1", "169.254.10.10"])


def test_refresh_reads_this_machines_addresses() -> None:
    """refresh() finds loopback among this machine's addresses and reports a change once."""
    addresses = netif.LocalAddressSet()
    assert addresses.refresh() is True
    assert addresses.refresh() is False
    assert "127.0.0.1" in addresses


@pytest.mark.parametrize(
    ("name", "virtual"),
    [
        ("docker0", True),
        ("br-1a2b", True),
        ("wg0", True),
        ("tun0", True),
        ("lo", True),
        ("eth0", False),
        ("wlp2s0", False),
        ("enp3s0", False),
    ],
)
def test_virtual_interfaces_are_never_advertised(name: str, virtual: bool) -> None:
    """Container bridges, VPNs and loopback are not where phones reach the PC."""
    assert netif.is_virtual(name) is virtual
