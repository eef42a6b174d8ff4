"""A virtual LAN for tests: network namespaces joined by a bridge, nothing touching the real one.

One switch namespace holds a bridge; every host (``pc``, ``phone``, ``laptop``) is its own
namespace with an ``eth0`` plugged into the bridge by a veth pair, its own IPv4 and IPv6
address and its own host name. IGMP snooping is off, so mDNS floods to every host as on a
home Wi-Fi. No veth leads into the machine's own namespace and nothing forwards: no packet
of these tests can reach the real network.

Commands run in a host through ``ip netns exec`` (which also bind-mounts the host's
``/etc/netns/<ns>/{resolv.conf,hosts}``) and ``unshare --uts`` (so the host name is the
host's own). Every command gets ``LANPAIR_FORBID_MDNS_IN_NETNS`` naming the machine's own
network namespace, so lanpair's discovery refuses to start zeroconf if one ever leaks out.

Needs root and iproute2; without them the fixtures skip (under CI=true: fail).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from support import skip_or_fail

FORBID_ENV = "LANPAIR_FORBID_MDNS_IN_NETNS"
NETNS_ETC = Path("/etc/netns")
HOSTS = ("pc", "phone", "laptop")
NET4 = "10.78.0"
NET6 = "fd78::"
SWITCH_IP = f"{NET4}.254"
RUN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def netns_inode(pid: int | str = "self") -> int:
    """Return the inode of a process's network namespace (equal inodes: same namespace)."""
    return Path(f"/proc/{pid}/ns/net").stat().st_ino


def forbidden_netns() -> str:
    """Return the namespaces zeroconf must never start in: this process's and PID 1's."""
    inodes = {netns_inode()}
    # PID 1 may belong to a sandbox that hides its namespaces from us; ours is what counts
    with contextlib.suppress(OSError):
        inodes.add(netns_inode(1))
    return ",".join(str(inode) for inode in sorted(inodes))


