"""Library throughput (issue 3): lanpair against nginx and copyparty, side by side, in one run.

What it measures, all on loopback (127.0.0.1), every loop bounded:

1. a 1 GiB upload (random bytes) over HTTP and over TLS, one transfer at a time with curl;
2. 500 files of 200 KiB with curl's parallel mode (``-Z --parallel-max 5``): lanpair as
   10 multipart requests of 50 files and as 500 requests of one file, nginx and copyparty
   as 500 PUTs; and the floor: the same files written, hashed, fsynced and linked in by
   this script on the servers' CPU, with no HTTP and no index (``ingest_floor``);
3. a 1 GiB download over HTTP and over TLS;
4. the server's CPU seconds (utime + stime of all its threads, from /proc/PID/stat, before
   and after each transfer) and peak RSS (VmHWM); lanpair's worker processes are separate
   PIDs and are reported separately ("children");
5. the gallery API with 100k indexed files under 16 connections (wrk), and how long the
   start-up scan takes: once for 100k new files, then on every restart (unchanged library);
6. thumbnails: ``lanpair.media.make_thumbnail`` on 12 MP JPEGs in-process, and the
   throughput of a ``lanpair.workers.WorkerPool(2)``.

The servers (lanpair over HTTP, lanpair over HTTPS, nginx HTTP + HTTPS in one process,
copyparty over HTTP) all run at once and are measured round by round, in that order, so
the machine's swings hit every server alike; results are medians over the rounds, and each
ratio is the median of the per-round ratios. Servers are pinned to CPU 0 (``taskset -c 0``,
lanpair's threads and worker processes included), clients (curl, wrk, this script) to CPU 1;
the in-process thumbnail timing runs on CPU 1, the WorkerPool(2) on both CPUs. lanpair runs
as ``python -P -m lanpair serve`` with ``PYTHONPATH`` set to ``--source``.
Before every transfer the script deletes the previous transfer's files and runs sync(), so
no server pays for another's dirty pages and lanpair never sees its own upload as a
duplicate. lanpair hashes (SHA-256) and fsyncs every upload before it answers; nginx does
neither; copyparty hashes (SHA-512 by default) and does not fsync.

Run it from the repository root (Linux with two or more CPUs; it reads /proc):

    python bench/library.py --quick                   # 64 MiB, 50 small files, 10k gallery
    python bench/library.py --json bench/out/library.json
    python bench/library.py --source /tmp/snapshot    # run lanpair from another checkout
    python bench/library.py --profile DIR             # then one more round under py-spy
    python bench/library.py --quick --only gallery    # one part (transfers, gallery, thumbnails)

It needs, besides the project's environment: ``apt-get install nginx wrk`` (Debian's nginx
has the DAV module), ``curl``, ``openssl`` and ``taskset``, and ``pip install copyparty``
(``pip install py-spy`` for ``--profile``). Every server it starts is stopped by its PID in
a ``finally``; the temporary directory (the 1 GiB file, the 100k files) is deleted at the
end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import children_of, cpu_seconds, family_cpu, machine, print_log_tail, status_kib
from common import versions as package_versions

BENCH_DIR = Path(__file__).resolve().parent
MiB = 1 << 20
GiB = 1 << 30
SERVER_CPU = "0"
FLOOR = "floor (Python, no HTTP)"  # ingest_floor: the least a durable, hashed ingest costs
CLIENT_CPU = "1"
PARALLEL = 5
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
SCAN_TIMEOUT_S = 3600.0
FORGET_TIMEOUT_S = 60.0  # for lanpair to take files deleted by hand out of its index
TRANSFER_TIMEOUT_S = 900.0
WRK_WARMUP_S = 2
PROFILE_HZ = 100
IDLE_FRAMES = frozenset(
    {
        "_worker (concurrent/futures/thread.py)",  # a pool thread waiting for work
        "EpollSelector.select (selectors.py)",  # the event loop waiting for sockets
        "Condition.wait (threading.py)",
        "_exit_with (lanpair/worker_process.py)",
    }
)
LISTENING_RE = re.compile(r"lanpair: listening on (\S+)")
SCAN_RE = re.compile(r"library scan: (\d+) files, (\d+) new or changed, (\d+) gone \(([\d.]+)s\)")
WRITE_OUT = "%{http_code} %{time_total} %{size_upload} %{size_download}\n"


@dataclass(frozen=True, slots=True)
class Plan:
    """How big each part of the run is."""

    big_bytes: int
    small_count: int
    small_bytes: int
    small_requests: int  # lanpair's multipart requests for the small files
    gallery_files: int
    wrk_s: int
    thumb_reps: int
    thumb_images: int
    rounds: int


FULL = Plan(GiB, 500, 200 * 1024, 10, 100_000, 10, 20, 40, 3)
QUICK = Plan(64 * MiB, 50, 200 * 1024, 10, 10_000, 3, 5, 8, 3)


@dataclass(slots=True)
class Server:
    """A running server under test, and how curl reaches it."""

    name: str
    kind: str  # lanpair, nginx or copyparty
    scheme: str
    base: str
    pid: int
    store: Path  # where its uploads land; emptied before every transfer
    curl_tls: tuple[str, ...] = ()
    token: str | None = None
    log: Path | None = None

    def auth(self) -> list[str]:
        """Return curl's arguments for this server's device token, if it needs one."""
        return ["-H", f"Authorization: Bearer {self.token}"] if self.token else []


@dataclass(slots=True)
class Sample:
    """One measured transfer (or batch of transfers)."""

    wall_s: float
    nbytes: int
    server_cpu_s: float
    children_cpu_s: float
    client_cpu_s: float
    files: int = 1

    @property
    def mib_s(self) -> float:
        """Return the throughput in MiB/s."""
        return self.nbytes / MiB / self.wall_s

    @property
    def files_s(self) -> float:
        """Return the files per second."""
        return self.files / self.wall_s


@dataclass(slots=True)
class Results:
    """Everything measured, for the report and the JSON file."""

    plan: Plan
    machine: dict[str, Any]
    versions: dict[str, str]
    command: str
    date: str
    upload: dict[str, list[Sample]] = field(default_factory=dict)
    download: dict[str, list[Sample]] = field(default_factory=dict)
    small: dict[str, list[Sample]] = field(default_factory=dict)
    rss: dict[str, dict[str, Any]] = field(default_factory=dict)
    gallery: dict[str, Any] = field(default_factory=dict)
    thumbs: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)


# -- processes ------------------------------------------------------------------------------


class Processes:
    """The servers this run started: each stopped by its PID, whatever happens."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process; it will be stopped by stop() or stop_all()."""
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Signal one process by its PID; SIGKILL it if it has not exited in time."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still running, newest first."""
        for proc in reversed(list(self._procs)):
            self.stop(proc)


