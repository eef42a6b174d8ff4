"""Live events (issue 4): memory per idle WebSocket and broadcast time to 1000 clients.

Starts the real daemon (``python -m lanpair serve --no-mdns``, loopback only, on a new
temporary data directory and library) and, side by side, a bare aiohttp hub (this file
with ``--role bare-hub``: holds WebSockets, and on ``POST /broadcast`` awaits
``send_str`` to each in turn). A separate client process (this file with ``--role client``)
holds N WebSockets on each server's event route, as the owner (loopback, ``Host:
127.0.0.1:PORT``, no Origin, no token). The clients are raw asyncio protocols with a
minimal WebSocket reader, not aiohttp clients, so receiving 2 x N frames costs the client
process little and the times mostly show the servers.

What it measures, per server:

1. RSS (``VmRSS`` from /proc/PID/status) after a warm-up, then with N idle clients
   connected, so KiB per idle client = (with - before) / N; also after the broadcasts and
   after the clients have gone (what is not given back);
2. broadcast time: the client process takes ``time.monotonic()`` right before it sends the
   trigger request, and again when each client's socket delivers the event's frame. It
   reports the time until the first and until ALL N clients have the event, and the
   spread between them (first to last). For lanpair the trigger is ``POST /api/sync`` with
   an empty manifest from a device paired at the start, which publishes ``device.synced``:
   the cheapest event one request can cause (one SQLite write); other events (such as
   ``device.online``) are not counted. For the bare hub it is ``POST /broadcast``.
   Broadcasts alternate between the two servers, a pause between each, after 3 warm-ups;
3. server CPU-ms per broadcast (utime + stime, all threads, /proc/PID/stat, summed over
   the rounds) and the client process's, to show who is busy.

Servers run on CPU 0 (``taskset -c 0``), the client process on CPU 1, when there are two.
p99 is the nearest rank: with 20 rounds it is the largest. Goals (issue 4): at most 32 KiB
per idle client, and every client has the event within 100 ms.

Run it from the repository root with the project's environment (Linux: it reads /proc):

    python bench/ws_fanout.py                 # 1000 clients, 20 broadcasts, plain HTTP
    python bench/ws_fanout.py --tls           # the same over TLS (self-signed, not verified)
    python bench/ws_fanout.py --quick         # 100 clients, 10 broadcasts
    python bench/ws_fanout.py --clients 2000 --rounds 50 --json bench/out/ws-fanout.json
    python bench/ws_fanout.py --source /tmp/snapshot   # run lanpair from another checkout

Over TLS, asyncio gives every socket a 256 KiB read buffer; the client process makes its
own 16 KiB (so 2 x 1000 sockets stay near 100 MiB), the servers keep the default.

Every process it starts is stopped by its PID (SIGTERM, then SIGKILL after 10 s); the
temporary directory is deleted at the end. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from common import cpu_seconds, log_tail, machine, percentile, status_kib
from common import versions as package_versions

SERVER_CPU = "0"
CLIENT_CPU = "1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
CONNECT_PARALLEL = 50
RECEIVE_BUFFER_BYTES = 64 * 1024
CLIENT_TLS_BUFFER_BYTES = 16 * 1024
CONNECT_TIMEOUT_S = 30.0
BROADCAST_TIMEOUT_S = 10.0
PAUSE_S = 0.2  # between broadcasts: the last one's send buffers drain, nothing overlaps
SETTLE_S = 2.0  # before reading RSS: late allocations and frees land
WARMUP_BROADCASTS = 3
WARMUP_CLIENTS = 20
HEARTBEAT_S = 20.0  # lanpair's PING_EVERY_S, so the bare hub keeps the same timers
GOAL_KIB_PER_CLIENT = 32.0
GOAL_ALL_MS = 100.0
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
SERVERS = ("lanpair", "bare")


@dataclass(frozen=True, slots=True)
class Plan:
    """How big the run is."""

    clients: int
    rounds: int


FULL = Plan(1000, 20)
QUICK = Plan(100, 10)


@dataclass(slots=True)
class ServerResult:
    """What was measured for one server."""

    name: str
    pid: int
    clients: int = 0
    connect_s: float = 0.0
    rss_kib: dict[str, int] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def kib_per_client(self) -> float:
        """Return the RSS growth per idle client."""
        return (self.rss_kib["idle"] - self.rss_kib["before"]) / max(1, self.clients)


# -- the client process -----------------------------------------------------------------------


class Fleet:
    """N WebSocket clients of one server, and what the current broadcast round has seen."""

    def __init__(self, expect: bytes) -> None:
        self.expect = expect
        self.peers: list[Peer] = []
        self.round = 0
        self.got = 0
        self.stray = 0
        self.first = 0.0
        self.latest = 0.0
        self.all_in = asyncio.Event()
        self.receive_buffer = memoryview(bytearray(RECEIVE_BUFFER_BYTES))

    def begin(self) -> None:
        """Start a new round: nobody has the next event yet."""
        self.round += 1
        self.got = 0
        self.first = self.latest = 0.0
        self.all_in.clear()

    def on_text(self, peer: Peer, payload: bytes, now: float) -> None:
        """Count the first matching event a client gets in this round."""
        if self.round == 0 or peer.seen_round == self.round or self.expect not in payload:
            self.stray += 1
            return
        peer.seen_round = self.round
        self.got += 1
        self.latest = now
        if self.got == 1:
            self.first = now
        if self.got == len(self.peers):
            self.all_in.set()


class Peer(asyncio.BufferedProtocol):
    """One WebSocket client: sends the upgrade, then reads frames and answers pings."""

    def __init__(self, fleet: Fleet, request: bytes) -> None:
        self.fleet = fleet
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seen_round = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Lend the fleet's receive buffer.

        A plain Protocol costs a 256 KiB bytes object per recv (asyncio's max_size): half
        the client's CPU. One buffer for all is safe: each read is handed over at once.
        """
        return self.fleet.receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        """Take the time first, then parse: the time is what the benchmark is about."""
        now = time.monotonic()
        self.buffer += self.fleet.receive_buffer[:nbytes]
        if not self.upgraded.done() and not self._read_upgrade():
            return
        while (frame := take_frame(self.buffer)) is not None:
            self._on_frame(*frame, now)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail a pending upgrade."""
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))

    def close(self) -> None:
        """Say goodbye (close code 1000) and close the socket."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
            self.transport.close()

    def _read_upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        if not head.startswith(b"HTTP/1.1 101"):
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            self.upgraded.set_exception(ConnectionError(f"upgrade refused: {status}"))
            assert self.transport is not None
            self.transport.close()
            return False
        self.upgraded.set_result(None)
        return True

    def _on_frame(self, opcode: int, payload: bytes, now: float) -> None:
        assert self.transport is not None
        if opcode == OP_TEXT:
            self.fleet.on_text(self, payload, now)
        elif opcode == OP_PING:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.transport.close()


