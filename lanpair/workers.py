"""A small pool of worker processes for CPU-heavy jobs on untrusted input (thumbnails).

Each worker is a fresh interpreter, ``python -m lanpair.worker_process`` (fork and exec, so
starting one is safe after threads exist), and talks to the pool over its own socket pair: a
length-prefixed pickle per message, read on the event loop without ever blocking it. A
worker that hangs past the timeout is killed, one that dies is reaped, and either is
replaced; the other workers keep going. A worker never outlives the process that started
it: it exits when the pool's end of a pipe closes, even in the middle of a job.

Not multiprocessing: its spawned processes bring along a resource-tracker process (12 MiB
here) that this pool, which shares no memory and no semaphores, has no use for.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from lanpair.errors import WorkerCrashed, WorkerError, WorkerPoolStopped, WorkerTimeout
from lanpair.paths import python_module
from lanpair.tasks import spawn
from lanpair.worker_process import HEADER, ReplyUnpickler, describe, read_frame

log = logging.getLogger(__name__)
T = TypeVar("T")

START_TIMEOUT_S = 10.0  # a fresh interpreter on a slow, busy machine
STOP_GRACE_S = 2.0
RESTART_RETRY_S = 1.0


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    sock: socket.socket  # non-blocking, read and written only on the event loop
    pid: int


class WorkerPool:
    """Worker processes: open with ``async with``; ``run`` sends a job to an idle one.

    A ``run`` whose caller is cancelled kills its worker at once and starts a fresh one in
    the background: a job on hostile input is not worth finishing for nobody, and a killed
    worker cannot be left half-way through a message. The timeout counts from the moment
    the job reaches a worker, not the time spent waiting for one.
    """

    def __init__(self, size: int, *, timeout_s: float = 30.0, name: str = "lanpair-worker") -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, not {size}")
        self.size = size
        self.timeout_s = timeout_s
        self.name = name
        self._lifeline: tuple[int, int] | None = None  # a pipe; its closing ends the workers
        self._workers: set[_Worker] = set()
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._started = 0

    @property
    def pids(self) -> tuple[int, ...]:
        """Return the process ids of the live workers, sorted."""
        return tuple(sorted(worker.pid for worker in self._workers))

    async def __aenter__(self) -> Self:
        """Start every worker and wait until each is ready for jobs."""
        self._lifeline = os.pipe()
        started = await asyncio.gather(
            *(asyncio.to_thread(self._start_worker, self._next_name()) for _ in range(self.size)),
            return_exceptions=True,
        )
        workers = [worker for worker in started if isinstance(worker, _Worker)]
        if len(workers) < self.size:
            await asyncio.to_thread(_stop_processes, [worker.process for worker in workers])
            for worker in workers:
                worker.sock.close()
            self._cut_lifeline()
            raise next(error for error in started if isinstance(error, BaseException))
        for worker in workers:
            self._workers.add(worker)
            self._idle.put_nowait(worker)
        log.debug("started %d worker processes: %s", self.size, self.pids)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every worker: idle ones are asked to exit, busy ones are killed."""
        self._closing.set()
        await asyncio.gather(*self._tasks)
        idle = set()
        while not self._idle.empty():
            worker = self._idle.get_nowait()
            if worker is not None:
                idle.add(worker)
        self._idle.put_nowait(None)  # wakes every waiting run(), which then fails
        for worker in idle:
            with contextlib.suppress(OSError):
                worker.sock.send(HEADER.pack(0))
        for worker in self._workers - idle:
            # Its run() sees the end of the connection and closes the socket itself.
            _kill(worker.process)
        await asyncio.to_thread(_stop_processes, [worker.process for worker in self._workers])
        for worker in idle:
            worker.sock.close()
        self._workers.clear()
        self._cut_lifeline()
        log.debug("stopped the worker processes")

    def _cut_lifeline(self) -> None:
        if self._lifeline is not None:
            for end in self._lifeline:
                os.close(end)
            self._lifeline = None

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in a worker and return its result or raise its exception.

        ``func`` must be a top-level function, and ``args`` and the result picklable.
        """
        if not self._workers and not self._tasks and not self._closing.is_set():
            raise RuntimeError("start the worker pool with `async with` before running jobs")
        name = describe(func)
        request = pickle.dumps((func, args), protocol=pickle.HIGHEST_PROTOCOL)
        worker = await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                await loop.sock_sendall(worker.sock, HEADER.pack(len(request)) + request)
                reply = await _recv_frame(loop, worker.sock)
        except TimeoutError:
            self._give_up(worker)
            await asyncio.shield(
                self._replace_soon(worker, f"{name} ran for over {self.timeout_s:g} s")
            )
            raise WorkerTimeout(f"{name} did not finish within {self.timeout_s:g} s.") from None
        except (EOFError, OSError):
            self._give_up(worker)
            await asyncio.shield(self._replace_soon(worker, f"{name} crashed its worker"))
            raise WorkerCrashed(f"{name} crashed its worker process.") from None
        except BaseException:
            self._give_up(worker)
            if not self._closing.is_set():
                log.debug("a caller of %s went away; replacing its worker %d", name, worker.pid)
                self._replace_soon(worker, None)
            raise
        self._release(worker)
        return cast("T", _unpack_reply(reply, name))

    async def _acquire(self) -> _Worker:
        """Wait for an idle, live worker."""
        while True:
            worker = await self._idle.get()
            if worker is None or self._closing.is_set():
                self._idle.put_nowait(worker)
                raise WorkerPoolStopped("The worker pool has stopped.")
            if worker.process.poll() is None:
                return worker
            await asyncio.shield(self._replace_soon(worker, "an idle worker died"))

    def _release(self, worker: _Worker) -> None:
        if self._closing.is_set():
            worker.sock.close()  # the pool is stopping and reaps the process
        else:
            self._idle.put_nowait(worker)

    def _give_up(self, worker: _Worker) -> None:
        """Kill a worker whose job failed, at once, so it frees its CPU."""
        if self._closing.is_set():
            worker.sock.close()  # the stopping pool kills and reaps the process
        else:
            _kill(worker.process)

    def _replace_soon(self, old: _Worker, reason: str | None) -> asyncio.Task[None]:
        """Reap ``old`` and start a worker in its place, in a named background task."""
        if self._closing.is_set():
            raise WorkerPoolStopped("The worker pool has stopped.")
        self._workers.discard(old)
        return spawn(
            self._replace(old, reason), f"{self.name}-replace-{old.pid}", keep_in=self._tasks
        )

    async def _replace(self, old: _Worker, reason: str | None) -> None:
        _kill(old.process)
        old.sock.close()
        await asyncio.to_thread(old.process.wait)
        if reason is not None:
            log.warning(
                "%s: worker %d ended with exit code %s; starting another",
                reason,
                old.pid,
                old.process.returncode,
            )
        while not self._closing.is_set():
            try:
                new = await asyncio.to_thread(self._start_worker, self._next_name())
            except Exception:
                log.exception("could not start a worker process; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), RESTART_RETRY_S)
                continue
            self._workers.add(new)
            self._idle.put_nowait(new)
            return

    def _next_name(self) -> str:
        self._started += 1
        return f"{self.name}-{self._started}"

    def _start_worker(self, name: str) -> _Worker:
        """Start one worker process, hand it this process's import path, wait for its hello.
        Blocking."""
        if self._lifeline is None:
            raise WorkerPoolStopped("The worker pool has stopped.")
        ours, theirs = socket.socketpair()
        fds = (theirs.fileno(), self._lifeline[0])
        command, env = python_module("lanpair.worker_process", *map(str, fds), name)
        try:
            # Its own process group: killing the group takes what a job started (ffmpeg).
            process = subprocess.Popen(  # noqa: S603  (this interpreter, list args, no shell)
                command, env=env, pass_fds=fds, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            ours.settimeout(START_TIMEOUT_S)
            path = pickle.dumps(sys.path)  # where the jobs' functions are found, as here
            ours.sendall(HEADER.pack(len(path)) + path)
            try:
                with ours.makefile("rb") as incoming:
                    hello = read_frame(incoming)
            except OSError:
                hello = None
            if hello != b"":
                raise WorkerError(f"The worker process {name} did not start.")
            ours.setblocking(False)
            return _Worker(process, ours, process.pid)
        except BaseException:
            ours.close()
            _stop_processes([process])
            raise


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a worker and whatever its job started (its process group: ffmpeg, say)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """Wait briefly for processes to exit, kill the rest, reap all. Blocking."""
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.poll() is None:
            log.warning("worker %s did not stop; killing it", process.pid)
            _kill(process)
        process.wait()


async def _recv_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytearray:
    header = await _recv_exactly(loop, sock, HEADER.size)
    (size,) = HEADER.unpack(header)
    return await _recv_exactly(loop, sock, size)


async def _recv_exactly(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = await loop.sock_recv_into(sock, view[received:])
        if count == 0:
            raise EOFError("the worker closed its connection")
        received += count
    return buffer


def _unpack_reply(reply: bytearray, name: str) -> Any:
    try:
        status, value, detail = ReplyUnpickler(io.BytesIO(reply)).load()
    except Exception as exc:
        raise WorkerError(f"The reply from {name} could not be read: {exc!r}") from exc
    if status == "ok":
        return value
    value.__cause__ = _RemoteTraceback(detail)
    raise value


class _RemoteTraceback(Exception):
    """Where an exception was raised in the worker process."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'
