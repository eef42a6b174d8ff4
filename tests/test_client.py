"""The client commands against a real daemon on loopback: pair, push, pull, status.

The daemon is ``lanpair serve --no-mdns`` on 127.0.0.1 in a subprocess, the commands are
``python -m lanpair …`` subprocesses with their own client dir; nothing here sends
multicast (``--no-mdns`` everywhere, and the netns guard set in case one ever tried).
The same on a virtual LAN, with mDNS: ``test_lan_clients.py``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from client_support import digests, make_big, make_photos, wait_for_part

from lanpair import certs, credentials, pinned, push
from lanpair.client import ApiClient
from lanpair.client_commands import parse_link
from lanpair.errors import BadPairingLink

START_WITHIN_S = 20.0
BIG_BYTES = 50 * 1000 * 1000
FORBID_ENV = "LANPAIR_FORBID_MDNS_IN_NETNS"


@dataclass
class PC:
    """A daemon subprocess on loopback."""

    data_dir: Path
    process: subprocess.Popen[str]
    url: str
    fingerprint: str
    stdout: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        """Return the port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def tus_folder(self) -> Path:
        """Return where unfinished uploads wait."""
        return self.data_dir / "uploads" / ".lanpair" / "tus"


def _env(client_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LANPAIR_CONFIG", None)
    env["XDG_CONFIG_HOME"] = "/nonexistent-lanpair-test-config"
    env[FORBID_ENV] = str(Path("/proc/self/ns/net").stat().st_ino)
    if client_dir is not None:
        env["LANPAIR_CLIENT_DIR"] = str(client_dir)
    return env


def start_pc(data_dir: Path, port: int = 0) -> PC:
    """Start ``lanpair serve`` on loopback (no mDNS) and wait until it listens."""
    log = (data_dir.parent / f"{data_dir.name}.log").open("a")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "lanpair", "serve", "--host", "127.0.0.1"),
            *("--port", str(port), "--no-mdns", "--reserve", "0", "--data-dir", str(data_dir)),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=_env(),
    )
    log.close()
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the daemon exited: {process.wait()} {lines}")
        lines.append(line.rstrip("\n"))
        if line.startswith("  data: "):
            url = lines[0].removeprefix("lanpair: listening on ")
            fingerprint = next(x for x in lines if "fingerprint" in x).rsplit(" ", 1)[1]
            return PC(data_dir, process, url, fingerprint, lines)
    process.kill()
    raise AssertionError(f"the daemon did not start: {lines}")


def stop_pc(pc: PC, how: signal.Signals = signal.SIGTERM) -> None:
    """Stop the daemon (SIGKILL: as if the PC lost power)."""
    if pc.process.poll() is None:
        pc.process.send_signal(how)
        try:
            pc.process.wait(10)
        except subprocess.TimeoutExpired:
            pc.process.kill()
            pc.process.wait(10)
    if pc.process.stdout is not None:
        pc.process.stdout.close()


@contextmanager
def running_pc(data_dir: Path) -> Iterator[PC]:
    """Run a daemon for the block."""
    pc = start_pc(data_dir)
    try:
        yield pc
    finally:
        stop_pc(pc)


@pytest.fixture(scope="module")
def pc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PC]:
    """Return one daemon shared by this module's tests (each pairs its own client)."""
    with running_pc(tmp_path_factory.mktemp("pc") / "data") as running:
        yield running