def _ip(*args: str, timeout_s: float = RUN_TIMEOUT_S) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Host:
    """One machine of the virtual LAN: a network namespace with its own name and addresses."""

    name: str
    netns: str
    hostname: str
    ipv4: str
    ipv6: str
    lan: Lan
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """Return ``argv`` wrapped to run inside this host, under its own host name."""
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.hostname,
            *argv,
        ]

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return the environment for commands in this host: the netns guard always set.

        ``extra`` may name more namespaces in the guard, never take the machine's out.
        """
        env = dict(os.environ)
        env.update(extra or {})
        more = (extra or {}).get(FORBID_ENV)
        env[FORBID_ENV] = f"{self.lan.forbidden_netns},{more}" if more else self.lan.forbidden_netns
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def run(
        self,
        *argv: str,
        timeout_s: float = RUN_TIMEOUT_S,
        check: bool = True,
        input_text: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in this host and wait for it; raise on failure when ``check``."""
        result = subprocess.run(
            self.command(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            input=input_text,
            env=self.environment(env),
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name}: {' '.join(argv)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def popen(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
    ) -> subprocess.Popen[str]:
        """Start a command in this host; the LAN stops it at the latest when it is reset."""
        process = subprocess.Popen(
            self.command(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env=self.environment(env),
            # its own process group, so stopping it stops its children too
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def python(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start this test run's Python interpreter in this host."""
        return self.popen(sys.executable, *args, **kwargs)

    def set_ipv4(self, address: str) -> None:
        """Move this host to another IPv4 address of the LAN (as DHCP would)."""
        old = self.ipv4
        # add before delete (with promote_secondaries on): the subnet and the default route
        # stay up throughout, as when a DHCP lease moves
        _ip("-n", self.netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", self.netns, "addr", "del", f"{old}/24", "dev", "eth0")
        _ip("-n", self.netns, "route", "replace", "default", "via", SWITCH_IP, "dev", "eth0")
        self.ipv4 = address
        self.lan.write_etc(self)

    def cut(self) -> None:
        """Unplug this host's cable: its link goes down at the switch."""
        _ip("-n", self.lan.switch, "link", "set", f"v-{self.name}", "down")

    def heal(self) -> None:
        """Plug this host's cable back in."""
        _ip("-n", self.lan.switch, "link", "set", f"v-{self.name}", "up")

    def stop_processes(self) -> None:
        """Stop every process started in this host: SIGTERM, then SIGKILL after a grace time."""
        for process in self.processes:
            stop_process(process)
        self.processes.clear()


def stop_process(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop a process started with its own session, and its children, by its process group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout_s)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class Lan:
    """A switch namespace with a bridge, and hosts plugged into it."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []
        self.forbidden_netns = forbidden_netns()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))

    def __getitem__(self, name: str) -> Host:
        """Return the host called ``name``."""
        return self.hosts[name]

    def up(self, names: Sequence[str] = HOSTS) -> None:
        """Build the switch and the hosts."""
        self._add_netns(self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        # stp off: ports forward at once; mcast_snooping off: multicast floods to every port
        _ip(
            *("-n", self.switch, "link", "add", "br0", "type", "bridge"),
            *("stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"),
        )
        _ip("-n", self.switch, "addr", "add", f"{SWITCH_IP}/24", "dev", "br0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for number, name in enumerate(names, start=1):
            self.add_host(name, number)

    def add_host(self, name: str, number: int) -> Host:
        """Plug a new host into the switch as ``<net>.<number>``."""
        netns = f"{self.prefix}-{name}"
        host = Host(
            name=name,
            netns=netns,
            hostname=netns,
            ipv4=f"{NET4}.{number}",
            ipv6=f"{NET6}{number}",
            lan=self,
        )
        self._add_netns(netns)
        self.write_etc(host)
        _ip("-n", netns, "link", "set", "lo", "up")
        # no duplicate address detection: IPv6 addresses usable at once
        for knob in ("default", "all"):
            self.sysctl(netns, f"net.ipv6.conf.{knob}.accept_dad=0")
            # deleting the first address must not take the others with it
            self.sysctl(netns, f"net.ipv4.conf.{knob}.promote_secondaries=1")
        # both veth ends made inside the namespaces: no interface ever appears in ours
        _ip("-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v-{name}")
        _ip("-n", netns, "link", "set", f"v-{name}", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", f"v-{name}", "master", "br0")
        _ip("-n", self.switch, "link", "set", f"v-{name}", "up")
        _ip("-n", netns, "link", "set", "eth0", "multicast", "on")
        _ip("-n", netns, "addr", "add", f"{host.ipv4}/24", "dev", "eth0")
        _ip("-n", netns, "addr", "add", f"{host.ipv6}/64", "dev", "eth0", "nodad")
        _ip("-n", netns, "link", "set", "eth0", "up")
        # a default route lets "which address would I use" work; the switch forwards nothing
        _ip("-n", netns, "route", "add", "default", "via", SWITCH_IP, "dev", "eth0")
        self.hosts[name] = host
        return host

    def write_etc(self, host: Host) -> None:
        """Write the host's resolv.conf (instant failure, never the real DNS) and hosts."""
        folder = NETNS_ETC / host.netns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (folder / "hosts").write_text(
            f"127.0.0.1 localhost\n::1 localhost\n{host.ipv4} {host.hostname}\n"
        )

    def sysctl(self, netns: str, setting: str) -> None:
        """Set a sysctl inside a namespace."""
        result = subprocess.run(
            ["ip", "netns", "exec", netns, "sysctl", "-qw", setting],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"sysctl {setting} in {netns}: {result.stderr.strip()}")

    def reset(self) -> None:
        """Put the LAN back as built: processes stopped, cables in, first addresses back."""
        for number, host in enumerate(self.hosts.values(), start=1):
            host.stop_processes()
            host.heal()
            if host.ipv4 != f"{NET4}.{number}":
                host.set_ipv4(f"{NET4}.{number}")

    def down(self) -> None:
        """Remove everything this LAN made; keep going past errors so nothing is left."""
        errors: list[str] = []
        for host in self.hosts.values():
            try:
                host.stop_processes()
            except Exception as exc:  # teardown reports, then goes on
                errors.append(f"stopping {host.name}'s processes: {exc}")
        for netns in reversed(self.namespaces):
            errors.extend(self._kill_leftovers(netns))
            try:
                _ip("netns", "del", netns)
            except RuntimeError as exc:
                errors.append(str(exc))
            shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if no one else has namespaces with /etc files
        shutil.rmtree(self.scratch, ignore_errors=True)
        if errors:
            raise RuntimeError("virtual LAN teardown: " + "; ".join(errors))

    def _add_netns(self, netns: str) -> None:
        _ip("netns", "add", netns)
        self.namespaces.append(netns)

    def _kill_leftovers(self, netns: str) -> list[str]:
        """Kill what still runs in one of our namespaces (children that left their group)."""
        result = subprocess.run(
            ["ip", "netns", "pids", netns],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        pids = [int(pid) for pid in result.stdout.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
            time.sleep(0.05)
        return [f"{netns}: processes {pids} survived SIGKILL"] if pids else []


def lan_unavailable() -> str | None:
    """Return why this machine cannot build a virtual LAN, or None if it can."""
    if sys.platform != "linux":
        return "the virtual LAN needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the virtual LAN needs root (ip netns); CI runs as root"
    for tool in ("ip", "unshare", "sh"):
        if shutil.which(tool) is None:
            return f"the virtual LAN needs `{tool}` (apt-get install iproute2 util-linux)"
    return None


@contextlib.contextmanager
def virtual_lan(names: Sequence[str] = HOSTS) -> Iterator[Lan]:
    """Build a LAN of ``names`` and yield it; tear it all down afterwards, whatever happened."""
    reason = lan_unavailable()
    if reason:
        skip_or_fail(reason)
    lan = Lan(f"lp{os.getpid()}x{time.monotonic_ns() % 10000}")
    saved = os.environ.get(FORBID_ENV)
    # this process stays in the machine's namespace: lanpair's discovery must refuse to
    # start zeroconf here, should a test ever call it in-process by mistake
    os.environ[FORBID_ENV] = lan.forbidden_netns
    try:
        try:
            lan.up(names)
        except RuntimeError as exc:
            skip_or_fail(f"cannot build the virtual LAN: {exc}")
        yield lan
    finally:
        if saved is None:
            os.environ.pop(FORBID_ENV, None)
        else:
            os.environ[FORBID_ENV] = saved
        lan.down()


AVAHI_READY = "Server startup complete"
AVAHI_START_TIMEOUT_S = 15.0


@dataclass
class Avahi:
    """An avahi-daemon with its own D-Bus system bus, running inside one host."""

    host: Host
    host_name: str
    folder: Path
    bus: subprocess.Popen[str]
    daemon: subprocess.Popen[str]

    @property
    def bus_address(self) -> str:
        """Return the D-Bus address avahi's clients (avahi-browse...) must use."""
        return f"unix:path={self.folder / 'bus.sock'}"

    def log(self) -> str:
        """Return everything avahi-daemon has logged so far."""
        return (self.folder / "avahi.log").read_text(errors="replace")

    def run(self, *argv: str, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run an avahi client command (avahi-browse, avahi-resolve) against this daemon."""
        return self.host.run(
            *argv,
            timeout_s=timeout_s,
            check=False,
            env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus_address},
        )


def avahi_unavailable() -> str | None:
    """Return why avahi cannot run here, or None if it can."""
    for tool in ("avahi-daemon", "avahi-browse", "avahi-resolve", "dbus-daemon"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (apt-get install avahi-daemon avahi-utils)"
    return None


def start_avahi(host: Host, host_name: str | None = None) -> Avahi:
    """Start avahi-daemon in ``host``, announcing ``host_name`` (default: the host's name)."""
    reason = avahi_unavailable()
    if reason:
        skip_or_fail(reason)
    host_name = host_name or host.hostname
    folder = host.lan.scratch / f"avahi-{host.name}"
    folder.mkdir(mode=0o755)
    (folder / "avahi-daemon.conf").write_text(
        "[server]\n"
        f"host-name={host_name}\n"
        "use-ipv4=yes\nuse-ipv6=yes\nallow-interfaces=eth0\nenable-dbus=yes\n"
        "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
        "[wide-area]\nenable-wide-area=no\n"
        "[publish]\npublish-workstation=no\npublish-hinfo=no\n"
        "[reflector]\nenable-reflector=no\n"
    )
    bus_socket = folder / "bus.sock"
    # a private system bus: the stock policy (avahi's included), our own socket
    bus = host.popen(
        "dbus-daemon",
        "--system",
        f"--address=unix:path={bus_socket}",
        "--nopidfile",
        "--nofork",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(bus_socket.exists, "dbus-daemon made no socket", bus)
    with (folder / "avahi.log").open("w") as log_file:
        # avahi keeps its pid file and socket in /run/avahi-daemon: a tmpfs over /run in
        # this command's own mount namespace (ip netns exec makes one) keeps instances apart
        daemon = host.popen(
            "sh",
            "-c",
            'mount -t tmpfs -o mode=0755 lanpair-avahi /run && exec "$@"',
            "avahi",
            "avahi-daemon",
            "--no-chroot",
            "--no-drop-root",
            "--no-rlimits",
            "-f",
            str(folder / "avahi-daemon.conf"),
            env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus_socket}"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    avahi = Avahi(host=host, host_name=host_name, folder=folder, bus=bus, daemon=daemon)
    _wait_for(lambda: AVAHI_READY in avahi.log(), f"avahi did not start: {avahi.log()}", daemon)
    return avahi


def _wait_for(
    condition: Callable[[], bool],
    failure: str,
    process: subprocess.Popen[Any],
    timeout_s: float = AVAHI_START_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.05)