def take_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """Cut one whole server frame (unmasked, unfragmented) off ``buffer``, if there is one."""
    if len(buffer) < 2:
        return None
    opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
    if buffer[1] & 0x80:
        raise ConnectionError("a server must not mask its frames")
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,), start = struct.unpack_from("!H", buffer, 2), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,), start = struct.unpack_from("!Q", buffer, 2), 10
    if len(buffer) < start + length:
        return None
    payload = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return opcode, payload


def client_frame(opcode: int, payload: bytes) -> bytes:
    """Build one masked client frame (control frames only: payloads under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def upgrade_request(host: str, path: str) -> bytes:
    """Build the WebSocket upgrade a browser on this PC would send (minus Origin)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def unverified_tls() -> ssl.SSLContext:
    """Return a TLS context that accepts the self-signed certificate (loopback only)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(slots=True)
class Target:
    """One server as the client process sees it."""

    url: str
    path: str
    fleet: Fleet
    session: aiohttp.ClientSession
    trigger: Callable[[], Awaitable[int]]

    @property
    def tls(self) -> ssl.SSLContext | None:
        """Return the TLS context for this server's sockets, or None over HTTP."""
        return unverified_tls() if self.url.startswith("https:") else None


async def connect(target: Target, count: int) -> list[Peer]:
    """Open ``count`` WebSockets to the target, a bounded number at a time."""
    host_port = target.url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_PARALLEL)
    context = target.tls

    async def one() -> Peer:
        async with gate:
            request = upgrade_request(host_port, target.path)
            _, peer = await loop.create_connection(
                lambda: Peer(target.fleet, request), host, int(port), ssl=context
            )
            await asyncio.wait_for(peer.upgraded, CONNECT_TIMEOUT_S)
            return peer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def lanpair_trigger(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[int]]:
    """Pair a device as the owner; return a trigger that makes lanpair publish an event."""
    async with session.post(f"{url}/api/pairing/generate", json={}) as response:
        code = await ok_json(response)
    body = {"pairing_token": code["pairing_token"], "device_name": "Bench", "device_id": "bench"}
    async with session.post(f"{url}/api/pairing/confirm", json=body) as response:
        token = (await ok_json(response))["device_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def trigger() -> int:
        # An empty sync manifest: lanpair records the sync and publishes device.synced.
        async with session.post(f"{url}/api/sync", data=b"[]", headers=headers) as response:
            await response.read()
            return response.status

    return trigger


def bare_trigger(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[int]]:
    """Return a trigger that makes the bare hub broadcast."""

    async def trigger() -> int:
        async with session.post(f"{url}/broadcast") as response:
            await response.read()
            return response.status

    return trigger


async def ok_json(response: aiohttp.ClientResponse) -> Any:
    """Return a response's JSON body. Raises on an error status."""
    if response.status != 200:
        raise RuntimeError(f"{response.url} answered {response.status}: {await response.text()}")
    return await response.json()


async def broadcast(target: Target) -> dict[str, Any]:
    """Trigger one event; time until the first and until every client has it."""
    fleet = target.fleet
    fleet.begin()
    started = time.monotonic()
    status = await target.trigger()
    answered = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.all_in.wait(), BROADCAST_TIMEOUT_S)
    got = fleet.got
    return {
        "status": status,
        "received": got,
        "missing": len(fleet.peers) - got,
        "first_ms": (fleet.first - started) * 1000 if got else None,
        "all_ms": (fleet.latest - started) * 1000 if got == len(fleet.peers) else None,
        "spread_ms": (fleet.latest - fleet.first) * 1000 if got else None,
        "response_ms": (answered - started) * 1000,
    }