def lanpair(
    *args: str,
    client_dir: Path,
    timeout_s: float = 120,
    cwd: Path | None = None,
    max_file_bytes: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one lanpair command as this machine's client (in ``cwd``; writing files of at
    most ``max_file_bytes``, as `ulimit -f` would allow)."""

    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "lanpair", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=_env(client_dir),
        check=False,
        cwd=cwd,
        preexec_fn=limit if max_file_bytes is not None else None,
    )


def lanpair_running(*args: str, client_dir: Path) -> subprocess.Popen[str]:
    """Start one lanpair command as this machine's client; its output is piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "lanpair", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(client_dir),
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Return a command's result after checking it succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def qr_link(pc: PC) -> str:
    """Make a pairing code on the PC (as its owner, like `lanpair qr`); return the QR's text."""
    shown = ok(lanpair("qr", "--data-dir", str(pc.data_dir), client_dir=pc.data_dir)).stdout
    return next(line.strip() for line in shown.splitlines() if line.startswith("  https://"))


def paired_client(pc: PC, client_dir: Path, name: str = "Laptop") -> dict[str, Any]:
    """Pair a fresh client dir with the PC; return its stored pairing."""
    ok(lanpair("pair", qr_link(pc), "--name", name, client_dir=client_dir))
    book = json.loads((client_dir / "pairings.json").read_text())
    return dict(book["pcs"][0])


def device_folder(stored: dict[str, Any]) -> str:
    """Return the library folder the PC gives a paired device: ``Name (abcd)``."""
    return f"{stored['device_name']} ({stored['device_id'].removeprefix('dev_')[:4]})"


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Return the --json summary a push or pull printed."""
    return dict(json.loads(result.stdout))


# --- pairing --------------------------------------------------------------------------------


def test_pair_with_the_qr_link_pins_its_key_and_keeps_the_token_private(
    pc: PC, tmp_path: Path
) -> None:
    """The QR's text pairs this machine: the file holds the PC, its pinned key and our token,
    mode 0600 in a 0700 folder, and status shows the pairing as live."""
    client = tmp_path / "client"

    stored = paired_client(pc, client)

    assert stored["fingerprint"] == pc.fingerprint
    assert stored["address"] == "127.0.0.1"
    assert stored["port"] == pc.port
    assert stored["device_name"] == "Laptop"
    assert stored["device_id"].startswith("dev_")
    assert stored["pc_id"].startswith("pc_")
    assert len(stored["token"]) == 32
    assert stat.S_IMODE((client / "pairings.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(client.stat().st_mode) == 0o700
    assert not [p for p in client.iterdir() if p.name.endswith(".tmp")]
    report = json.loads(ok(lanpair("status", "--json", "--no-mdns", client_dir=client)).stdout)
    assert [(r["pc_id"], r["reachable"], r["state"]) for r in report] == [
        (stored["pc_id"], True, "reachable, paired")
    ]
    assert "token" not in report[0]


def test_a_server_with_another_key_is_refused_before_the_code_is_spent(
    pc: PC, tmp_path: Path
) -> None:
    """A link whose fingerprint is not the server's key is refused (exit 6) with a clear
    sentence, and no request reached the PC: the same code then pairs."""
    link = qr_link(pc)
    other_key = base64.urlsafe_b64encode(hashlib.sha256(b"another key").digest()).rstrip(b"=")
    forged = link.replace(f"fp={pc.fingerprint}", f"fp={other_key.decode()}")
    client = tmp_path / "client"

    refused = lanpair("pair", forged, client_dir=client)

    assert refused.returncode == 6, refused.stderr
    assert "presents another key than the one in the QR code" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (client / "pairings.json").exists()
    ok(lanpair("pair", link, client_dir=client))


def test_a_second_pc_is_paired_beside_the_first_and_chosen_by_name(pc: PC, tmp_path: Path) -> None:
    """Two PCs in one credentials file; push without --to asks which one, --to picks."""
    client = tmp_path / "client"
    paired_client(pc, client)
    with running_pc(tmp_path / "second") as second:
        ok(lanpair("pair", qr_link(second), client_dir=client))
        book = json.loads((client / "pairings.json").read_text())
        assert len(book["pcs"]) == 2
        photo = make_photos(tmp_path / "one", 1, seed=7)[0]

        unclear = lanpair("push", str(photo), "--no-mdns", client_dir=client)
        chosen = lanpair(
            "push", str(photo), "--to", book["pcs"][1]["pc_id"], "--no-mdns", client_dir=client
        )

    assert unclear.returncode == 2
    assert "say which with --to" in unclear.stderr
    assert ok(chosen).stdout.startswith("Pushed 1 file")


def test_pairing_again_is_the_same_device_to_the_pc(pc: PC, tmp_path: Path) -> None:
    """A client that pairs with the same PC again is the same device to it: the PC revokes
    the old pairing and keeps the folder, so the device's photos stay together. The first
    pairing of a fresh client dir sends the client id it then stores."""
    client = tmp_path / "client"
    first = paired_client(pc, client)
    sent_id = json.loads((client / "pairings.json").read_text())["client_id"]
    before, after = make_photos(tmp_path / "p", 2, seed=11)
    ok(lanpair("push", str(before), "--no-mdns", client_dir=client))
    again = paired_client(pc, client)
    ok(lanpair("push", str(after), "--no-mdns", client_dir=client))

    listed = ok(lanpair("devices", "--json", "--data-dir", str(pc.data_dir), client_dir=client))
    states = {key: d["status"] for key, d in json.loads(listed.stdout).items()}
    assert json.loads((client / "pairings.json").read_text())["client_id"] == sent_id
    assert again["device_id"] != first["device_id"]
    assert (states[first["device_id"]], states[again["device_id"]]) == ("revoked", "confirmed")
    folder = pc.data_dir / "uploads" / device_folder(first)
    assert sorted(p.name for p in folder.iterdir()) == sorted([before.name, after.name])


@pytest.mark.parametrize(
    "link",
    [
        "https://127.0.0.1:5000/pairing",
        "https://127.0.0.1:5000/pair-confirm#t=short&fp=x",
        "https://127.0.0.1:5000/pair-confirm#t=" + "a" * 32,  # no fingerprint to pin
        "ftp://127.0.0.1/pair-confirm#t=" + "a" * 32 + "&fp=x",
    ],
)
def test_what_is_not_a_pairing_link_is_refused(link: str) -> None:
    """Links without a code, without a pin, or of another kind are refused as such."""
    with pytest.raises(BadPairingLink):
        parse_link(link)


def test_the_stdlib_pin_matches_the_daemons_fingerprint(tmp_path: Path) -> None:
    """pinned's SPKI walk gives the fingerprint certs computes with cryptography."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    info = certs.ensure_certificate(
        tmp_path / "key.pem",
        tmp_path / "cert.pem",
        hostname="somehost",
        addresses=[ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
    )
    cert = x509.load_pem_x509_certificate(info.cert_path.read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)

    assert pinned.fingerprint_of(der) == info.fingerprint
    with pytest.raises(ValueError, match="certificate layout"):
        pinned.spki_of(b"\x02\x01\x00" + der)


