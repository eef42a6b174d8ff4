"""mDNS on a virtual LAN: the PC is found from the laptop, follows address changes, yields its
name on a clash, says goodbye, and lives beside avahi without making it rename the host.

Every mDNS process runs inside a namespace host of ``tests/lan.py``; this file doubles as
the small agent those processes run (``python tests/test_discovery.py advertise ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from lan import FORBID_ENV, Host, Lan, avahi_unavailable, netns_inode, start_avahi
from support import skip_or_fail

from lanpair import discovery
from lanpair.advertise import MAX_LABEL_BYTES, Advertisement, instance_name, numbered, txt_record

FINGERPRINT = "q1w2e3r4t5y6u7i8o9p0-_ASDFGHJKLZXCVBNMqwert"
AGENT_TIMEOUT_S = 15.0


class Agent:
    """A discovery agent (this file run as a script) inside one host, spoken to in JSON lines."""

    def __init__(self, host: Host, *args: str, env: dict[str, str] | None = None) -> None:
        self.host = host
        self.process = host.python(
            str(Path(__file__).resolve()), *args, stdin=subprocess.PIPE, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        # a thread reads, so a wait for the next line can time out (pipes cannot)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        # the LAN's reset closes the pipe under this thread once the test is over
        with contextlib.suppress(ValueError, OSError):
            for line in self.process.stdout:
                self.lines.put(line)
        self.lines.put("")

    def send(self, line: str) -> None:
        """Write one command line to the agent."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def read(self, timeout_s: float = AGENT_TIMEOUT_S) -> dict[str, Any]:
        """Return the agent's next JSON line; fail with its stderr if none comes in time."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            self.fail(f"no answer within {timeout_s} s")
        if not line:
            self.fail("exited without an answer")
        return dict(json.loads(line))

    def quit(self) -> dict[str, Any]:
        """Ask the agent to stop (an advertiser says goodbye first); return its last line."""
        self.send("quit")
        last = self.read()
        self.process.wait(AGENT_TIMEOUT_S)
        return last

    def fail(self, why: str) -> None:
        """Fail the test with what the agent wrote to stderr."""
        if self.process.poll() is None:
            self.process.kill()
        assert self.process.stderr is not None
        pytest.fail(f"agent in {self.host.name}: {why}\n{self.process.stderr.read()}")


def advertise(host: Host, name: str = "Test PC", **overrides: Any) -> tuple[Agent, dict[str, Any]]:
    """Start advertising a daemon from ``host``; return the agent and its ready line."""
    config = {
        "name": name,
        "hostname": host.hostname,
        "port": 8443,
        "device_id": f"pc_{host.name}",
        "scheme": "https",
        "fingerprint": FINGERPRINT,
        **overrides,
    }
    agent = Agent(host, "advertise", json.dumps(config))
    ready = agent.read()
    assert ready["event"] == "ready", ready
    return agent, ready


def browse_once(host: Host, timeout_s: float = discovery.BROWSE_TIMEOUT_S) -> dict[str, Any]:
    """Run one browse in a fresh process in ``host``; return its result and timing."""
    agent = Agent(host, "browse", str(timeout_s))
    result = agent.read()
    agent.process.wait(AGENT_TIMEOUT_S)
    return result


@pytest.mark.timeout(60)
def test_the_laptop_finds_the_pc_within_a_second_with_its_txt_fields(lan: Lan) -> None:
    """A browse from the laptop lists the PC's name, .local name, addresses, port and TXT."""
    pc, laptop = lan["pc"], lan["laptop"]
    advertise(pc)

    result = browse_once(laptop)

    assert result["elapsed_s"] < 1.0
    assert result["found"] == [
        {
            "name": "Test PC",
            "server": f"{pc.hostname}.local",
            "addresses": [pc.ipv4, pc.ipv6],
            "port": 8443,
            "device_id": "pc_pc",
            "fingerprint": FINGERPRINT,
            "version": discovery.PROTOCOL_VERSION,
            "scheme": "https",
            "path": "/pairing",
        }
    ]
    resolved = Agent(laptop, "resolve", "pc_pc", "2").read()
    assert resolved["found"]["addresses"] == [pc.ipv4, pc.ipv6]
    assert resolved["first_s"] < 0.5  # resolve answers as soon as the PC does


