"""What runs inside a worker process of ``workers.WorkerPool``: read a job, run it, reply.

Apart from the pool, so that a worker imports this and what its jobs need, and nothing of
the daemon's: each worker is a fresh interpreter, and the pool's module (asyncio and the
rest) cost each worker 8 MiB it never used.

Over the socket pair, each message is a length-prefixed pickle; an empty payload is "ready"
(from a worker) or "stop" (to it). The pool's first message is its import path (``sys.path``),
so a job's function is found in the worker as it is in the pool; then each job is
``(function, args)``, and each reply ``(status, value, traceback text)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from io import BufferedReader
from typing import Any

from lanpair.errors import WorkerError

HEADER = struct.Struct("!Q")  # payload length; an empty payload is "ready" or "stop"


def main() -> None:
    """``python -m lanpair.worker_process SOCKET LIFELINE NAME``: serve the pool over the
    socket (a file descriptor); exit when the lifeline (a pipe's read end) reaches its end."""
    sock, lifeline = socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2])
    threading.Thread(target=_exit_with, args=(lifeline,), name="parent-watch", daemon=True).start()
    worker_main(sock)


def worker_main(sock: socket.socket) -> None:
    """Take the pool's import path, then answer jobs until the pool says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the pool decides
    with sock, sock.makefile("rb") as incoming, contextlib.suppress(OSError):
        sock.sendall(HEADER.pack(0))
        path = read_frame(incoming)
        if path is None:
            return
        sys.path[:] = pickle.loads(path)  # noqa: S301 - sent by the pool that started us
        while request := read_frame(incoming):
            reply = _serve(request)
            sock.sendall(HEADER.pack(len(reply)) + reply)


def _exit_with(lifeline: int) -> None:
    """Exit as soon as the pool's process does, even in the middle of a job: only it holds
    the pipe's write end, and it writes nothing, so a read returns at its end. What the job
    started (ffmpeg) goes too: the worker leads its own process group."""
    os.read(lifeline, 1)
    if os.getpgid(0) == os.getpid():  # never the group of whoever started it otherwise
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


def read_frame(incoming: BufferedReader) -> bytes | None:
    """Return the next payload, or None at the end of the connection."""
    header = incoming.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    payload = incoming.read(size)
    return payload if len(payload) == size else None


def _serve(request: bytes) -> bytes:
    name = "a job"
    try:
        func, args = pickle.loads(request)  # noqa: S301 - sent by the pool that started us
        name = describe(func)
        result = func(*args)
    except Exception as exc:
        return _error_reply(exc, name)
    try:
        return pickle.dumps(("ok", result, None), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        error = WorkerError(f"{name} returned a value that cannot be sent back: {exc!r}")
        return _error_reply(error, name)


def _error_reply(exc: Exception, name: str) -> bytes:
    detail = "".join(traceback.format_exception(exc))
    try:
        reply = pickle.dumps(("error", exc, detail), protocol=pickle.HIGHEST_PROTOCOL)
        ReplyUnpickler(io.BytesIO(reply)).load()  # will the pool accept and rebuild it?
    except Exception:
        fallback = WorkerError(f"{name} raised {exc!r}")
        reply = pickle.dumps(("error", fallback, detail), protocol=pickle.HIGHEST_PROTOCOL)
    return reply


class ReplyUnpickler(pickle.Unpickler):
    """Read a worker's reply, trusting it only with plain data, exceptions and dataclasses.

    A worker parses hostile files; if one ever took it over, a free-form pickle would run
    code in the daemon. Only classes can be named here (never functions), and only
    exception types or dataclasses, so a reply can build values but not call anything else.
    """

    SAFE_HELPERS = frozenset({("copyreg", "__newobj__"), ("copyreg", "_reconstructor")})

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a class the reply names, if it is one a reply may hold."""
        found = super().find_class(module, name)
        if (module, name) in self.SAFE_HELPERS or found is object:
            return found
        if isinstance(found, type) and (
            issubclass(found, BaseException) or dataclasses.is_dataclass(found)
        ):
            return found
        raise pickle.UnpicklingError(f"a worker's reply may not name {module}.{name}")


def describe(func: Callable[..., Any]) -> str:
    """Name a job's function: module.qualname."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(func)


if __name__ == "__main__":
    main()