def test_the_credentials_file_is_replaced_whole(tmp_path: Path) -> None:
    """Each save writes a new 0600 file and renames it over the old one (no temp left)."""
    path = tmp_path / "conf" / "pairings.json"
    book = credentials.Book()
    credentials.save(path, book)
    before = path.stat().st_ino
    credentials.save(path, book)

    assert path.stat().st_ino != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["pairings.json"]
    assert credentials.load(path).client_id == book.client_id


def test_changes_from_commands_at_once_are_all_kept(tmp_path: Path) -> None:
    """Pairings stored from several threads at once (each its own lock descriptor, as two
    commands have) all end up in the file: none overwrites another's."""
    path = tmp_path / "conf" / "pairings.json"

    def store(first: int) -> None:
        for n in range(first, first + 10):
            with credentials.editing(path) as book:
                book.put(
                    credentials.PairedPC(
                        name=f"pc{n}",
                        pc_id=f"pc_{n}",
                        fingerprint=None,
                        scheme="http",
                        address="127.0.0.1",
                        port=5000 + n,
                        local_name=f"pc{n}.local",
                        device_id=f"dev_{n}",
                        device_name="Laptop",
                        token="t" * 32,
                        paired_at=credentials.now_iso(),
                    )
                )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(store, range(0, 40, 10)))

    assert sorted(pc.port for pc in credentials.load(path).pcs) == list(range(5000, 5040))
    assert stat.S_IMODE((path.parent / "pairings.lock").stat().st_mode) == 0o600