@pytest.mark.timeout(60)
def test_plain_http_is_advertised_without_a_fingerprint(lan: Lan) -> None:
    """Without TLS the TXT says scheme=http and carries no fp."""
    advertise(lan["pc"], scheme="http", fingerprint=None)

    (found,) = browse_once(lan["laptop"])["found"]

    assert (found["scheme"], found["fingerprint"]) == ("http", None)


@pytest.mark.timeout(60)
def test_a_new_address_is_re_announced_and_replaces_the_old_one(lan: Lan) -> None:
    """After DHCP moves the PC, update() re-announces; a browser that knew the old address
    sees only the new one, and a fresh resolve by device id finds it too."""
    pc, laptop = lan["pc"], lan["laptop"]
    old_ip, new_ip = pc.ipv4, "10.78.0.42"
    advertiser, _ = advertise(pc)
    watcher = Agent(laptop, "watch")
    watcher.send("browse")
    assert watcher.read()["found"][0]["addresses"] == [old_ip, pc.ipv6]

    pc.set_ipv4(new_ip)
    advertiser.send("update")
    assert advertiser.read() == {"event": "updated", "addresses": [new_ip, pc.ipv6]}

    deadline = time.monotonic() + 3.0
    while True:
        watcher.send("browse")
        addresses = watcher.read()["found"][0]["addresses"]
        if addresses == [new_ip, pc.ipv6] or time.monotonic() > deadline:
            break
    assert addresses == [new_ip, pc.ipv6]
    resolved = Agent(lan["phone"], "resolve", "pc_pc", "2").read()
    assert resolved["found"]["addresses"] == [new_ip, pc.ipv6]


