"""The client commands on a virtual LAN: the real daemon, mDNS on, in ``pc``; the CLI in
``laptop`` and ``phone`` (``tests/lan.py``; root only, CI fails without it).

discover finds the PC within a second with its fingerprint and marks it unreachable once
its cable is cut; pair pins the QR's key and refuses a server with another; push and pull
move a folder both ways byte for byte; a push cut off mid-file finishes when run again;
status follows the PC to a new address by mDNS; a LAN peer is refused the owner's routes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from client_support import digests, make_big, make_photos, wait_for_part
from cryptography import x509
from lan import Host, Lan

BIG_BYTES = 50 * 1000 * 1000
START_WITHIN_S = 20.0
ANNOUNCED_WITHIN_S = 15.0  # registration probes ~1.7 s; an address change is seen within 5 s


@dataclass
class Daemon:
    """The real daemon running in a host."""

    host: Host
    process: subprocess.Popen[str]
    data_dir: Path
    url: str
    fingerprint: str
    device_id: str

    @property
    def port(self) -> int:
        """Return the bound port."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def tus_folder(self) -> Path:
        """Return where unfinished uploads wait."""
        return self.data_dir / "uploads" / ".lanpair" / "tus"

    def stop(self) -> None:
        """Stop it with SIGTERM (it says goodbye on mDNS)."""
        self.process.terminate()
        self.process.wait(10)


def start_daemon(host: Host, data_dir: Path, port: int = 0) -> Daemon:
    """Run ``lanpair serve --host 0.0.0.0`` with mDNS on in ``host``; wait until it serves."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir.parent / f"{data_dir.name}.log").open("a")
    process = host.popen(
        *(sys.executable, "-m", "lanpair", "serve", "--host", "0.0.0.0", "--port", str(port)),
        *("--data-dir", str(data_dir), "--hostname", host.hostname, "--name", "Test PC"),
        *("--reserve", "0"),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    runtime = data_dir / "daemon.json"
    deadline = time.monotonic() + START_WITHIN_S
    while not runtime.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the daemon did not start: {(data_dir.parent / 'data.log').read_text()}")
        time.sleep(0.05)
    info = json.loads(runtime.read_text())
    return Daemon(host, process, data_dir, info["url"], info["fingerprint"], info["device_id"])


def lanpair(host: Host, *args: str, client: Path, timeout_s: float = 120) -> Any:
    """Run one lanpair command in ``host`` with its own client dir."""
    return host.run(
        sys.executable,
        "-m",
        "lanpair",
        *args,
        check=False,
        timeout_s=timeout_s,
        env={"LANPAIR_CLIENT_DIR": str(client), "XDG_CONFIG_HOME": "/nonexistent-lanpair"},
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Return a command's result after checking it succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def qr_link(daemon: Daemon) -> str:
    """Make a pairing code on the PC itself (`lanpair qr`); return the QR's text."""
    shown = ok(
        lanpair(daemon.host, "qr", "--data-dir", str(daemon.data_dir), client=daemon.data_dir)
    )
    return next(line.strip() for line in shown.stdout.splitlines() if line.startswith("  https://"))


def pair(daemon: Daemon, host: Host, client: Path) -> dict[str, Any]:
    """Pair ``host`` with the PC through the QR's text; return the stored pairing."""
    ok(lanpair(host, "pair", qr_link(daemon), client=client))
    return dict(json.loads((client / "pairings.json").read_text())["pcs"][0])


def discover(host: Host, client: Path, *extra: str) -> tuple[list[dict[str, Any]], float]:
    """Run `lanpair discover --json` in ``host``; return what it found and its wall time."""
    started = time.monotonic()
    result = ok(lanpair(host, "discover", "--json", *extra, client=client))
    return json.loads(result.stdout), time.monotonic() - started