# --- push and pull --------------------------------------------------------------------------


def test_push_a_folder_then_pull_it_back_byte_identical_and_again_moves_nothing(
    pc: PC, tmp_path: Path
) -> None:
    """A folder of photos (one in a subfolder) and a 50 MB file go to the PC and come back
    identical; pushing and pulling again move nothing."""
    client = tmp_path / "client"
    folder = device_folder(paired_client(pc, client))
    trip = tmp_path / "Trip"
    make_photos(trip, 3, seed=1)
    make_photos(trip / "day 2", 2, seed=2)
    make_big(trip / "video.bin", BIG_BYTES)
    (trip / ".DS_Store").write_bytes(b"hidden")

    pushed = summary(ok(lanpair("push", str(trip), "--json", "--no-mdns", client_dir=client)))
    again = summary(ok(lanpair("push", str(trip), "--json", "--no-mdns", client_dir=client)))
    back = tmp_path / "back"
    pulled = summary(ok(lanpair("pull", str(back), "--json", "--no-mdns", client_dir=client)))
    pulled_again = summary(ok(lanpair("pull", str(back), "--json", "--no-mdns", client_dir=client)))

    sent = [p for p in trip.rglob("*") if p.is_file() and p.name != ".DS_Store"]
    assert (pushed["files"], pushed["already"], pushed["failed"]) == (6, 0, [])
    assert pushed["bytes"] == sum(p.stat().st_size for p in sent)
    assert (again["files"], again["bytes"], again["already"]) == (0, 0, 6)
    assert (pc.data_dir / "uploads" / folder / "Trip" / "day 2").is_dir()
    assert digests(back / folder) == digests(trip)
    assert pulled["failed"] == []
    assert (pulled_again["files"], pulled_again["bytes"]) == (0, 0)
    assert pulled_again["already"] == pulled["files"] + pulled["already"]
    assert not list(back.rglob("*.lanpair-part"))