async def prepare(targets: dict[str, Target], command: dict[str, Any]) -> dict[str, Any]:
    """Set up a target, then warm it up: triggers and a few short-lived clients."""
    name, url, kind = command["name"], command["url"], command["kind"]
    secure = url.startswith("https:")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False if secure else None))
    if kind == "lanpair":
        trigger = await lanpair_trigger(session, url)
        target = Target(url, "/api/events", Fleet(b'"device.synced"'), session, trigger)
    else:
        target = Target(url, "/ws", Fleet(b'"bench"'), session, bare_trigger(session, url))
    targets[name] = target
    # First-use costs (imports, code paths, caches) should not count as per-client memory.
    target.fleet.peers = await connect(target, WARMUP_CLIENTS)
    for _ in range(WARMUP_BROADCASTS):
        result = await broadcast(target)
        if result["missing"]:
            raise RuntimeError(f"warm-up broadcast did not reach everyone: {result}")
        await asyncio.sleep(PAUSE_S)
    await close_peers(target)
    return {"ok": True}


async def close_peers(target: Target) -> None:
    """Close every client of a target and give the server a moment to notice."""
    for peer in target.fleet.peers:
        peer.close()
    target.fleet.peers = []
    await asyncio.sleep(0.5)


async def handle(targets: dict[str, Target], command: dict[str, Any]) -> dict[str, Any]:
    """Carry out one command from the benchmark process."""
    what = command["cmd"]
    if what == "prepare":
        return await prepare(targets, command)
    target = targets[command["name"]] if "name" in command else None
    if what == "connect" and target is not None:
        started = time.monotonic()
        target.fleet.peers = await connect(target, command["count"])
        return {"ok": True, "seconds": time.monotonic() - started}
    if what == "broadcast" and target is not None:
        return await broadcast(target)
    if what == "close" and target is not None:
        await close_peers(target)
        return {"ok": True, "stray": target.fleet.stray}
    if what == "quit":
        for each in targets.values():
            await close_peers(each)
            await each.session.close()
        return {"ok": True}
    raise ValueError(f"unknown command {command}")


async def client_main() -> None:
    """Answer the benchmark's commands (one JSON object a line) until it says quit."""
    # asyncio gives every TLS socket a 256 KiB read buffer: 2 x 1000 of them would hold
    # 500 MiB here. TLS records are at most 16 KiB, so a smaller one changes nothing else.
    asyncio.sslproto.SSLProtocol.max_size = CLIENT_TLS_BUFFER_BYTES
    targets: dict[str, Target] = {}
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = json.loads(line)
        try:
            answer = await handle(targets, command)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
        if command["cmd"] == "quit":
            return


# -- the bare hub -------------------------------------------------------------------------------


