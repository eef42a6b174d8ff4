"""Top-level job functions for tests/test_workers.py, importable by spawned worker processes.

Workers get the pool's ``sys.path`` (the pool sends it along), and pytest puts ``tests/`` on
it, so ``import worker_jobs`` works in the workers too.
"""

from __future__ import annotations

import os
import sys
import threading
import time


class TwoPartError(Exception):
    """An exception that pickles but cannot be rebuilt: its __init__ takes two arguments."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first}/{second}")


def add(a: int, b: int) -> int:
    """Return the sum, computed in the worker."""
    return a + b


def pid() -> int:
    """Return the worker's process id."""
    return os.getpid()


def packages_loaded() -> list[str]:
    """Return the top-level packages the worker has imported, and lanpair's modules."""
    return sorted({m if m.startswith("lanpair") else m.partition(".")[0] for m in sys.modules})


def fail(message: str) -> None:
    """Raise a ValueError."""
    raise ValueError(message)


def fail_unrebuildable() -> None:
    """Raise an exception the pool cannot rebuild on its side."""
    raise TwoPartError("left", "right")


def unpicklable_result() -> object:
    """Return something pickle refuses."""
    return threading.Lock()


def span(seconds: float) -> tuple[int, float, float]:
    """Sleep, then return the worker's pid and when the sleep started and ended."""
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), start, time.monotonic()


def spin(seconds: float) -> int:
    """Keep a CPU busy for ``seconds``; return how many loops that took."""
    deadline = time.monotonic() + seconds
    loops = 0
    while time.monotonic() < deadline:
        loops += 1
    return loops


def exit_hard(code: int) -> None:
    """End the worker process at once, the way a crash in C code would."""
    os._exit(code)


def returns_a_function() -> object:
    """Return a function: a reply the pool must refuse to unpickle (it could run it)."""
    return os.system


def sleep_in_a_child(pid_file: str, seconds: float) -> None:
    """Start ``sleep`` as a child (as a poster job starts ffmpeg), note its pid, wait for it."""
    import subprocess

    child = subprocess.Popen(["sleep", str(seconds)])
    with open(pid_file, "w") as out:  # noqa: PTH123 - plain, in a worker
        out.write(str(child.pid))
    child.wait()
