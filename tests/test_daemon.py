"""The real daemon as a subprocess: start, serve, survive a restart, stop on a signal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

STOP_WITHIN_S = 5.0
START_WITHIN_S = 20.0


@dataclass
class Running:
    """A daemon subprocess and what it printed."""

    process: subprocess.Popen[str]
    url: str
    stdout: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str | None:
        """Return the fingerprint the daemon printed (None over plain HTTP)."""
        lines = [line for line in self.stdout if "fingerprint" in line]
        return lines[0].rsplit(" ", 1)[1] if lines else None


def lanpair(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run one lanpair command on ``data_dir``."""
    return subprocess.run(
        [sys.executable, "-m", "lanpair", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LANPAIR_CONFIG", None)
    env["XDG_CONFIG_HOME"] = "/nonexistent-lanpair-test-config"
    return env


def serve_command(data_dir: Path, port: str = "0") -> list[str]:
    """Return the command that runs a daemon on loopback, without mDNS, on ``data_dir``.

    It logs at debug level, access lines included: every line that could leak a token.
    """
    return [
        sys.executable,
        "-m",
        "lanpair",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--no-mdns",
        "--log-level",
        "debug",
        "--data-dir",
        str(data_dir),
    ]


def serve_refused(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a ``lanpair serve`` that is expected to refuse to start; return how it ended."""
    return subprocess.run(
        command, capture_output=True, text=True, timeout=30, env=_env(), check=False
    )


@contextmanager
def serving(data_dir: Path, log: Path, *extra: str) -> Iterator[Running]:
    """Run ``lanpair serve`` until the block ends, then stop it with SIGTERM."""
    command = [*serve_command(data_dir), "--log-level", "debug", *extra]
    with log.open("a") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=_env()
        )
    try:
        running = _wait_listening(process)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()


def _wait_listening(process: subprocess.Popen[str]) -> Running:
    assert process.stdout is not None
    deadline = time.monotonic() + START_WITHIN_S
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"daemon exited early: {process.wait()} {lines}")
        lines.append(line.rstrip("\n"))
        if line.startswith("  data: "):
            url = next(x for x in lines if x.startswith("lanpair: listening on "))
            return Running(process, url.removeprefix("lanpair: listening on "), lines)
    raise AssertionError(f"daemon did not say it was listening: {lines}")


def call(
    running: Running,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    fingerprint: str | None = None,
) -> tuple[int, Any]:
    """Make one pinned request in a fresh interpreter-free way (an asyncio client run)."""
    import asyncio

    from lanpair.client import ApiClient
    from lanpair.errors import RemoteError

    async def go() -> tuple[int, Any]:
        async with ApiClient(
            running.url, fingerprint=fingerprint or running.fingerprint, token=token
        ) as client:
            try:
                return 200, await client.call(method, path, body)
            except RemoteError as exc:
                return exc.status, exc.remote_code

    return asyncio.run(go())


def pair(running: Running, name: str = "Phone") -> dict[str, Any]:
    """Pair a device with the running daemon."""
    status, code = call(running, "POST", "/api/pairing/generate", {})
    assert status == 200
    assert code["ip"] == "127.0.0.1"  # the QR points where the daemon listens
    status, device = call(
        running,
        "POST",
        "/api/pairing/confirm",
        {
            "pairing_token": code["pairing_token"],
            "device_name": name,
            "device_id": name.lower(),
        },
    )
    assert status == 200
    return {"pending": code["pairing_token"], **device}


def test_restart_keeps_pairings_key_and_never_logs_a_token(tmp_path: Path) -> None:
    """SIGTERM stops the daemon within 5 s with status 0; after a restart the token still works."""
    data, log = tmp_path / "data", tmp_path / "daemon.log"
    with serving(data, log) as first:
        device = pair(first)
        assert call(first, "GET", "/api/me", token=device["device_token"])[0] == 200
        # The seed's routes put tokens in paths; such a URL must be redacted in the access log.
        call(first, "GET", f"/explorer/{device['device_token']}", token=device["device_token"])
        assert call(first, "GET", "/api/info")[1]["fingerprint"] == first.fingerprint
        started = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=STOP_WITHIN_S) == 0
        assert time.monotonic() - started < STOP_WITHIN_S
    assert not (data / "daemon.json").exists()
    with serving(data, log) as second:
        assert second.fingerprint == first.fingerprint
        status, me = call(second, "GET", "/api/me", token=device["device_token"])
        assert (status, me["device_id"]) == (200, device["device_id"])
    logged = log.read_text()
    assert "listening on loopback only" in logged
    assert "GET /explorer/[redacted]" in logged
    assert "paired 'Phone'" in logged
    for secret in (device["pending"], device["device_token"]):
        assert secret not in logged
        assert secret not in "\n".join(first.stdout + second.stdout)


def test_sigint_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops the daemon with status 0 as well."""
    with serving(tmp_path / "data", tmp_path / "log") as running:
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=STOP_WITHIN_S) == 0


def test_state_commands_work_while_the_daemon_runs(tmp_path: Path) -> None:
    """devices --json, qr and revoke talk to the running daemon; revoke works offline too."""
    data = tmp_path / "data"
    with serving(data, tmp_path / "log") as running:
        first, second = pair(running, "Phone"), pair(running, "Tablet")
        listed = lanpair("devices", "--json", data_dir=data)
        assert listed.returncode == 0, listed.stderr
        devices = json.loads(listed.stdout)
        assert set(devices) == {first["device_id"], second["device_id"]}
        assert devices[first["device_id"]]["device_name"] == "Phone"
        assert devices[first["device_id"]]["status"] == "confirmed"
        assert first["device_token"] not in listed.stdout

        table = lanpair("devices", data_dir=data)
        assert "Tablet" in table.stdout
        assert "confirmed" in table.stdout

        qr = lanpair("qr", data_dir=data)
        assert qr.returncode == 0, qr.stderr
        assert f"{running.url.rsplit(':', 1)[1]}/pair-confirm#t=" in qr.stdout

        revoked = lanpair("revoke", first["device_id"], data_dir=data)
        assert revoked.returncode == 0, revoked.stderr
        assert call(running, "GET", "/api/me", token=first["device_token"])[0] == 401

    offline = lanpair("revoke", second["device_id"], data_dir=data)
    assert offline.returncode == 0, offline.stderr
    assert "Revoked Tablet" in offline.stdout
    after = json.loads(lanpair("devices", "--json", data_dir=data).stdout)
    assert {d["status"] for d in after.values()} == {"revoked"}


def test_commands_fail_clearly(tmp_path: Path) -> None:
    """Without a daemon, qr says how to start one; unknown devices and bad settings exit 1."""
    qr = lanpair("qr", data_dir=tmp_path)
    assert qr.returncode == 1
    assert "lanpair serve" in qr.stderr
    unknown = lanpair("revoke", "dev_000000000000", data_dir=tmp_path)
    assert unknown.returncode == 1
    assert "No paired device" in unknown.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "lanpair", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )
    assert bad.returncode == 1
    assert "--port" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_port_in_use_is_reported_without_a_traceback(tmp_path: Path) -> None:
    """A second daemon on a taken port exits 1 with a sentence."""
    with serving(tmp_path / "a", tmp_path / "log") as running:
        port = running.url.rsplit(":", 1)[1]
        clash = serve_refused(serve_command(tmp_path / "b", port))
    assert clash.returncode == 1
    assert f"Cannot listen on port {port}" in clash.stderr
    assert "Traceback" not in clash.stderr


def test_a_second_daemon_on_the_same_data_is_refused_and_the_first_keeps_serving(
    tmp_path: Path,
) -> None:
    """Two daemons on one data folder would overwrite each other's runtime file (and the
    one stopped last would delete it under the other): the second exits 1 with a sentence,
    and the owner's commands still reach the first."""
    with serving(tmp_path / "data", tmp_path / "log") as running:
        second = serve_refused(serve_command(tmp_path / "data"))
        still = subprocess.run(
            [sys.executable, "-m", "lanpair", "devices", "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=30,
            env=_env(),
            check=False,
        )
        assert running.process.poll() is None
    assert second.returncode == 1
    assert "Another lanpair daemon is already running on" in second.stderr
    assert "Traceback" not in second.stderr
    assert still.returncode == 0, still.stderr


@pytest.mark.parametrize("which", ["--data-dir", "--library"])
def test_a_data_or_library_folder_that_is_a_file_is_said_in_a_sentence(
    tmp_path: Path, which: str
) -> None:
    """A folder setting naming a file: exit 1, one sentence, no traceback."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    data = a_file if which == "--data-dir" else tmp_path / "data"
    extra = ["--library", str(a_file)] if which == "--library" else []
    refused = serve_refused([*serve_command(data), *extra])
    assert refused.returncode == 1
    assert f"Cannot use {a_file} as the" in refused.stderr
    assert "it is a file" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "never awaited" not in refused.stderr
    assert a_file.read_text() == "mine"


def test_no_tls_serves_http_and_says_so(tmp_path: Path) -> None:
    """--no-tls serves plain HTTP and warns in the log."""
    log = tmp_path / "log"
    with serving(tmp_path / "data", log, "--no-tls") as running:
        assert running.url.startswith("http://")
        assert "plain HTTP" in "\n".join(running.stdout)
        status, info = call(running, "GET", "/api/info")
        assert (status, info["protocol"], info["fingerprint"]) == (200, "http", None)
    assert "TLS is off" in log.read_text()


def test_no_tls_downloads_come_back_whole_and_by_range(tmp_path: Path) -> None:
    """Over plain HTTP (sendfile, in pieces): a file of several pieces, whole and by ranges."""
    import asyncio
    import io

    import aiohttp

    from lanpair.server.api_library import SENDFILE_BYTES

    content = os.urandom(2 * SENDFILE_BYTES + 12345)
    piece = SENDFILE_BYTES
    ranges = [(piece - 10, 2 * piece + 10), (0, 0), (len(content) - 5, len(content) - 1)]

    async def go(running: Running, token: str) -> list[bytes]:
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(content), filename="big.bin")
            async with session.post(running.url + "/api/upload", data=form) as response:
                url = running.url + f"/files/{(await response.json())['files'][0]['id']}"
            got = []
            async with session.get(url) as response:
                got.append(await response.read())
            for first, last in ranges:
                async with session.get(url, headers={"Range": f"bytes={first}-{last}"}) as r:
                    assert r.status == 206
                    got.append(await r.read())
            return got

    with serving(tmp_path / "data", tmp_path / "log", "--no-tls") as running:
        whole, *parts = asyncio.run(go(running, pair(running)["device_token"]))
    assert whole == content
    assert parts == [content[first : last + 1] for first, last in ranges]


@pytest.mark.parametrize("flag", ["--help"])
def test_serve_help_lists_every_setting(flag: str) -> None:
    """`lanpair serve --help` is generated from the settings table."""
    from lanpair.config import SETTINGS

    result = subprocess.run(
        [sys.executable, "-m", "lanpair", "serve", flag],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    for setting in SETTINGS:
        assert setting.flag in result.stdout


def test_revoke_refuses_what_is_not_a_device_id(tmp_path: Path) -> None:
    """`lanpair revoke ../generate` is refused before any request is made."""
    result = lanpair("revoke", "../generate", data_dir=tmp_path)
    assert result.returncode == 1
    assert "is not a device id" in result.stderr


def test_uploads_get_thumbnails_from_the_worker_processes(tmp_path: Path) -> None:
    """Through the real daemon (worker pool and all), a JPEG upload gets a WebP thumbnail."""
    import asyncio
    import io

    import aiohttp
    from aiohttp_pin import SpkiPin
    from PIL import Image

    photo = io.BytesIO()
    Image.new("RGB", (1600, 1200), "teal").save(photo, "JPEG")

    async def go(running: Running, token: str) -> tuple[str, tuple[int, int]]:
        assert running.fingerprint is not None
        connector = aiohttp.TCPConnector(ssl=SpkiPin(running.fingerprint))
        async with aiohttp.ClientSession(
            connector=connector, headers={"Authorization": f"Bearer {token}"}
        ) as session:
            form = aiohttp.FormData()
            form.add_field("file", photo.getvalue(), filename="teal.jpg")
            async with session.post(running.url + "/api/upload", data=form) as response:
                file_id = (await response.json())["files"][0]["id"]
            async with session.get(running.url + f"/thumbs/{file_id}") as response:
                return response.content_type, Image.open(io.BytesIO(await response.read())).size

    with serving(tmp_path / "data", tmp_path / "log") as running:
        device = pair(running)
        content_type, size = asyncio.run(go(running, device["device_token"]))
    assert content_type == "image/webp"
    assert size == (400, 300)
    assert "no thumbnail" not in (tmp_path / "log").read_text()


async def test_a_certificate_that_cannot_be_renewed_is_retried_later_not_every_5_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The network moved but the certificate cannot be re-issued (here: its file is a
    folder): one warning, the current certificate keeps serving, and the next try waits
    (it once retried every 5 s, a traceback and a helper process each time, forever)."""
    import asyncio
    import types

    from lanpair import daemon
    from lanpair.clock import SystemClock
    from lanpair.models import Site
    from lanpair.paths import Paths

    monkeypatch.setattr(daemon, "ADDRESS_CHECK_S", 0.01)
    paths = Paths(tmp_path / "data")
    paths.ensure()
    paths.tls_cert.mkdir()  # nothing can be written there
    moves = iter([True])

    class Addresses:
        def refresh(self) -> bool:
            return next(moves, False)

    class Announcer:
        async def update(self) -> None:
            return None

    settings = types.SimpleNamespace(hostname="testhost", advertise_ip="127.0.0.1")
    site = Site("PC", "pc_x", "testhost", 1, "https", "127.0.0.1", "fp")
    watching = asyncio.create_task(
        daemon._watch_network(
            settings,
            paths,
            site,
            Addresses(),
            object(),
            SystemClock(),
            Announcer(),  # type: ignore[arg-type]
        )
    )
    await asyncio.sleep(3)
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching

    warnings = [r for r in caplog.records if "could not renew the TLS certificate" in r.message]
    assert len(warnings) == 1
    assert "trying again in 10 minutes" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(("hosts", "v4_too"), [(["::"], True), (["0.0.0.0", "::"], False)])
def test_listening_on_every_ipv6_address_takes_ipv4_too(hosts: list[str], v4_too: bool) -> None:
    """--host :: (alone) also answers on IPv4, the addresses lanpair puts in its QR code and
    daemon.json (it once listened on IPv6 only: the QR pointed where nobody listened);
    beside 0.0.0.0 it stays IPv6 only, leaving IPv4 to that one."""
    import socket
    import types

    from lanpair import daemon

    settings = types.SimpleNamespace(host=hosts, port=0)
    sockets = daemon._bind(settings)  # type: ignore[arg-type]
    try:
        six = next(s for s in sockets if s.family == socket.AF_INET6)
        assert six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == (0 if v4_too else 1)
        if v4_too:
            port = six.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
    finally:
        for sock in sockets:
            sock.close()