def wait_announced(
    host: Host, client: Path, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Discover until ``done`` holds (the daemon announces itself ~2 s after it starts)."""
    deadline = time.monotonic() + ANNOUNCED_WITHIN_S
    while True:
        found, _ = discover(host, client)
        if done(found) or time.monotonic() > deadline:
            return found


def test_discover_from_the_laptop_finds_the_pc_within_a_second_with_its_fingerprint(
    lan: Lan, tmp_path: Path
) -> None:
    """A whole `lanpair discover` run on the laptop lists the PC — name, .local name,
    addresses, port, fingerprint, version — checked reachable over HTTPS, in under 1 s."""
    pc, laptop = lan["pc"], lan["laptop"]
    daemon = start_daemon(pc, tmp_path / "data")
    client = tmp_path / "client"
    wait_announced(laptop, client, lambda found: len(found) == 1)

    runs = [discover(laptop, client) for _ in range(3)]

    assert all(len(found) == 1 for found, _ in runs), runs
    found = runs[-1][0][0]
    assert found["name"] == "Test PC"
    assert found["local_name"] == f"{pc.hostname}.local"
    assert pc.ipv4 in found["addresses"]
    assert (found["port"], found["fingerprint"], found["device_id"]) == (
        daemon.port,
        daemon.fingerprint,
        daemon.device_id,
    )
    assert (found["reachable"], found["reached_at"], found["paired"]) == (True, pc.ipv4, False)
    assert found["version"]
    walls = sorted(wall for _, wall in runs)
    assert walls[1] < 1.0, walls  # the median: the machine is shared
    table = ok(lanpair(laptop, "discover", client=client)).stdout
    assert daemon.fingerprint in table
    assert "reachable" in table


def test_pair_by_name_and_code_pins_the_announced_key(lan: Lan, tmp_path: Path) -> None:
    """`lanpair pair "Test PC" --code=CODE --fingerprint=FP` (as `lanpair qr` prints it)
    finds the PC by mDNS and pins its key; without the fingerprint (and no one to ask) or
    with a wrong one it refuses, and the code stays unspent."""
    pc, laptop = lan["pc"], lan["laptop"]
    daemon = start_daemon(pc, tmp_path / "data")
    client = tmp_path / "client"
    wait_announced(laptop, client, lambda found: len(found) == 1)
    shown = ok(lanpair(pc, "qr", "--data-dir", str(daemon.data_dir), client=client)).stdout
    words = next(line for line in shown.splitlines() if "--code=" in line).split()
    code = next(w for w in words if w.startswith("--code=")).removeprefix("--code=")
    # As printed: "--code=…", since a code (1 in 64) or a key may start with "-".
    by_code = f"--code={code}"

    wrong = lanpair(laptop, "pair", "Test PC", by_code, "--fingerprint", "A" * 43, client=client)
    unvouched = lanpair(laptop, "pair", "Test PC", by_code, client=client)
    paired = ok(
        lanpair(
            laptop,
            "pair",
            "Test PC",
            by_code,
            f"--fingerprint={daemon.fingerprint}",
            client=client,
        )
    )

    assert wrong.returncode == 6, wrong.stderr
    assert unvouched.returncode == 6, unvouched.stderr
    assert "--fingerprint" in unvouched.stderr
    assert f"lanpair pair 'Test PC' --code={code} --fingerprint={daemon.fingerprint}" in shown
    assert f"{daemon.fingerprint} (announced on the LAN" in paired.stdout
    stored = json.loads((client / "pairings.json").read_text())["pcs"][0]
    assert (stored["pc_id"], stored["fingerprint"]) == (daemon.device_id, daemon.fingerprint)


def test_pair_push_and_pull_back_across_the_lan_byte_identical(lan: Lan, tmp_path: Path) -> None:
    """The laptop pairs with the QR's text, pushes a folder of photos and a 50 MB file, and
    pulls them back identical; a second push sends nothing."""
    pc, laptop = lan["pc"], lan["laptop"]
    daemon = start_daemon(pc, tmp_path / "data")
    client = tmp_path / "client"
    stored = pair(daemon, laptop, client)
    folder = tmp_path / "Holiday"
    make_photos(folder, 4, seed=21)
    make_photos(folder / "beach", 2, seed=22)
    make_big(folder / "clip.bin", BIG_BYTES, seed=23)

    pushed = json.loads(ok(lanpair(laptop, "push", str(folder), "--json", client=client)).stdout)
    again = json.loads(ok(lanpair(laptop, "push", str(folder), "--json", client=client)).stdout)
    back = tmp_path / "back"
    pulled = json.loads(ok(lanpair(laptop, "pull", str(back), "--json", client=client)).stdout)

    assert stored["fingerprint"] == daemon.fingerprint
    assert stored["address"] == pc.ipv4
    assert (pushed["files"], pushed["failed"]) == (7, [])
    assert (again["files"], again["bytes"], again["already"]) == (0, 0, 7)
    assert (pulled["files"], pulled["failed"]) == (7, [])
    folder_name = f"{stored['device_name']} ({stored['device_id'].removeprefix('dev_')[:4]})"
    assert digests(back / folder_name) == digests(folder)


def test_pair_refuses_a_daemon_presenting_another_key(lan: Lan, tmp_path: Path) -> None:
    """Another daemon (another key) answering at the QR's address and port is refused before
    the code is sent; the pairing file is not even written."""
    pc, laptop = lan["pc"], lan["laptop"]
    first = start_daemon(pc, tmp_path / "first")
    link = qr_link(first)
    first.stop()
    impostor = start_daemon(pc, tmp_path / "impostor", port=first.port)
    client = tmp_path / "client"

    refused = lanpair(laptop, "pair", link, client=client)

    assert impostor.fingerprint != first.fingerprint
    assert refused.returncode == 6, refused.stderr
    assert "another key than the one in the QR code" in refused.stderr
    assert not (client / "pairings.json").exists()


PROBE = """
import asyncio, json, sys
from lanpair import pinned
async def main(url, fp, token):
    host, port = url.split("//")[1].rsplit(":", 1)
    out = {}
    for method, path in [("POST", "/api/pairing/generate"), ("GET", "/api/pairing/devices")]:
        answer = await pinned.call("https", host, int(port), method, path, fingerprint=fp,
                                   body={} if method == "POST" else None, token=token or None)
        out[path] = answer.status
    print(json.dumps(out))
asyncio.run(main(*sys.argv[1:]))
"""


def test_a_lan_peer_is_refused_the_owner_routes(lan: Lan, tmp_path: Path) -> None:
    """The phone gets 403 on generate and the management list, unpaired and paired alike;
    the PC itself may (lanpair qr works there)."""
    pc, phone = lan["pc"], lan["phone"]
    daemon = start_daemon(pc, tmp_path / "data")
    url = f"https://{pc.ipv4}:{daemon.port}"
    stored = pair(daemon, phone, tmp_path / "client")

    def statuses(token: str) -> dict[str, int]:
        result = phone.run(sys.executable, "-c", PROBE, url, daemon.fingerprint, token)
        return dict(json.loads(result.stdout))

    assert statuses("") == {"/api/pairing/generate": 403, "/api/pairing/devices": 403}
    assert statuses(stored["token"]) == {
        "/api/pairing/generate": 403,
        "/api/pairing/devices": 403,
    }


def certificate_names(data_dir: Path) -> list[str]:
    """Return the addresses and names the daemon's certificate covers."""
    cert = x509.load_pem_x509_certificate((data_dir / "tls" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in san]


@pytest.mark.timeout(180)
def test_status_follows_the_pc_to_its_new_address(lan: Lan, tmp_path: Path) -> None:
    """DHCP moves the PC: it re-announces the new address with a certificate covering it;
    `lanpair status` on the laptop finds it again by its id over mDNS, says so and stores
    the new address, and a push goes there."""
    pc, laptop = lan["pc"], lan["laptop"]
    daemon = start_daemon(pc, tmp_path / "data")
    client = tmp_path / "client"
    old_ip = pair(daemon, laptop, client)["address"]
    new_ip = "10.78.0.42"

    pc.set_ipv4(new_ip)
    found = wait_announced(laptop, client, lambda f: bool(f) and new_ip in f[0]["addresses"])
    status = lanpair(laptop, "status", client=client)
    report = json.loads(ok(lanpair(laptop, "status", "--json", client=client)).stdout)
    photo = make_photos(tmp_path / "p", 1, seed=31)[0]
    pushed = json.loads(ok(lanpair(laptop, "push", str(photo), "--json", client=client)).stdout)

    assert old_ip != new_ip
    assert found[0]["addresses"][0] == new_ip
    assert found[0]["reachable"]
    assert new_ip in certificate_names(daemon.data_dir)
    assert ok(status).stderr.count("moved") == 1
    assert f"https://{old_ip}:{daemon.port}" in status.stderr
    assert f"https://{new_ip}:{daemon.port}  reachable, paired" in status.stdout
    assert [(r["address"], r["moved_from"], r["reachable"]) for r in report] == [
        (new_ip, None, True)
    ]
    stored = json.loads((client / "pairings.json").read_text())["pcs"][0]
    assert (stored["address"], stored["fingerprint"]) == (new_ip, daemon.fingerprint)
    assert pushed["files"] == 1


def test_discover_marks_a_pc_cut_off_the_lan_unreachable(lan: Lan, tmp_path: Path) -> None:
    """mDNS answers outlive the host (no goodbye from a cut cable): the PC answers the
    browse, its cable is cut before the check, and discover lists it as unreachable."""
    pc, laptop = lan["pc"], lan["laptop"]
    daemon = start_daemon(pc, tmp_path / "data")
    client = tmp_path / "client"
    wait_announced(laptop, client, lambda found: len(found) == 1)
    looking = laptop.popen(
        *(sys.executable, "-m", "lanpair", "discover", "--json", "--timeout", "2"),
        env={"LANPAIR_CLIENT_DIR": str(client)},
    )

    time.sleep(1.0)  # the answer arrives within ~0.1 s; the browse goes on until 2 s
    pc.cut()
    out, err = looking.communicate(timeout=30)

    assert looking.returncode == 0, err
    [found] = json.loads(out)
    assert (found["device_id"], found["fingerprint"]) == (daemon.device_id, daemon.fingerprint)
    assert (found["reachable"], found["status"]) == (False, "unreachable")
    table = ok(lanpair(laptop, "discover", client=client)).stdout  # cut: nobody answers
    assert "Test PC" not in table


@pytest.mark.timeout(180)
def test_a_push_cut_off_mid_file_finishes_when_run_again(lan: Lan, tmp_path: Path) -> None:
    """The PC's cable is cut in the middle of the big file: the push gives up and, the PC
    not answering at all, stops (exit 3, 'run again'); after the cable is back, the same
    command sends only the rest of that file and none of the photos that had arrived."""
    pc, laptop = lan["pc"], lan["laptop"]
    daemon = start_daemon(pc, tmp_path / "data")
    client = tmp_path / "client"
    stored = pair(daemon, laptop, client)
    folder = tmp_path / "Cut"
    photos = make_photos(folder, 3, seed=41)
    big = make_big(folder / "zz-video.bin", 4 * BIG_BYTES, seed=42)
    push = laptop.popen(
        *(sys.executable, "-m", "lanpair", "push", str(folder), "--timeout", "2"),
        env={"LANPAIR_CLIENT_DIR": str(client)},
    )
    arrived = wait_for_part(daemon.tus_folder, push, BIG_BYTES // 2)

    pc.cut()
    out, err = push.communicate(timeout=60)
    pc.heal()
    resumed = json.loads(ok(lanpair(laptop, "push", str(folder), "--json", client=client)).stdout)

    assert push.returncode == 3, out + err
    assert "stopped answering" in err
    assert "run the same command again" in err
    assert (resumed["files"], resumed["resumed"], resumed["already"]) == (1, 1, len(photos))
    assert resumed["bytes"] <= big.stat().st_size - arrived
    folder_name = f"{stored['device_name']} ({stored['device_id'].removeprefix('dev_')[:4]})"
    on_pc = daemon.data_dir / "uploads" / folder_name / "Cut" / big.name
    assert hashlib.sha256(on_pc.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