def pinned(cpu: str, command: list[str]) -> list[str]:
    """Return ``command`` run on one CPU (taskset execs it: the PID stays the command's)."""
    return ["taskset", "-c", cpu, *command]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S:.0f} s")


def process_name(pid: int) -> str:
    """Return a short command line for a PID."""
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(part.decode(errors="replace") for part in raw if part)[:80]
    return "?"


def client_cpu() -> float:
    """Return the CPU seconds of every child this script has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_client(command: list[str], timeout: float = TRANSFER_TIMEOUT_S) -> tuple[str, float]:
    """Run a client on the client CPU; return its stdout and CPU seconds. Raises on failure."""
    before = client_cpu()
    done = subprocess.run(
        pinned(CLIENT_CPU, command), capture_output=True, text=True, timeout=timeout, check=False
    )
    used = client_cpu() - before
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {done.stderr.strip()[:500]}")
    return done.stdout, used


def curl(args: list[str], timeout: float = TRANSFER_TIMEOUT_S) -> tuple[str, float]:
    """Run curl quietly without ``Expect: 100-continue``; return its stdout and CPU seconds."""
    return run_client(["curl", "-sS", "-H", "Expect:", *args], timeout)


def curl_json(server: Server, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST JSON) an API path of a lanpair server; return the parsed answer."""
    args = [*server.curl_tls, *server.auth(), "-w", "\n%{http_code}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    out, _ = curl([*args, server.base + path], timeout=60)
    text, _, code = out.rpartition("\n")
    if not code.startswith("2"):
        raise RuntimeError(f"{server.name} {path} answered {code}: {text[:300]}")
    return json.loads(text)


# -- lanpair --------------------------------------------------------------------------------


@dataclass(slots=True)
class Lanpair:
    """A started lanpair daemon."""

    server: Server
    proc: subprocess.Popen[bytes]
    data_dir: Path
    started: float  # time.monotonic() at start


def start_lanpair(
    procs: Processes, source: Path, data_dir: Path, *, tls: bool, name: str
) -> Lanpair:
    """Start ``python -m lanpair serve`` from ``source`` on CPU 0; wait for its banner."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir.parent / f"{data_dir.name}.toml"  # empty: no user config takes part
    config.write_text("")
    log_path = data_dir.parent / f"{data_dir.name}-{name}-{int(time.time() * 1000)}.log"
    command = [
        sys.executable,
        "-P",  # no current directory on sys.path: lanpair comes from PYTHONPATH (``source``)
        *("-m", "lanpair", "serve", "--config", str(config), "--host", "127.0.0.1"),
        *("--port", "0", "--no-mdns", "--data-dir", str(data_dir), "--reserve", "0"),
        "--tls" if tls else "--no-tls",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPAIR_")}
    env["PYTHONPATH"] = str(source)
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        proc = procs.start(
            pinned(SERVER_CPU, command),
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=env,
            cwd=data_dir.parent,
        )
    try:
        url = read_banner(proc)
    except BaseException:
        print_log_tail(log_path)
        procs.stop(proc)
        raise
    port = int(url.rsplit(":", 1)[1])
    server = Server(
        name=name,
        kind="lanpair",
        scheme="https" if tls else "http",
        base=f"https://localhost:{port}" if tls else url,
        pid=proc.pid,
        store=data_dir / "uploads",
        log=log_path,
    )
    if tls:
        cert = data_dir / "tls" / "cert.pem"
        server.curl_tls = ("--cacert", str(cert), "--resolve", f"localhost:{port}:127.0.0.1")
    return Lanpair(server, proc, data_dir, started)


def read_banner(proc: subprocess.Popen[bytes]) -> str:
    """Read the daemon's stdout up to its ``  data:`` line; return the listening URL."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer, url = b"", None
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the daemon exited before it printed its banner")
            buffer += chunk
            text = buffer.decode(errors="replace")
            if match := LISTENING_RE.search(text):
                url = match.group(1)
            if url and "  data: " in text and text.endswith("\n"):
                threading.Thread(target=drain, args=(fd,), daemon=True).start()
                return url
    raise RuntimeError(f"no banner from the daemon within {START_TIMEOUT_S:.0f} s")


def drain(fd: int) -> None:
    """Keep reading a pipe so the daemon never blocks on it."""
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


def wait_for_scan(daemon: Lanpair) -> dict[str, float]:
    """Wait for the daemon's "library scan:" log line; return what it says."""
    assert daemon.server.log is not None
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            print_log_tail(daemon.server.log)
            raise RuntimeError(f"{daemon.server.name} exited during its library scan")
        if match := SCAN_RE.search(daemon.server.log.read_text(errors="replace")):
            return {
                "files": int(match[1]),
                "new_or_changed": int(match[2]),
                "gone": int(match[3]),
                "scan_s": float(match[4]),
                "start_to_scan_done_s": time.monotonic() - daemon.started,
            }
        time.sleep(0.1)
    raise RuntimeError(f"{daemon.server.name}: no library scan line in {SCAN_TIMEOUT_S:.0f} s")


def pair(server: Server) -> str:
    """Pair a device as the owner (requests from 127.0.0.1); return its device token."""
    generated = curl_json(server, "/api/pairing/generate", {})
    confirmed = curl_json(
        server,
        "/api/pairing/confirm",
        {
            "pairing_token": generated["pairing_token"],
            "device_name": "bench phone",
            "device_id": f"bench-{os.urandom(4).hex()}",
        },
    )
    return str(confirmed["device_token"])


# -- nginx and copyparty --------------------------------------------------------------------


def start_nginx(procs: Processes, work: Path) -> tuple[Server, Server]:
    """Start nginx (one process, WebDAV PUT) on an HTTP and an HTTPS port of 127.0.0.1."""
    root, conf_dir = work / "nginx-root", work / "nginx"
    for folder in (root, conf_dir, conf_dir / "nginx-body"):
        folder.mkdir(parents=True, exist_ok=True)
    key, cert = conf_dir / "key.pem", conf_dir / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    http_port, https_port = free_port(), free_port()
    text = (BENCH_DIR / "nginx.conf").read_text()
    for name, value in {
        "WORK": conf_dir,
        "ROOT": root,
        "CERT": cert,
        "KEY": key,
        "HTTP_PORT": http_port,
        "HTTPS_PORT": https_port,
    }.items():
        text = text.replace(f"@{name}@", str(value))
    conf = conf_dir / "nginx.conf"
    conf.write_text(text)
    error_log = conf_dir / "nginx-error.log"
    command = ["nginx", "-e", str(error_log), "-p", str(conf_dir), "-c", str(conf)]
    proc = procs.start(
        pinned(SERVER_CPU, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(http_port, proc, "nginx")
        wait_for_port(https_port, proc, "nginx")
    except BaseException:
        print_log_tail(error_log)
        procs.stop(proc)
        raise
    common = {"kind": "nginx", "pid": proc.pid, "store": root, "log": error_log}
    plain = Server(name="nginx-http", scheme="http", base=f"http://127.0.0.1:{http_port}", **common)
    secure = Server(
        name="nginx-https",
        scheme="https",
        base=f"https://127.0.0.1:{https_port}",
        curl_tls=("--insecure",),
        **common,
    )
    return plain, secure


def start_copyparty(procs: Processes, work: Path) -> Server:
    """Start copyparty over HTTP with one read-write volume, hashing as it does by default."""
    volume, state = work / "copyparty-root", work / "copyparty-state"
    volume.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = state / "copyparty.log"
    command = [
        sys.executable,
        *("-m", "copyparty", "-i", "127.0.0.1", "-p", str(port), "-v", f"{volume}::rw"),
        *("--hist", str(state / "hist"), "--http-only", "--no-crt", "-q"),
    ]
    env = {**os.environ, "XDG_CONFIG_HOME": str(state)}
    with log_path.open("wb") as log_file:
        proc = procs.start(
            pinned(SERVER_CPU, command), stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_for_port(port, proc, "copyparty")
    except BaseException:
        print_log_tail(log_path)
        procs.stop(proc)
        raise
    return Server(
        name="copyparty-http",
        kind="copyparty",
        scheme="http",
        base=f"http://127.0.0.1:{port}",
        pid=proc.pid,
        store=volume,
        log=log_path,
    )


# -- transfers ------------------------------------------------------------------------------


def cleared(server: Server) -> None:
    """Empty a server's upload folder; for lanpair, wait until its index has let go too.

    lanpair's watcher sees the files go and takes them out of the index. Left to run into
    the next measurement, that work (500 deletions) would be billed to the uploads.
    """
    clear(server.store)
    if server.kind != "lanpair":
        return
    deadline = time.monotonic() + FORGET_TIMEOUT_S
    while curl_json(server, "/api/gallery?limit=1")["items"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} still lists files deleted {FORGET_TIMEOUT_S} s ago")
        time.sleep(0.05)


def clear(folder: Path) -> None:
    """Delete what earlier transfers left in a server's upload folder (lanpair's own stays)."""
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name == ".lanpair":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def count_files(folder: Path) -> int:
    """Count the regular files under ``folder``, outside hidden folders."""
    total = 0
    for _parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        total += len(files)
    return total


def measured(server: Server, run: Callable[[], tuple[str, float]]) -> tuple[str, Sample]:
    """Run one client command against ``server`` after a sync(); measure wall time and CPU."""
    os.sync()  # earlier transfers' dirty pages are written out before the clock starts
    main0, kids0 = family_cpu(server.pid)
    started = time.perf_counter()
    out, used = run()
    wall = time.perf_counter() - started
    main1, kids1 = family_cpu(server.pid)
    return out, Sample(wall, 0, main1 - main0, kids1 - kids0, used)


def upload_big(server: Server, path: Path, response: Path) -> tuple[Sample, str]:
    """Upload the big file once; return the sample and how to download it again."""
    cleared(server)
    if server.kind == "lanpair":
        args = ["-F", f"file=@{path};filename=big.bin", server.base + "/api/upload"]
    else:
        args = ["-T", str(path), server.base + "/big.bin"]
    command = [*server.curl_tls, *server.auth(), "-o", str(response), "-w", WRITE_OUT, *args]
    out, sample = measured(server, lambda: curl(command))
    code, total, sent, _ = out.split()
    if not code.startswith("2") or int(float(sent)) < path.stat().st_size:
        raise RuntimeError(f"{server.name} upload: HTTP {code}, {sent} bytes sent")
    sample.wall_s, sample.nbytes = float(total), path.stat().st_size
    if server.kind != "lanpair":
        return sample, "/big.bin"
    stored = json.loads(response.read_text())["files"][0]
    if not stored["ok"] or stored["duplicate"] or stored["size"] != sample.nbytes:
        raise RuntimeError(f"{server.name} did not store the upload as new: {stored}")
    return sample, f"/files/{stored['id']}"


def download_big(server: Server, path: str, size: int) -> Sample:
    """Download the big file once to /dev/null."""
    command = [*server.curl_tls, *server.auth(), "-o", os.devnull, "-w", WRITE_OUT]
    out, sample = measured(server, lambda: curl([*command, server.base + path]))
    code, total, _, got = out.split()
    if code != "200" or int(float(got)) != size:
        raise RuntimeError(f"{server.name} download: HTTP {code}, {got} of {size} bytes")
    sample.wall_s, sample.nbytes = float(total), size
    return sample


def upload_small(server: Server, files: list[Path], per_request: int, work: Path) -> Sample:
    """Upload many files with curl's parallel mode (PARALLEL at once); check every one landed.

    lanpair: multipart POSTs of ``per_request`` files each; nginx and copyparty: one PUT each.
    """
    cleared(server)
    sections = []
    for start in range(0, len(files), per_request):
        group = files[start : start + per_request]
        lines = [f'header = "{h}"' for h in ("Expect:", *server.auth()[1::2])]
        lines += [f'{k} = "{v}"' for k, v in pairs(server.curl_tls)]
        if server.kind == "lanpair":
            lines.append(f'url = "{server.base}/api/upload"')
            lines += [f'form = "file=@{f};filename={f.name}"' for f in group]
        else:
            lines += [f'url = "{server.base}/{group[0].name}"', f'upload-file = "{group[0]}"']
        lines += [f'output = "{os.devnull}"', 'write-out = "%{http_code}\\n"']
        sections.append("\n".join(lines))
    config = work / f"curl-{server.name}-{per_request}.conf"
    config.write_text("\nnext\n".join(sections) + "\n")
    command = ["-Z", "--parallel-max", str(PARALLEL), "--parallel-immediate", "-K", str(config)]
    out, sample = measured(server, lambda: curl(command))
    codes = Counter(out.split())
    landed = count_files(server.store)
    good = all(code.startswith("2") for code in codes) and codes.total() == len(sections)
    if not good or landed != len(files):
        raise RuntimeError(f"{server.name} small files: answers {dict(codes)}, {landed} stored")
    sample.nbytes = sum(f.stat().st_size for f in files)
    sample.files = len(files)
    return sample


def ingest_floor(files: list[Path], work: Path) -> Sample:
    """Time the least a durable, hashed ingest of ``files`` costs in Python, on the servers'
    CPU: no HTTP, no index, no events, one file after another.

    Each file is read (from the page cache), written to a new file and hashed (SHA-256),
    fsynced, linked into a folder whose entry is fsynced, and its first name removed:
    what lanpair must do before it answers, and nginx does not. Its files/s bounds what
    any Python server doing that can reach on this machine.
    """
    staging, library = work / "floor-staging", work / "floor-library"
    for folder in (staging, library):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    os.sync()
    os.sched_setaffinity(0, {int(SERVER_CPU)})
    folder_fd = os.open(library, os.O_RDONLY | os.O_DIRECTORY)
    try:
        cpu0, started = time.thread_time(), time.perf_counter()
        for n, source in enumerate(files):
            data = source.read_bytes()
            temp = staging / f"{n}.part"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                hashlib.sha256(data).digest()
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(temp, source.name, dst_dir_fd=folder_fd)
            os.fsync(folder_fd)
            temp.unlink()
        wall, cpu = time.perf_counter() - started, time.thread_time() - cpu0
    finally:
        os.close(folder_fd)
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    sample = Sample(wall, sum(f.stat().st_size for f in files), cpu, 0, 0, files=len(files))
    shutil.rmtree(library, ignore_errors=True)
    return sample


def pairs(flags: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """Turn curl flags (``--cacert X``, ``--insecure``) into config-file lines' parts."""
    i = 0
    while i < len(flags):
        name = flags[i].removeprefix("--")
        if name == "insecure":
            yield "insecure", ""
            i += 1
        else:
            yield name, flags[i + 1]
            i += 2


def make_random_file(path: Path, size: int) -> None:
    """Write ``size`` random bytes to ``path``."""
    with path.open("wb") as file:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            file.write(block)
            left -= len(block)


# -- the transfer rounds --------------------------------------------------------------------


def transfer_rounds(results: Results, source: Path, work: Path, profile: Path | None) -> None:
    """Start every server, measure uploads, downloads and small files round by round."""
    plan = results.plan
    big = work / "big.bin"
    make_random_file(big, plan.big_bytes)
    small_dir = work / "small"
    small_dir.mkdir()
    small = []
    for i in range(plan.small_count):
        small.append(small_dir / f"f{i:04d}.bin")
        small[-1].write_bytes(os.urandom(plan.small_bytes))
    response = work / "response.json"
    procs = Processes()
    try:
        lp_http = start_lanpair(procs, source, work / "lp-http", tls=False, name="lanpair-http")
        lp_https = start_lanpair(procs, source, work / "lp-https", tls=True, name="lanpair-https")
        nginx_http, nginx_https = start_nginx(procs, work)
        copyparty = start_copyparty(procs, work)
        lanpairs = [lp_http, lp_https]
        for daemon in lanpairs:
            wait_for_scan(daemon)
            daemon.server.token = pair(daemon.server)
        servers = [lp_http.server, lp_https.server, nginx_http, nginx_https, copyparty]
        small_modes: list[tuple[str, Server, int]] = []
        per_request = max(1, plan.small_count // plan.small_requests)
        for daemon in lanpairs:
            s = daemon.server
            small_modes.append((f"{s.name} {plan.small_requests}x{per_request}", s, per_request))
            small_modes.append((f"{s.name} 1 per request", s, 1))
        small_modes += [(s.name, s, 1) for s in (nginx_http, nginx_https, copyparty)]
        for s in servers:  # warm-up: connections, TLS, code paths
            upload_small(s, small[:PARALLEL], 1, work)
        for n in range(plan.rounds):
            print(f"round {n + 1}/{plan.rounds}: 1 GiB uploads and downloads", flush=True)
            paths = {}
            for s in servers:
                sample, paths[s.name] = upload_big(s, big, response)
                results.upload.setdefault(s.name, []).append(sample)
            for s in servers:
                sample = download_big(s, paths[s.name], plan.big_bytes)
                results.download.setdefault(s.name, []).append(sample)
            print(f"round {n + 1}/{plan.rounds}: {plan.small_count} small files", flush=True)
            for label, s, count in small_modes:
                results.small.setdefault(label, []).append(upload_small(s, small, count, work))
            results.small.setdefault(FLOOR, []).append(ingest_floor(small, work))
        for s in servers:
            results.rss[s.name] = rss_of(s.pid)
        if profile is not None:
            results.profile.update(profile_transfers(lanpairs, big, small, work, profile))
    finally:
        procs.stop_all()


def rss_of(pid: int) -> dict[str, Any]:
    """Return a server's peak and current RSS, and its children's, in MiB."""
    kids = children_of(pid)
    return {
        "peak_mib": status_kib(pid, "VmHWM") / 1024,
        "now_mib": status_kib(pid, "VmRSS") / 1024,
        "children_peak_mib": sum(status_kib(k, "VmHWM") for k in kids) / 1024,
        "children": [process_name(k) for k in kids],
    }


# -- the gallery ----------------------------------------------------------------------------


def gallery(results: Results, source: Path, work: Path, profile: Path | None) -> None:
    """Index many tiny files, then load the first gallery page with wrk over HTTP and TLS."""
    plan = results.plan
    data_dir = work / "gallery"
    started = time.perf_counter()
    make_tiny_files(data_dir / "uploads" / "bench-gallery", plan.gallery_files)
    results.gallery["create_files_s"] = time.perf_counter() - started
    procs = Processes()
    scans: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, float]]] = {"http": [], "https": []}
    try:
        first = start_lanpair(procs, source, data_dir, tls=False, name="gallery-http")
        print(f"gallery: indexing {plan.gallery_files} new files", flush=True)
        scans.append({"scheme": "http", "first": True, **wait_for_scan(first)})
        token = pair(first.server)
        procs.stop(first.proc)
        for n in range(plan.rounds):
            for tls in (False, True):
                scheme = "https" if tls else "http"
                print(f"gallery round {n + 1}/{plan.rounds}: wrk over {scheme}", flush=True)
                daemon = start_lanpair(procs, source, data_dir, tls=tls, name=f"gallery-{scheme}")
                scans.append({"scheme": scheme, "first": False, **wait_for_scan(daemon)})
                daemon.server.token = token
                check_gallery(daemon.server, plan.gallery_files)
                runs[scheme].append(wrk(daemon.server, plan.wrk_s))
                if profile is not None and n == 0:
                    results.profile[f"gallery {scheme}"] = profiled(
                        daemon.server.pid,
                        profile / f"gallery-{scheme}",
                        lambda s=daemon.server: wrk(s, plan.wrk_s, strict=False),
                    )
                procs.stop(daemon.proc)
    finally:
        procs.stop_all()
    results.gallery.update(scans=scans, wrk=runs)


def make_tiny_files(folder: Path, count: int) -> None:
    """Write ``count`` 100-byte text files in 100 subfolders, with mtimes a minute apart."""
    base_ns = 1_750_000_000 * 10**9
    for i in range(count):
        sub = folder / f"d{i % 100:03d}"
        if i < 100:
            sub.mkdir(parents=True)
        path = sub / f"note-{i:06d}.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, f"lanpair bench file {i:06d}\n".encode().ljust(100, b"."))
        finally:
            os.close(fd)
        os.utime(path, ns=(base_ns + i * 60 * 10**9, base_ns + i * 60 * 10**9))


def check_gallery(server: Server, files: int) -> None:
    """Make sure the first page holds 100 of the indexed files and says there is more."""
    page = curl_json(server, "/api/gallery?limit=100")
    if len(page["items"]) != min(100, files) or (files > 100 and not page["next_cursor"]):
        raise RuntimeError(f"unexpected gallery page: {len(page['items'])} items")


def wrk(server: Server, seconds: int, *, strict: bool = True) -> dict[str, float]:
    """Run wrk -t2 -c16 on the client CPU (after a short warm-up); return latency and rate."""
    url = f"{server.base.replace('localhost', '127.0.0.1')}/api/gallery?limit=100"
    base = ["wrk", "-t2", "-c16", "--latency", "-H", f"Authorization: Bearer {server.token}"]
    run_client([*base, f"-d{WRK_WARMUP_S}s", url], timeout=60)
    main0, _ = family_cpu(server.pid)
    out, used = run_client([*base, f"-d{seconds}s", url], timeout=seconds + 60)
    main1, _ = family_cpu(server.pid)
    if strict and ("Non-2xx" in out or "Socket errors" in out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return {
        "p50_ms": wrk_ms(latency["50"]),
        "p90_ms": wrk_ms(latency["90"]),
        "p99_ms": wrk_ms(latency["99"]),
        "req_s": rate,
        "server_cpu_s": main1 - main0,
        "server_cpu_ms_per_req": (main1 - main0) * 1000 / (rate * seconds),
        "client_cpu_s": used,
        "seconds": seconds,
    }


def wrk_ms(text: str) -> float:
    """Read a wrk duration (``812.00us``, ``3.41ms``, ``1.02s``) as milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    raise ValueError(text)


# -- thumbnails -----------------------------------------------------------------------------


def thumbnails(results: Results, work: Path) -> None:
    """Time make_thumbnail in-process on one core, then a WorkerPool(2) on both cores."""
    from lanpair import media

    plan = results.plan
    folder = work / "thumbs"
    folder.mkdir()
    sources = [make_photo(folder / f"photo-{i}.jpg", seed=i) for i in range(4)]
    results.thumbs["source_mib"] = statistics.mean(p.stat().st_size for p in sources) / MiB
    media.make_thumbnail(sources[0], folder / "warm.webp")
    times, cpus = [], []
    for i in range(plan.thumb_reps):
        cpu0, started = time.process_time(), time.perf_counter()
        media.make_thumbnail(sources[i % len(sources)], folder / f"one-{i}.webp")
        times.append((time.perf_counter() - started) * 1000)
        cpus.append((time.process_time() - cpu0) * 1000)
    results.thumbs.update(
        one_core_ms=statistics.median(times),
        one_core_cpu_ms=statistics.median(cpus),
        one_core_all_ms=times,
    )
    results.thumbs.update(asyncio.run(thumbnail_pool(sources, folder, plan.thumb_images)))


async def thumbnail_pool(sources: list[Path], folder: Path, count: int) -> dict[str, Any]:
    """Draw ``count`` thumbnails through WorkerPool(2), two at a time, on both CPUs."""
    from lanpair import media
    from lanpair.workers import WorkerPool

    client_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CPU), int(CLIENT_CPU)})  # the workers inherit this
    try:
        async with WorkerPool(2, timeout_s=120) as pool:
            await asyncio.gather(
                *(
                    pool.run(media.make_thumbnail, s, folder / f"w{i}.webp")
                    for i, s in enumerate(sources[:2])
                )
            )
            before = sum(cpu_seconds(pid) for pid in pool.pids)
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    pool.run(media.make_thumbnail, sources[i % len(sources)], folder / f"p{i}.webp")
                    for i in range(count)
                )
            )
            wall = time.perf_counter() - started
            workers_cpu = sum(cpu_seconds(pid) for pid in pool.pids) - before
    finally:
        os.sched_setaffinity(0, client_cpus)
    return {
        "pool_images": count,
        "pool_wall_s": wall,
        "pool_img_s": count / wall,
        "pool_workers_cpu_s": workers_cpu,
    }


def make_photo(path: Path, seed: int) -> Path:
    """Write a 4000x3000 JPEG (noise over gradients, quality 90, EXIF date) like a phone's."""
    from PIL import Image, ImageChops, ImageFilter

    size = (4000, 3000)
    gradient = Image.linear_gradient("L").resize(size)
    radial = Image.radial_gradient("L").resize(size)
    channels = []
    for n, base in enumerate((gradient, radial, gradient.transpose(Image.Transpose.ROTATE_180))):
        noise = Image.effect_noise(size, 28 + 4 * ((seed + n) % 3))
        fine = noise.filter(ImageFilter.GaussianBlur(0.4))  # ~4 MiB at q90, like a phone's
        channels.append(ImageChops.add(base, fine, scale=2.0, offset=-32 + 16 * n))
    image = Image.merge("RGB", channels)
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation
    exif.get_ifd(0x8769)[0x9003] = f"2026:11:{28 - seed:02d} 12:00:00"  # DateTimeOriginal
    image.save(path, "JPEG", quality=90, exif=exif)
    return path


# -- profiling ------------------------------------------------------------------------------


def profiled(pid: int, out: Path, work: Callable[[], object]) -> dict[str, Any]:
    """Sample ``pid`` with py-spy (raw stacks, busy threads only) while ``work`` runs."""
    raw = out.with_suffix(".txt")
    command = [py_spy(), "record", "-r", str(PROFILE_HZ), "-f", "raw", "-o", str(raw)]
    spy = subprocess.Popen(
        pinned(CLIENT_CPU, [*command, "-p", str(pid)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # let it attach
        work()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(spy.pid, signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(spy.pid, signal.SIGKILL)
            spy.wait()
    return summarise_stacks(raw)


def py_spy() -> str:
    """Return py-spy's path: on PATH, or beside this Python (a virtual environment's bin)."""
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def summarise_stacks(raw: Path, top: int = 12) -> dict[str, Any]:
    """Return the frames with the most busy samples on top (self) and anywhere (inclusive).

    py-spy's own idle filter does not work here, so samples whose top frame is a known wait
    (an idle pool thread, the event loop's epoll) are dropped.
    """
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = idle = 0
    with contextlib.suppress(OSError):
        for line in raw.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = [short_frame(f) for f in stack.split(";") if not f.startswith("process ")]
            if not frames:
                continue
            n = int(count)
            if frames[-1] in IDLE_FRAMES:
                idle += n
                continue
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                anywhere[frame] += n
    return {
        "samples": total,
        "idle_samples": idle,
        "self": [(f, n / total) for f, n in own.most_common(top)] if total else [],
        "inclusive": [(f, n / total) for f, n in anywhere.most_common(top * 3)] if total else [],
    }


def short_frame(frame: str) -> str:
    """Shorten ``func (/long/path/pkg/mod.py:123)`` to ``func (pkg/mod.py)``."""
    match = re.fullmatch(r"(.*?) \((.*?)(?::\d+)?\)", frame.strip())
    if match is None:
        return frame.strip()
    name, path = match[1], match[2]
    parts = Path(path).parts
    for anchor in ("site-packages", "lib-dynload", "lp-bench", "python3.11"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{name} ({'/'.join(parts[-3:])})"


def profile_transfers(
    lanpairs: list[Lanpair], big: Path, small: list[Path], work: Path, out: Path
) -> dict[str, Any]:
    """One more (unmeasured) upload, download and small-file batch per lanpair, under py-spy."""
    found = {}
    for daemon in lanpairs:
        s = daemon.server
        where: dict[str, str] = {}

        def up(s: Server = s, where: dict[str, str] = where) -> None:
            where["path"] = upload_big(s, big, work / "response.json")[1]

        found[f"{s.name} upload"] = profiled(s.pid, out / f"{s.name}-upload", up)
        found[f"{s.name} download"] = profiled(
            s.pid,
            out / f"{s.name}-download",
            lambda s=s, where=where: download_big(s, where["path"], big.stat().st_size),
        )
        found[f"{s.name} small 1 per request"] = profiled(
            s.pid, out / f"{s.name}-small", lambda s=s: upload_small(s, small, 1, work)
        )
    return found


# -- the report -----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    """Return the median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def ratio(results: dict[str, list[Sample]], name: str, other: str, key: str) -> float:
    """Return the median over rounds of the per-round ratio name/other of ``key``."""
    if name not in results or other not in results:
        return float("nan")
    rounds = zip(results[name], results[other], strict=True)
    return median([getattr(a, key) / getattr(b, key) for a, b in rounds])


def reference(name: str) -> str:
    """Return which nginx a server's rows are compared with (same scheme)."""
    return "nginx-https" if "https" in name else "nginx-http"


def summary(results: Results) -> dict[str, Any]:
    """Return the medians and ratios the report and the goals use."""
    out: dict[str, Any] = {}
    for test in ("upload", "download"):
        rows = {}
        for name, samples in getattr(results, test).items():
            rows[name] = {
                "mib_s": median([s.mib_s for s in samples]),
                "wall_s": median([s.wall_s for s in samples]),
                "server_cpu_s": median([s.server_cpu_s for s in samples]),
                "cpu_s_per_gib": median([s.server_cpu_s / (s.nbytes / GiB) for s in samples]),
                "children_cpu_s": median([s.children_cpu_s for s in samples]),
                "client_cpu_s": median([s.client_cpu_s for s in samples]),
                "vs_nginx": ratio(getattr(results, test), name, reference(name), "mib_s"),
                "vs_copyparty": ratio(getattr(results, test), name, "copyparty-http", "mib_s"),
                "runs_mib_s": [round(s.mib_s, 1) for s in samples],
            }
        out[test] = rows
    rows = {}
    for label, samples in results.small.items():
        server = label.split()[0]
        rows[label] = {
            "files_s": median([s.files_s for s in samples]),
            "wall_s": median([s.wall_s for s in samples]),
            "server_cpu_s": median([s.server_cpu_s for s in samples]),
            "children_cpu_s": median([s.children_cpu_s for s in samples]),
            "client_cpu_s": median([s.client_cpu_s for s in samples]),
            "vs_nginx": ratio(results.small, label, reference(server), "files_s"),
            "vs_copyparty": ratio(results.small, label, "copyparty-http", "files_s"),
            "runs_wall_s": [round(s.wall_s, 2) for s in samples],
        }
    out["small"] = rows
    gallery_ = results.gallery
    if gallery_:
        out["gallery"] = {
            scheme: {
                key: median([run[key] for run in runs])
                for key in ("p50_ms", "p90_ms", "p99_ms", "req_s", "server_cpu_ms_per_req")
            }
            for scheme, runs in gallery_["wrk"].items()
            if runs
        }
        out["scan_first_s"] = next(s["scan_s"] for s in gallery_["scans"] if s["first"])
        out["rescan_s"] = median([s["scan_s"] for s in gallery_["scans"] if not s["first"]])
    return out


def goals(results: Results, summ: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Return each goal of issue 3 with the measured value and whether it is met."""
    met = transfer_goals(results, summ) if summ["upload"] else []
    thumbs = results.thumbs
    if thumbs:
        one, rate = thumbs["one_core_ms"], thumbs["pool_img_s"]
        met.append(("thumbnail <= 45 ms per 12 MP JPEG (1 core)", f"{one:.1f} ms", one <= 45))
        met.append(("thumbnails >= 30 img/s with 2 workers", f"{rate:.1f} img/s", rate >= 30))
    if "gallery" in summ:
        for scheme, row in summ["gallery"].items():
            p99, rate = row["p99_ms"], row["req_s"]
            met.append((f"gallery {scheme} p99 <= 15 ms", f"{p99:.1f} ms", p99 <= 15))
            met.append((f"gallery {scheme} >= 1500 req/s", f"{rate:.0f} req/s", rate >= 1500))
        rescan = summ["rescan_s"]
        met.append(("rescan of an unchanged library <= 1 s", f"{rescan:.1f} s", rescan <= 1.0))
    return met


def transfer_goals(results: Results, summ: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Return the goals for uploads, downloads, CPU, RSS and small files."""
    up, down, small = summ["upload"], summ["download"], summ["small"]
    plan = results.plan
    per = max(1, plan.small_count // plan.small_requests)
    rss = results.rss
    checks = [
        ("upload HTTP >= 0.8x nginx", up["lanpair-http"]["vs_nginx"], 0.8),
        ("upload TLS >= 0.8x nginx-tls", up["lanpair-https"]["vs_nginx"], 0.8),
        ("upload HTTP >= 2x copyparty", up["lanpair-http"]["vs_copyparty"], 2.0),
        ("upload TLS >= 2x copyparty (HTTP)", up["lanpair-https"]["vs_copyparty"], 2.0),
    ]
    met = [(name, f"{value:.2f}x", value >= goal) for name, value, goal in checks]
    cpu = up["lanpair-http"]["cpu_s_per_gib"]
    met.append(("upload HTTP <= 1.2 CPU-s/GiB", f"{cpu:.2f} CPU-s/GiB", cpu <= 1.2))
    for name in ("lanpair-http", "lanpair-https"):
        peak = rss[name]["peak_mib"]
        met.append((f"{name} peak RSS < 80 MiB", f"{peak:.1f} MiB", peak < 80))
    for mode in (f"{plan.small_requests}x{per}", "1 per request"):
        row = small[f"lanpair-http {mode}"]
        met.append(
            (
                f"small files ({mode}) >= 0.6x nginx",
                f"{row['vs_nginx']:.2f}x",
                row["vs_nginx"] >= 0.6,
            )
        )
        met.append(
            (
                f"small files ({mode}) >= 1.2x copyparty",
                f"{row['vs_copyparty']:.2f}x",
                row["vs_copyparty"] >= 1.2,
            )
        )
    for name, goal in (("lanpair-http", 1.0), ("lanpair-https", 0.8)):
        value = down[name]["vs_nginx"]
        met.append((f"download {name} >= {goal}x nginx", f"{value:.2f}x", value >= goal))
    return met


def print_report(results: Results) -> None:
    """Print the results for a person."""
    summ = summary(results)
    plan, m, v = results.plan, results.machine, results.versions
    print()
    print(f"lanpair library benchmark, {results.date}, {plan.rounds} interleaved rounds")
    print(
        f"machine:  nproc {m['nproc']}, {m['cpu_model']}, kernel {m['kernel']}, load average "
        f"{m['loadavg']} at the start, {m.get('loadavg_end')} at the end"
    )
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(
        f"placement: servers on CPU {SERVER_CPU} (taskset, threads and children included), "
        f"curl/wrk/this script on CPU {CLIENT_CPU}; {PARALLEL} parallel transfers for small files"
    )
    size = (
        f"{plan.big_bytes / GiB:g} GiB" if plan.big_bytes >= GiB else f"{plan.big_bytes // MiB} MiB"
    )
    head = (
        f"{'server':<15}{'MiB/s':>8}{'wall s':>8}{'srv CPU s':>10}{'CPU-s/GiB':>10}"
        f"{'child CPU':>10}{'curl CPU':>9}{'vs nginx':>9}{'vs cp':>7}  MiB/s per round"
    )
    for test in ("upload", "download"):
        print(f"\n{size} {test} (one curl at a time; medians; ratio = median of per-round ratios)")
        print(head)
        for name, r in summ[test].items():
            print(
                f"{name:<15}{r['mib_s']:>8.0f}{r['wall_s']:>8.2f}{r['server_cpu_s']:>10.2f}"
                f"{r['cpu_s_per_gib']:>10.2f}{r['children_cpu_s']:>10.2f}{r['client_cpu_s']:>9.2f}"
                f"{r['vs_nginx']:>8.2f}x{r['vs_copyparty']:>6.2f}x  {r['runs_mib_s']}"
            )
    print(
        f"\n{plan.small_count} x {plan.small_bytes // 1024} KiB (curl -Z --parallel-max {PARALLEL};"
        " lanpair multipart POST, nginx/copyparty PUT; medians)"
    )
    print(
        f"{'mode':<32}{'files/s':>8}{'wall s':>8}{'srv CPU s':>10}{'child CPU':>10}"
        f"{'curl CPU':>9}{'vs nginx':>9}{'vs cp':>7}  wall per round"
    )
    for label, r in summ["small"].items():
        print(
            f"{label:<32}{r['files_s']:>8.0f}{r['wall_s']:>8.2f}{r['server_cpu_s']:>10.2f}"
            f"{r['children_cpu_s']:>10.2f}{r['client_cpu_s']:>9.2f}"
            f"{r['vs_nginx']:>8.2f}x{r['vs_copyparty']:>6.2f}x  {r['runs_wall_s']}"
        )
    floor = summ["small"].get(FLOOR)
    if floor and floor["server_cpu_s"] > 0:
        best = plan.small_count / floor["server_cpu_s"]
        per_file_ms = 1000 * floor["server_cpu_s"] / plan.small_count
        nginx = summ["small"].get("nginx-http", {}).get("files_s", float("nan"))
        print(
            f"floor: {per_file_ms:.2f} CPU-ms per file to write,"
            f" hash, fsync and link it, one after another: on one core at most {best:.0f}"
            f" files/s ({best / nginx:.2f}x nginx-http), before any HTTP or indexing"
        )
    print("\npeak RSS (VmHWM, MiB) after all rounds: main process; children summed")
    for name, r in results.rss.items():
        kids = (
            f"; children {r['children_peak_mib']:.1f} ({len(r['children'])})"
            if r["children"]
            else ""
        )
        print(f"  {name:<15}{r['peak_mib']:>7.1f} (now {r['now_mib']:.1f}){kids}")
        for child in r["children"]:
            print(f"      child: {child}")
    if results.gallery:
        g = results.gallery
        print(f"\ngallery: {plan.gallery_files} files made in {g['create_files_s']:.1f} s")
        for scan in g["scans"]:
            what = "first start (all new)" if scan["first"] else "restart (unchanged)"
            print(
                f"  scan {scan['scheme']:<5} {what:<22} {scan['files']} files, "
                f"{scan['new_or_changed']} new: {scan['scan_s']:.1f} s "
                f"(start to scan done {scan['start_to_scan_done_s']:.1f} s)"
            )
        print(f"  wrk -t2 -c16 -d{plan.wrk_s}s --latency GET /api/gallery?limit=100 (medians)")
        for scheme, row in summ["gallery"].items():
            each = [round(r["req_s"]) for r in g["wrk"][scheme]]
            print(
                f"  {scheme:<6} p50 {row['p50_ms']:.2f} ms, p90 {row['p90_ms']:.2f} ms, "
                f"p99 {row['p99_ms']:.2f} ms, {row['req_s']:.0f} req/s, "
                f"server {row['server_cpu_ms_per_req']:.2f} CPU-ms/request; req/s per round {each}"
            )
    if results.thumbs:
        t = results.thumbs
        print(
            f"\nthumbnails (4000x3000 JPEG q90, {t['source_mib']:.1f} MiB): one core "
            f"{t['one_core_ms']:.1f} ms (CPU {t['one_core_cpu_ms']:.1f} ms, median of "
            f"{plan.thumb_reps}); WorkerPool(2) on 2 CPUs: {t['pool_img_s']:.1f} img/s "
            f"({t['pool_images']} in {t['pool_wall_s']:.2f} s, workers' CPU "
            f"{t['pool_workers_cpu_s']:.2f} s)"
        )
    for phase, found in results.profile.items():
        print(
            f"\npy-spy, {phase}: {found['samples']} busy samples at {PROFILE_HZ} Hz "
            f"(~{found['samples'] / PROFILE_HZ:.1f} thread-seconds); most on top of the stack:"
        )
        for frame, share in found["self"][:8]:
            print(f"  {share:6.1%}  {frame}")
    print("\ngoals of issue 3:")
    for name, value, ok in goals(results, summ):
        print(f"  {'met    ' if ok else 'MISSED '} {name}: {value}")


# -- main -----------------------------------------------------------------------------------


def tool_version(command: list[str], pattern: str) -> str:
    """Return the version a tool reports, or "?"."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if match := re.search(pattern, done.stdout + done.stderr):
            return match.group(1)
    return "?"


def versions() -> dict[str, str]:
    """Return the versions that matter for these numbers."""
    found = package_versions("aiohttp", "pillow", "copyparty")
    found["nginx"] = tool_version(["nginx", "-v"], r"nginx/(\S+)")
    found["curl"] = tool_version(["curl", "--version"], r"curl (\S+)")
    found["wrk"] = tool_version(["wrk", "-v"], r"wrk (\S+)")
    found["openssl"] = tool_version(["openssl", "version"], r"OpenSSL (\S+)")
    return found


def main() -> int:
    """Parse the arguments, run every part, print (and maybe save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to try it out")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--source",
        type=Path,
        default=BENCH_DIR.parent,
        help="the lanpair checkout to run (default: this one)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results here")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy stacks go here")
    parser.add_argument(
        "--only",
        choices=("transfers", "gallery", "thumbnails"),
        action="append",
        help="run only these parts (repeatable; default: all)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    parts = set(args.only or ("transfers", "gallery", "thumbnails"))
    check_tools(args.profile is not None)
    source = args.source.resolve()
    sys.path.insert(0, str(source))
    import lanpair

    if not Path(lanpair.__file__).resolve().is_relative_to(source):
        raise SystemExit(f"lanpair imports from {lanpair.__file__}, not from {source}")
    about_machine = machine()
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    results = Results(
        plan=plan,
        machine=about_machine,
        versions=versions(),
        command=" ".join(["python", *sys.argv]),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    print(f"lanpair from {Path(lanpair.__file__).parent}", flush=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lanpair-library-bench-"))
    try:
        if "transfers" in parts:
            transfer_rounds(results, source, work, args.profile)
        if "gallery" in parts:
            gallery(results, source, work, args.profile)
        if "thumbnails" in parts:
            print("thumbnails", flush=True)
            thumbnails(results, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        saved = asdict(results)
        saved["summary"] = summary(results)
        args.json.write_text(json.dumps(saved, indent=2, default=str) + "\n")
    return 0


def check_tools(profile: bool) -> None:
    """Stop early, with the install command, if a tool is missing."""
    needed = ["nginx", "wrk", "curl", "openssl", "taskset"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if profile and not Path(py_spy()).exists():
        missing.append("py-spy (pip install py-spy)")
    if importlib.util.find_spec("copyparty") is None:
        missing.append("copyparty (pip install copyparty)")
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (apt-get install nginx wrk)")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs: one for the servers, one for the clients")


if __name__ == "__main__":
    sys.exit(main())