def start_daemon(host: Host, data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Run the real daemon, mDNS on, in ``host``; return it and its runtime file."""
    daemon = host.python(
        "-m", "lanpair", "serve", "--port", "0", "--data-dir", str(data_dir),
        "--hostname", host.hostname, "--name", "Test PC",
    )  # fmt: skip
    runtime = data_dir / "daemon.json"
    deadline = time.monotonic() + AGENT_TIMEOUT_S
    while not runtime.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"the daemon did not start:\n{daemon.stderr.read() if daemon.stderr else ''}"
            )
        time.sleep(0.05)
    return daemon, json.loads(runtime.read_text())


def certificate_names(data_dir: Path) -> list[str]:
    """Return the addresses and names the daemon's certificate covers."""
    cert = x509.load_pem_x509_certificate((data_dir / "tls" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in san]


@pytest.mark.timeout(90)
def test_the_daemon_advertises_its_real_port_and_follows_a_new_address(
    lan: Lan, tmp_path: Path
) -> None:
    """lanpair serve --port 0 announces the bound port and its fingerprint; after DHCP moves
    the PC it re-announces the new address, with a certificate that covers it."""
    pc, laptop = lan["pc"], lan["laptop"]
    daemon, runtime = start_daemon(pc, tmp_path / "data")
    port = int(runtime["url"].rsplit(":", 1)[1])
    [found] = browse_once(laptop)["found"]
    assert (found["port"], found["fingerprint"], found["device_id"]) == (
        port,
        runtime["fingerprint"],
        runtime["device_id"],
    )
    assert found["server"] == f"{pc.hostname}.local"
    assert pc.ipv4 in found["addresses"]

    new_ip = "10.78.0.43"
    pc.set_ipv4(new_ip)
    deadline = time.monotonic() + 15.0  # the daemon looks at its addresses every 5 s
    while True:
        addresses = [f["addresses"] for f in browse_once(laptop)["found"]]
        if (addresses and new_ip in addresses[0]) or time.monotonic() > deadline:
            break
    assert addresses == [[new_ip, pc.ipv6]]
    assert new_ip in certificate_names(tmp_path / "data")
    daemon.terminate()
    assert daemon.wait(AGENT_TIMEOUT_S) == 0
    assert browse_once(laptop)["found"] == []  # it said goodbye


@pytest.mark.timeout(90)
def test_a_host_name_taken_on_the_lan_moves_the_daemon_and_its_certificate_to_the_next(
    lan: Lan, tmp_path: Path
) -> None:
    """Another machine answers for <host>.local: the daemon takes <host>-2.local, for its
    advertisement and, within a few seconds, for its certificate too."""
    pc, phone, laptop = lan["pc"], lan["phone"], lan["laptop"]
    squatter, _ = advertise(phone, "Squatter", hostname=pc.hostname)
    daemon, _runtime = start_daemon(pc, tmp_path / "data")
    found = {f["name"]: f for f in browse_once(laptop)["found"]}
    assert found["Test PC"]["server"] == f"{pc.hostname}-2.local"
    deadline = time.monotonic() + 15.0  # the daemon looks every 5 s
    while f"{pc.hostname}-2.local" not in certificate_names(tmp_path / "data"):
        assert time.monotonic() < deadline, certificate_names(tmp_path / "data")
        time.sleep(0.2)
    daemon.terminate()
    assert daemon.wait(AGENT_TIMEOUT_S) == 0
    squatter.quit()


@pytest.mark.timeout(60)
def test_a_name_taken_by_another_pc_gets_the_next_free_name(lan: Lan) -> None:
    """Two PCs called alike: the second one to start becomes 'Test PC (2)'; both are found."""
    _, first = advertise(lan["pc"])
    _, second = advertise(lan["phone"])

    assert (first["name"], second["name"]) == ("Test PC", "Test PC (2)")
    found = browse_once(lan["laptop"])["found"]
    assert [(f["name"], f["device_id"]) for f in found] == [
        ("Test PC", "pc_pc"),
        ("Test PC (2)", "pc_phone"),
    ]


@pytest.mark.timeout(60)
def test_goodbye_on_exit_removes_the_pc_from_browsers(lan: Lan) -> None:
    """Leaving the advertisement sends goodbyes: a browser that saw the PC, and a fresh one,
    no longer list it (a PC that vanishes without goodbye would linger ~19 minutes)."""
    pc, laptop = lan["pc"], lan["laptop"]
    advertiser, _ = advertise(pc)
    watcher = Agent(laptop, "watch")
    watcher.send("browse")
    assert len(watcher.read()["found"]) == 1

    assert advertiser.quit() == {"event": "withdrawn"}

    watcher.send("browse")
    assert watcher.read()["found"] == []
    assert browse_once(laptop)["found"] == []


@pytest.mark.timeout(90)
def test_avahi_on_the_pc_keeps_its_host_name_and_sees_the_service(lan: Lan) -> None:
    """With avahi on the PC owning the same host name, lanpair leaves the address records to
    it: avahi never reports a conflict, the name still resolves, and avahi-browse on the
    laptop resolves the service with its TXT."""
    pc, laptop = lan["pc"], lan["laptop"]
    pc_avahi = start_avahi(pc, host_name=pc.hostname)
    laptop_avahi = start_avahi(laptop)

    advertiser, ready = advertise(pc)

    assert ready["server"] == f"{pc.hostname}.local"
    assert ready["publishes_addresses"] is False
    result = browse_once(laptop)
    assert result["found"][0]["addresses"] == [pc.ipv4, pc.ipv6]
    assert result["elapsed_s"] < 1.0
    browsed = laptop_avahi.run("avahi-browse", "-rpt", "_lanpair._tcp").stdout
    resolved = [line.split(";") for line in browsed.splitlines() if line.startswith("=")]
    assert {(r[2], r[6], r[8]) for r in resolved} == {
        ("IPv4", f"{pc.hostname}.local", "8443"),
        ("IPv6", f"{pc.hostname}.local", "8443"),
    }
    # The address avahi pairs with each line is whichever its cache had first (once in a
    # full run: fd78::1 on the IPv4 line); the name's IPv4 address is checked below.
    assert {r[7] for r in resolved} <= {pc.ipv4, pc.ipv6}
    assert all('"id=pc_pc"' in r[9] and f'"fp={FINGERPRINT}"' in r[9] for r in resolved)
    advertiser.quit()
    name = laptop_avahi.run("avahi-resolve", "-4", "-n", f"{pc.hostname}.local").stdout.split()
    assert name == [f"{pc.hostname}.local", pc.ipv4]
    log = pc_avahi.log()
    assert "conflict" not in log.lower()
    assert log.count("Host name is") == 1
    assert f"Host name is {pc.hostname}.local." in log


@pytest.mark.timeout(60)
def test_zeroconf_refuses_a_forbidden_network_namespace(lan: Lan) -> None:
    """The guard tests rely on: told that a host's namespace is forbidden, neither browsing
    nor advertising opens a socket there (checked inside a namespace, so nothing can leak)."""
    pc = lan["pc"]
    inode = pc.run("stat", "-L", "-c", "%i", "/proc/self/ns/net").stdout.strip()
    config = {"name": "x", "hostname": "x", "port": 1, "device_id": "x", "scheme": "http"}
    for command in (["browse", "1"], ["advertise", json.dumps({**config, "fingerprint": None})]):
        refused = Agent(pc, *command, env={FORBID_ENV: inode}).read()
        assert refused == {"event": "refused"}


def test_the_guard_refuses_the_namespace_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Named in the variable, this very namespace is refused; unnamed, it is allowed (the
    daemon a user runs has no such variable and advertises on the real LAN)."""
    monkeypatch.setenv(FORBID_ENV, f"1,{netns_inode()}")
    with pytest.raises(discovery.MdnsRefused):
        discovery.refuse_forbidden_netns()
    monkeypatch.setenv(FORBID_ENV, "1")
    discovery.refuse_forbidden_netns()
    monkeypatch.delenv(FORBID_ENV)
    discovery.refuse_forbidden_netns()


def test_long_display_names_fit_one_dns_label_even_when_numbered() -> None:
    """Instance names stay within 63 bytes, dots and control characters removed."""
    name = instance_name("Ånna's.PC\x07 " + "ü" * 60)
    assert len(name.encode()) <= MAX_LABEL_BYTES
    assert name.startswith("Ånna's-PC ü")
    twelfth = numbered(name, 12)
    assert twelfth.endswith(" (12)")
    assert len(twelfth.encode()) <= MAX_LABEL_BYTES


def test_txt_items_over_255_bytes_are_refused() -> None:
    """A TXT string holds at most 255 bytes: key=value beyond that is an error, not a cut."""
    assert txt_record({"id": "x" * 252, "fp": None}) == {"id": "x" * 252}
    with pytest.raises(ValueError, match="'id'"):
        txt_record({"id": "x" * 253})


@pytest.fixture(autouse=True)
def _needs_lan_tools(request: pytest.FixtureRequest) -> None:
    """Skip (CI: fail) the avahi test where avahi is not installed."""
    if "avahi" in request.node.name and (reason := avahi_unavailable()):
        skip_or_fail(reason)


# --- the agent: what runs inside a namespace host -------------------------------------------


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)  # noqa: T201 - the agent talks on stdout


async def _advertise(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    async with Advertisement(**config) as advertisement:
        _emit(
            event="ready",
            name=advertisement.name,
            server=advertisement.server,
            publishes_addresses=advertisement.publishes_addresses,
        )
        while (line := await loop.run_in_executor(None, sys.stdin.readline)) and (
            line.strip() != "quit"
        ):
            command, _, argument = line.strip().partition(" ")
            if command == "update":
                await advertisement.update(argument.split(",") if argument else None)
                _emit(event="updated", addresses=list(advertisement.addresses))
    _emit(event="withdrawn")


async def _browse(timeout_s: float) -> None:
    started = time.monotonic()
    found = await discovery.browse(timeout_s)
    _emit(elapsed_s=time.monotonic() - started, found=[asdict(f) for f in found])


async def _resolve(device_id: str, timeout_s: float) -> None:
    started = time.monotonic()
    found = await discovery.resolve(device_id, timeout_s)
    _emit(first_s=time.monotonic() - started, found=asdict(found) if found else None)


async def _watch() -> None:
    loop = asyncio.get_running_loop()
    async with discovery.Browser() as browser:
        while (line := await loop.run_in_executor(None, sys.stdin.readline)) and (
            line.strip() == "browse"
        ):
            found = await browser.browse()
            _emit(found=[asdict(f) for f in found])


def _agent(argv: list[str]) -> None:
    command, *args = argv
    runs = {
        "advertise": lambda: _advertise(json.loads(args[0])),
        "browse": lambda: _browse(float(args[0])),
        "resolve": lambda: _resolve(args[0], float(args[1])),
        "watch": _watch,
    }
    try:
        asyncio.run(runs[command]())
    except discovery.MdnsRefused:
        _emit(event="refused")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    _agent(sys.argv[1:])


def test_a_daemon_listening_on_ipv4_only_advertises_no_ipv6(tmp_path: Path) -> None:
    """--host 0.0.0.0 takes every IPv4 address and no IPv6 one: none would answer there."""
    from lanpair import config
    from lanpair.daemon import Announcer
    from lanpair.models import Site

    (tmp_path / "none.toml").write_text("")
    settings = config.load(cli={"host": "0.0.0.0"}, environ={}, config_path=tmp_path / "none.toml")
    site = Site(
        name="PC", device_id="pc_x", hostname="pc", port=1, scheme="https", ip="", fingerprint=None
    )
    addresses = Announcer(settings, site)._listened_addresses()
    assert addresses is not None
    assert all(":" not in address for address in addresses)