def test_a_killed_push_resumes_where_it_stopped_without_resending_finished_files(
    tmp_path: Path,
) -> None:
    """The push is killed in the middle of the big file; the next run asks the PC how far
    the upload got and sends only the rest; the photos that were done are not sent again."""
    client, folder = tmp_path / "client", tmp_path / "Send"
    photos = make_photos(folder, 3, seed=3)
    big = make_big(folder / "zz-big.bin", 4 * BIG_BYTES, seed=4)
    with running_pc(tmp_path / "data") as pc:
        paired_client(pc, client)
        push = subprocess.Popen(
            [sys.executable, "-m", "lanpair", "push", str(folder), "--json", "--no-mdns"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(client),
        )
        arrived = wait_for_part(pc.tus_folder, push, BIG_BYTES // 2)
        push.kill()
        push.wait(10)
        state = json.loads(next((client / "state").glob("push-*.json")).read_text())

        resumed = summary(
            ok(lanpair("push", str(folder), "--json", "--no-mdns", client_dir=client))
        )

        stored = next((pc.data_dir / "uploads").glob("Laptop (*)")) / "Send"
        assert digests(stored) == digests(folder)
    assert state["files"][str(big)]["upload"].startswith("/api/tus/")
    assert (resumed["files"], resumed["already"], resumed["resumed"]) == (1, len(photos), 1)
    assert resumed["bytes"] <= big.stat().st_size - arrived
    assert resumed["failed"] == []


def test_a_push_cut_by_the_pc_going_down_finishes_after_it_comes_back(tmp_path: Path) -> None:
    """The daemon dies mid-file: the push gives up after --timeout without progress and,
    the PC not answering at all, stops (exit 3, 'run again'); with the daemon back on its
    port, the same command finishes the file."""
    client, folder = tmp_path / "client", tmp_path / "Send"
    big = make_big(folder / "big.bin", 4 * BIG_BYTES, seed=5)
    data = tmp_path / "data"
    pc = start_pc(data)
    try:
        paired_client(pc, client)
        push = lanpair_running(
            "push", str(folder), "--no-mdns", "--timeout", "2", client_dir=client
        )
        arrived = wait_for_part(pc.tus_folder, push, BIG_BYTES // 2)
        stop_pc(pc, signal.SIGKILL)
        out, err = push.communicate(timeout=60)
        pc = start_pc(data, port=pc.port)
        resumed = summary(
            ok(lanpair("push", str(folder), "--json", "--no-mdns", client_dir=client))
        )
        stored = next((data / "uploads").glob("Laptop (*)")) / "Send" / "big.bin"
        assert (
            hashlib.sha256(stored.read_bytes()).digest()
            == hashlib.sha256(big.read_bytes()).digest()
        )
    finally:
        stop_pc(pc)
    assert push.returncode == 3, out + err
    assert "stopped answering" in err
    assert "run the same command again" in err
    assert resumed["resumed"] == 1
    assert resumed["bytes"] <= big.stat().st_size - arrived


def test_pull_continues_a_partial_download_with_range(pc: PC, tmp_path: Path) -> None:
    """A part left by an interrupted pull is continued, not started over; the file comes
    out whole and dated like the photo."""
    client = tmp_path / "client"
    folder = device_folder(paired_client(pc, client, name="Puller"))
    big = make_big(tmp_path / "src" / "movie.bin", BIG_BYTES, seed=6)
    ok(lanpair("push", str(big), "--no-mdns", client_dir=client))
    back = tmp_path / "back"
    first = summary(ok(lanpair("pull", str(back), "--json", "--no-mdns", client_dir=client)))
    target = back / folder / "movie.bin"
    part = target.with_name(f".{target.name}.lanpair-part")
    part.write_bytes(big.read_bytes()[: BIG_BYTES // 3])
    target.unlink()

    again = summary(ok(lanpair("pull", str(back), "--json", "--no-mdns", client_dir=client)))

    assert first["failed"] == []
    assert (again["files"], again["resumed"]) == (1, 1)
    assert again["bytes"] == BIG_BYTES - BIG_BYTES // 3
    assert target.read_bytes() == big.read_bytes()
    assert not part.exists()


def test_pull_never_replaces_a_file_changed_here(pc: PC, tmp_path: Path) -> None:
    """A pulled file edited here stays as it is; the PC's copy comes beside it as
    ``name (1)``, and the run goes on to fetch what is new (it once stopped with a
    traceback, every run after)."""
    client = tmp_path / "client"
    folder = device_folder(paired_client(pc, client, name="Editor"))
    first, later = make_photos(tmp_path / "a", 1, seed=21), make_photos(tmp_path / "b", 1, seed=22)
    ok(lanpair("push", str(first[0]), "--no-mdns", client_dir=client))
    back = tmp_path / "back"
    ok(lanpair("pull", str(back), "--no-mdns", client_dir=client))
    edited = back / folder / first[0].name
    edited.write_bytes(edited.read_bytes() + b"edited here")
    ok(lanpair("push", str(later[0]), "--no-mdns", client_dir=client))

    again = lanpair("pull", str(back), "--json", "--no-mdns", client_dir=client)

    pulled = summary(ok(again))
    assert "Traceback" not in again.stderr
    assert edited.read_bytes().endswith(b"edited here")
    beside = edited.with_name(f"{edited.stem} (1){edited.suffix}")
    assert beside.read_bytes() == first[0].read_bytes()
    assert (back / folder / later[0].name).read_bytes() == later[0].read_bytes()
    assert pulled["failed"] == []


def test_pull_into_a_file_is_refused_in_a_sentence(pc: PC, tmp_path: Path) -> None:
    """DIR must be a folder: a file there is named, with no traceback."""
    client = tmp_path / "client"
    paired_client(pc, client)
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")

    refused = lanpair("pull", str(not_a_folder), "--no-mdns", client_dir=client)

    assert refused.returncode == 1
    assert "is not a folder" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not_a_folder.read_text() == "mine"


def test_pull_fetches_a_name_of_the_longest_length_the_pc_keeps(pc: PC, tmp_path: Path) -> None:
    """A 244-byte name, which the PC keeps, comes down too: its part file's name would be
    over the 255-byte limit, so the part is named by a hash of it."""
    client = tmp_path / "client"
    folder = device_folder(paired_client(pc, client))
    source = tmp_path / "src" / ("写真" * 40 + ".jpg")
    source.parent.mkdir()
    source.write_bytes(make_photos(tmp_path / "p", 1, seed=23)[0].read_bytes())
    ok(lanpair("push", str(source), "--no-mdns", client_dir=client))

    pulled = summary(
        ok(
            lanpair(
                "pull",
                str(tmp_path / "back"),
                "--json",
                "--timeout",
                "3",
                "--no-mdns",
                client_dir=client,
            )
        )
    )

    assert pulled["failed"] == []
    assert (tmp_path / "back" / folder / source.name).read_bytes() == source.read_bytes()


def test_pull_fails_a_file_it_cannot_write_at_once_and_fetches_the_rest(
    pc: PC, tmp_path: Path
) -> None:
    """A local write that fails (here: bigger than `ulimit -f` allows) is that file's
    failure, said as such; it is not retried like a network stall for --timeout."""
    client = tmp_path / "client"
    folder = device_folder(paired_client(pc, client, name="Small disk"))
    make_big(tmp_path / "Send" / "big.bin", 3 << 20, seed=24)
    make_photos(tmp_path / "Send", 2, seed=25)
    ok(lanpair("push", str(tmp_path / "Send"), "--no-mdns", client_dir=client))

    limited = lanpair(
        *("pull", str(tmp_path / "back"), "--json", "--timeout", "600", "--no-mdns"),
        client_dir=client,
        timeout_s=300,
        max_file_bytes=1 << 20,
    )

    assert limited.returncode == 4, limited.stderr
    failed = {f["name"]: f["error"] for f in summary(limited)["failed"]}
    assert "File too large" in failed[f"{folder}/big.bin"]
    assert "cannot be written here" in failed[f"{folder}/big.bin"]
    assert len(list((tmp_path / "back" / folder).glob("IMG_*.jpg"))) == 2


def test_a_pc_gone_mid_pull_stops_the_run(tmp_path: Path) -> None:
    """The PC stops answering mid-pull (SIGSTOP: its sockets stay open, nothing moves): the
    files in flight give up after --timeout, one call finds the PC silent, and the pull
    stops with exit 3 instead of waiting out a timeout per file left."""
    client = tmp_path / "client"
    for n in range(8):
        make_big(tmp_path / "Send" / f"part{n}.bin", BIG_BYTES // 4, seed=30 + n)
    back = tmp_path / "back"
    with running_pc(tmp_path / "data") as pc:
        folder = device_folder(paired_client(pc, client))
        ok(lanpair("push", str(tmp_path / "Send"), "--no-mdns", client_dir=client))
        puller = lanpair_running(
            "pull", str(back), "--no-mdns", "--timeout", "2", client_dir=client
        )
        deadline = time.monotonic() + 60
        while not list((back / folder).glob(".*.lanpair-part")) and time.monotonic() < deadline:
            assert puller.poll() is None, "the pull ended before the PC went quiet"
            time.sleep(0.002)
        pc.process.send_signal(signal.SIGSTOP)
        try:
            out, err = puller.communicate(timeout=120)
        finally:
            pc.process.send_signal(signal.SIGCONT)

    assert puller.returncode == 3, out + err
    assert "stopped answering" in err
    assert "Traceback" not in err


def test_push_sends_what_the_pc_would_refuse_or_cannot_name_under_a_name_it_keeps(
    pc: PC, tmp_path: Path
) -> None:
    """A folder named like a drive ("Q:A"), a name that is not UTF-8 and one with a
    backslash all go, under the names the PC keeps (one refused name once failed the whole
    push, a non-UTF-8 one with a traceback); `push ..` sends the folder above."""
    client = tmp_path / "client"
    folder = device_folder(paired_client(pc, client, name="Odd names"))
    trip = tmp_path / "Trip"
    (trip / "Q:A").mkdir(parents=True)
    (trip / "Q:A" / "inside.txt").write_text("drive-like")
    (trip / "day1").mkdir()
    Path(os.fsdecode(os.fsencode(trip / "day1") + b"/caf\xe9.txt")).write_bytes(b"not utf-8")
    (trip / "day1" / "a\\b.txt").write_text("backslash")

    drive_like = lanpair("push", str(trip / "Q:A"), "--json", "--no-mdns", client_dir=client)
    from_inside = lanpair("push", "..", "--json", "--no-mdns", client_dir=client, cwd=trip / "day1")

    stored = pc.data_dir / "uploads" / folder
    assert summary(ok(drive_like))["files"] == 1
    assert (stored / "Q_A" / "inside.txt").read_text() == "drive-like"
    assert summary(ok(from_inside))["failed"] == []
    assert (stored / "Trip" / "day1" / "caf\ufffd.txt").read_bytes() == b"not utf-8"
    assert (stored / "Trip" / "day1" / "a_b.txt").read_text() == "backslash"


class DeletingMeter:
    """Progress that goes nowhere, and deletes a file when the sending starts (after the
    PC said what it lacks): a file gone, or unreadable, by its turn."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim
        self.notes: list[str] = []

    def start(self, total_bytes: int, done_bytes: int, files: int) -> None:
        """Delete the victim."""
        self.victim.unlink()

    def advance(self, n_bytes: int) -> None:
        """Ignore progress."""

    def note(self, text: str) -> None:
        """Keep what would be shown."""
        self.notes.append(text)


async def test_a_file_gone_by_its_turn_fails_at_once_and_the_rest_go(
    pc: PC, tmp_path: Path
) -> None:
    """A file that cannot be read when its turn comes is that file's failure, said as such;
    it is not retried like a broken connection for --timeout (30 s here)."""
    stored = paired_client(pc, tmp_path / "client", name="Vanishing")
    photos = make_photos(tmp_path / "Send", 3, seed=40)
    meter = DeletingMeter(photos[1])
    async with ApiClient(pc.url, fingerprint=pc.fingerprint, token=stored["token"]) as api:
        result = await push.push(
            api, [tmp_path / "Send"], push.PushState(tmp_path / "state.json"), meter, stall_s=30
        )

    assert result.files == 2
    assert [name for name, _ in result.failed] == [f"Send/{photos[1].name}"]
    assert "cannot be read here (No such file or directory)" in result.failed[0][1]
    assert len(meter.notes) == 1


def gallery_ids(pc: PC, token: str, name: str) -> list[int]:
    """Return the ids of the gallery items named like ``name``, as a device sees them."""

    async def ids() -> list[int]:
        async with ApiClient(pc.url, fingerprint=pc.fingerprint, token=token) as api:
            page = await api.call("GET", f"/api/gallery?q={name}")
            return [item["id"] for item in page["items"]]

    return asyncio.run(ids())


def test_pull_takes_a_file_that_got_a_new_id_on_the_pc_as_the_one_it_has(
    pc: PC, tmp_path: Path
) -> None:
    """A pulled file copied elsewhere and deleted by hand on the PC comes back under a new
    id: the copy here, of the same name and size, is taken as it (it once came again as
    ``name (1)``)."""
    client = tmp_path / "client"
    stored = paired_client(pc, client, name="Mover")
    folder = device_folder(stored)
    photo = make_photos(tmp_path / "Send", 1, seed=42)[0]
    ok(lanpair("push", str(tmp_path / "Send"), "--no-mdns", client_dir=client))
    ok(lanpair("pull", str(tmp_path / "back"), "--no-mdns", client_dir=client))
    before = gallery_ids(pc, stored["token"], photo.name)
    library = pc.data_dir / "uploads" / folder
    (library / "Moved").mkdir()
    shutil.copy2(library / "Send" / photo.name, library / "Moved" / photo.name)
    (library / "Send" / photo.name).unlink()
    deadline = time.monotonic() + 20
    while gallery_ids(pc, stored["token"], photo.name) in ([], before):
        assert time.monotonic() < deadline, "the PC did not see the file move"
        time.sleep(0.1)

    again = summary(
        ok(lanpair("pull", str(tmp_path / "back"), "--json", "--no-mdns", client_dir=client))
    )

    assert again["files"] == 0
    assert sorted(p.name for p in (tmp_path / "back" / folder).iterdir()) == [photo.name]


def test_pull_keeps_names_apart_that_differ_only_in_case(pc: PC, tmp_path: Path) -> None:
    """IMG.JPG and img.jpg from one folder get names that differ in more than case: on a
    case-insensitive disk (macOS, exFAT) they would be one file, written twice at once."""
    client = tmp_path / "client"
    folder = device_folder(paired_client(pc, client, name="Cases"))
    upper, lower = make_photos(tmp_path / "a", 2, seed=41)
    (tmp_path / "Send").mkdir()
    upper.rename(tmp_path / "Send" / "IMG.JPG")
    lower.rename(tmp_path / "Send" / "img.jpg")
    ok(lanpair("push", str(tmp_path / "Send"), "--no-mdns", client_dir=client))

    ok(lanpair("pull", str(tmp_path / "back"), "--no-mdns", client_dir=client))

    names = sorted(p.name for p in (tmp_path / "back" / folder).iterdir())
    assert len(names) == 2
    assert len({name.casefold() for name in names}) == 2


def test_status_and_push_say_when_the_pc_is_gone_or_the_pairing_revoked(tmp_path: Path) -> None:
    """A stopped daemon: status says unreachable, push exits 3. A revoked pairing: push
    exits 5 and says to pair again."""
    client = tmp_path / "client"
    photo = make_photos(tmp_path / "p", 1, seed=9)[0]
    data = tmp_path / "data"
    with running_pc(data) as pc:
        stored = paired_client(pc, client)
        port = pc.port
    gone = json.loads(ok(lanpair("status", "--json", "--no-mdns", client_dir=client)).stdout)
    unreachable = lanpair("push", str(photo), "--no-mdns", client_dir=client)
    pc = start_pc(data, port=port)
    try:
        ok(lanpair("revoke", stored["device_id"], "--data-dir", str(data), client_dir=client))
        revoked = lanpair("push", str(photo), "--no-mdns", client_dir=client)
        listed = ok(lanpair("status", "--no-mdns", client_dir=client)).stdout
    finally:
        stop_pc(pc)
    assert [(r["reachable"], r["state"]) for r in gone] == [(False, "unreachable")]
    assert unreachable.returncode == 3, unreachable.stderr
    assert "does not answer" in unreachable.stderr
    assert revoked.returncode == 5, revoked.stderr
    assert "pair again" in revoked.stderr
    assert "no longer paired" in listed