def bare_hub_app() -> web.Application:
    """Build the baseline: hold WebSockets, broadcast to each on POST /broadcast."""
    sockets: set[web.WebSocketResponse] = set()
    sent = 0

    async def events(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=HEARTBEAT_S, compress=False)
        await socket.prepare(request)
        sockets.add(socket)
        try:
            async for _ in socket:
                pass
        finally:
            sockets.discard(socket)
        return socket

    async def broadcast(_request: web.Request) -> web.Response:
        nonlocal sent
        sent += 1
        text = json.dumps({"id": sent, "type": "bench", "time": None, "data": {}})
        for socket in list(sockets):
            await socket.send_str(text)
        return web.json_response({"sent": len(sockets)})

    app = web.Application()
    app.router.add_get("/ws", events)
    app.router.add_post("/broadcast", broadcast)
    return app


async def bare_hub_main(cert: Path | None, key: Path | None) -> None:
    """Serve the bare hub on 127.0.0.1 (a free port, printed) until SIGTERM."""
    context = None
    if cert is not None and key is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    runner = web.AppRunner(bare_hub_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    port = runner.addresses[0][1]
    print(f"{'https' if context else 'http'}://127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


# -- the benchmark process ----------------------------------------------------------------------


class Processes:
    """The processes this run started: each stopped by its PID, whatever happens."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[str]] = []

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a process; stop_all() will stop it."""
        proc = subprocess.Popen(command, text=True, **kwargs)
        self._procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """SIGTERM each process still running, newest first; SIGKILL it if it lingers."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        self._procs.clear()


def raise_nofile() -> None:
    """Raise the soft limit on open files to the hard limit: N sockets need N descriptors."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pinned(cpu: str, command: list[str], pin: bool) -> list[str]:
    """Return ``command`` run on one CPU (taskset execs it: the PID stays the command's)."""
    return ["taskset", "-c", cpu, *command] if pin else command


def start_lanpair(
    procs: Processes, source: Path, work: Path, *, tls: bool, pin: bool
) -> tuple[int, str]:
    """Start the daemon from ``source`` on a new data dir and library; return its PID and URL."""
    data_dir, library = work / "data", work / "library"
    library.mkdir(parents=True)
    config = work / "empty.toml"  # no user config takes part
    config.write_text("")
    command = [
        sys.executable,
        "-P",  # no current directory on sys.path: lanpair comes from PYTHONPATH (``source``)
        *("-m", "lanpair", "serve", "--config", str(config), "--host", "127.0.0.1"),
        *("--port", "0", "--no-mdns", "--data-dir", str(data_dir), "--library", str(library)),
        *("--reserve", "0", "--tls" if tls else "--no-tls"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPAIR_")}
    env["PYTHONPATH"] = str(source)
    with (work / "daemon.log").open("w") as log:
        proc = procs.start(
            pinned(SERVER_CPU, command, pin), stdout=subprocess.DEVNULL, stderr=log, env=env
        )
    runtime = data_dir / "daemon.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not runtime.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the daemon did not start; see its log:\n{log_tail(work / 'daemon.log')}"
            )
        time.sleep(0.05)
    return proc.pid, json.loads(runtime.read_text())["url"]


def start_bare(procs: Processes, work: Path, *, tls: bool, pin: bool) -> tuple[int, str]:
    """Start the bare hub (with lanpair's certificate over TLS); return its PID and URL."""
    command = [sys.executable, __file__, "--role", "bare-hub"]
    if tls:
        tls_dir = work / "data" / "tls"
        command += ["--cert", str(tls_dir / "cert.pem"), "--key", str(tls_dir / "key.pem")]
    proc = procs.start(pinned(SERVER_CPU, command, pin), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url:
        raise RuntimeError("the bare hub exited before it printed its URL")
    return proc.pid, url


class Client:
    """The client process, driven one JSON command a line."""

    def __init__(self, procs: Processes, pin: bool) -> None:
        command = [sys.executable, __file__, "--role", "client"]
        self.proc = procs.start(
            pinned(CLIENT_CPU, command, pin), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def ask(self, **command: Any) -> dict[str, Any]:
        """Send a command; return the answer. Raises if the client failed."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the client process exited ({self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client, {command['cmd']}: {answer['error']}")
        return answer


def measure(
    client: Client, servers: dict[str, ServerResult], urls: dict[str, str], plan: Plan
) -> None:
    """Connect N idle clients to each server, then alternate broadcasts between them."""
    for name, result in servers.items():
        print(f"{name}: warming up", flush=True)
        client.ask(cmd="prepare", name=name, url=urls[name], kind=name)
        time.sleep(SETTLE_S)
        result.rss_kib["before"] = status_kib(result.pid, "VmRSS", required=True)
        print(f"{name}: connecting {plan.clients} clients", flush=True)
        result.connect_s = client.ask(cmd="connect", name=name, count=plan.clients)["seconds"]
        time.sleep(SETTLE_S)
        result.rss_kib["idle"] = status_kib(result.pid, "VmRSS", required=True)
        result.clients = plan.clients
    print(f"{plan.rounds} broadcasts each, alternating", flush=True)
    for _ in range(plan.rounds):
        for name, result in servers.items():
            server_before, client_before = cpu_seconds(result.pid), cpu_seconds(client.proc.pid)
            result.rounds.append(client.ask(cmd="broadcast", name=name))
            result.server_cpu_s += cpu_seconds(result.pid) - server_before
            result.client_cpu_s += cpu_seconds(client.proc.pid) - client_before
            time.sleep(PAUSE_S)
    for name, result in servers.items():
        result.rss_kib["after_broadcasts"] = status_kib(result.pid, "VmRSS", required=True)
        client.ask(cmd="close", name=name)
    time.sleep(SETTLE_S)
    for result in servers.values():
        result.rss_kib["after_close"] = status_kib(result.pid, "VmRSS", required=True)
    client.ask(cmd="quit")


def summary(result: ServerResult) -> dict[str, Any]:
    """Return medians and tails of one server's broadcasts."""
    done = [r for r in result.rounds if r["all_ms"] is not None]
    out: dict[str, Any] = {
        "kib_per_client": result.kib_per_client,
        "broadcasts": len(result.rounds),
        "incomplete": len(result.rounds) - len(done),
        "missing_total": sum(r["missing"] for r in result.rounds),
        "bad_status": sum(1 for r in result.rounds if r["status"] != 200),
        "server_cpu_ms": result.server_cpu_s * 1000 / max(1, len(result.rounds)),
        "client_cpu_ms": result.client_cpu_s * 1000 / max(1, len(result.rounds)),
    }
    for key in ("first_ms", "all_ms", "spread_ms", "response_ms"):
        values = [r[key] for r in done]
        if values:
            out[key] = {
                "p50": statistics.median(values),
                "p99": percentile(values, 0.99),
                "max": max(values),
            }
    return out


def print_report(report: dict[str, Any]) -> None:
    """Print the results for a person."""
    m, plan = report["machine"], report["plan"]
    print()
    print(f"lanpair WebSocket fan-out, {report['date']}, {report['scheme'].upper()}")
    print(
        f"machine: nproc {m['nproc']}, {m['cpu_model']}, kernel {m['kernel']}, load average "
        f"{m['loadavg']} at the start, {m['loadavg_end']} at the end"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"lanpair from {report['source']}")
    print(f"{plan['clients']} idle clients per server, {plan['rounds']} broadcasts each")
    print(
        f"\n{'server':<9}{'RSS before':>11}{'idle':>9}{'KiB/client':>11}{'after bc':>10}"
        f"{'closed':>9}{'connect s':>10}"
    )
    for name, result in report["servers"].items():
        rss = result["rss_kib"]
        print(
            f"{name:<9}{rss['before'] / 1024:>9.1f}Mi{rss['idle'] / 1024:>7.1f}Mi"
            f"{report['summary'][name]['kib_per_client']:>11.1f}"
            f"{rss['after_broadcasts'] / 1024:>8.1f}Mi{rss['after_close'] / 1024:>7.1f}Mi"
            f"{result['connect_s']:>10.2f}"
        )
    print_broadcasts(report["summary"], plan["clients"])
    print_ratios(report["summary"])


BROADCAST_ROWS = {
    "first_ms": "first client has it",
    "all_ms": "all {n} have it",
    "spread_ms": "first to last",
    "response_ms": "trigger answered",
}


def print_broadcasts(summ: dict[str, Any], clients: int) -> None:
    """Print the broadcast times and the CPU they cost."""
    print(f"\n{'broadcast, ms from the trigger request':<44}{'p50':>8}{'p99':>8}{'max':>8}")
    for name, s in summ.items():
        for key, label in BROADCAST_ROWS.items():
            if key in s:
                row = s[key]
                what = f"{name} {label.format(n=clients)}"
                print(f"  {what:<42}{row['p50']:>8.1f}{row['p99']:>8.1f}{row['max']:>8.1f}")
        if s["incomplete"] or s["bad_status"]:
            print(
                f"  {s['incomplete']} broadcasts did not reach everyone within "
                f"{BROADCAST_TIMEOUT_S:.0f} s ({s['missing_total']} deliveries missing); "
                f"{s['bad_status']} triggers did not answer 200"
            )
    print("\nCPU-ms per broadcast (utime + stime, summed over the rounds):")
    for name, s in summ.items():
        print(f"  {name}: server {s['server_cpu_ms']:.1f}, client process {s['client_cpu_ms']:.1f}")


def print_ratios(summ: dict[str, Any]) -> None:
    """Print lanpair against the bare hub, and the goals."""
    lp, bare = summ["lanpair"], summ["bare"]
    print()
    if "all_ms" in lp and "all_ms" in bare:
        ratio = lp["all_ms"]["p50"] / bare["all_ms"]["p50"]
        print(f"lanpair / bare, median time until all have it: {ratio:.2f}x")
        spread = lp["spread_ms"]["p50"] / max(1e-9, bare["spread_ms"]["p50"])
        print(f"lanpair / bare, median first-to-last spread:   {spread:.2f}x")
    memory = lp["kib_per_client"] / max(1e-9, bare["kib_per_client"])
    print(f"lanpair / bare, KiB per idle client:            {memory:.2f}x")
    print("\ngoals of issue 4:")
    kib = lp["kib_per_client"]
    print(
        f"  {'met   ' if kib <= GOAL_KIB_PER_CLIENT else 'MISSED'} <= 32 KiB per idle client:"
        f" {kib:.1f} KiB"
    )
    for quantile in ("p50", "p99"):
        every = lp.get("all_ms", {}).get(quantile)
        met = every is not None and every < GOAL_ALL_MS and not lp["incomplete"]
        shown = f"{every:.1f} ms" if every is not None else "incomplete"
        print(f"  {'met   ' if met else 'MISSED'} all have the event < 100 ms, {quantile}: {shown}")


def versions() -> dict[str, str]:
    """Return the versions that matter for these numbers."""
    return package_versions("aiohttp", "lanpair")


def run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """Start both servers and the client process, measure, stop them all."""
    pin = len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None
    about_machine = machine()
    work = Path(tempfile.mkdtemp(prefix="lanpair-ws-fanout-"))
    procs = Processes()
    try:
        lanpair_pid, lanpair_url = start_lanpair(
            procs, args.source.resolve(), work, tls=args.tls, pin=pin
        )
        bare_pid, bare_url = start_bare(procs, work, tls=args.tls, pin=pin)
        print(f"lanpair {lanpair_url} (PID {lanpair_pid}), bare hub {bare_url} (PID {bare_pid})")
        servers = {
            "lanpair": ServerResult("lanpair", lanpair_pid),
            "bare": ServerResult("bare", bare_pid),
        }
        client = Client(procs, pin)
        try:
            measure(client, servers, {"lanpair": lanpair_url, "bare": bare_url}, plan)
        except BaseException:
            print(log_tail(work / "daemon.log"), file=sys.stderr)
            raise
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    about_machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scheme": "https" if args.tls else "http",
        "source": str(args.source.resolve()),
        "pinned": pin,
        "machine": about_machine,
        "versions": versions(),
        "plan": asdict(plan),
        "servers": {name: asdict(result) for name, result in servers.items()},
        "summary": {name: summary(result) for name, result in servers.items()},
    }


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 clients, 10 broadcasts")
    parser.add_argument("--clients", type=int, help="idle clients per server (default 1000)")
    parser.add_argument("--rounds", type=int, help="broadcasts per server (default 20)")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="serve over TLS (self-signed, not verified by the clients); default: plain HTTP",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the lanpair checkout to run (default: this one)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    # The same file runs the client process and the bare hub.
    parser.add_argument(
        "--role", choices=("bench", "client", "bare-hub"), default="bench", help=argparse.SUPPRESS
    )
    parser.add_argument("--cert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    """Run the role this process was started for."""
    args = parse_args()
    raise_nofile()
    if args.role == "client":
        asyncio.run(client_main())
        return 0
    if args.role == "bare-hub":
        asyncio.run(bare_hub_main(args.cert, args.key))
        return 0
    base = QUICK if args.quick else FULL
    plan = Plan(args.clients or base.clients, args.rounds or base.rounds)
    report = run(args, plan)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
