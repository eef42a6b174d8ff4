"""The worker pool, with real spawned processes: results, errors, timeouts, crashes, exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import worker_jobs

from lanpair.errors import WorkerCrashed, WorkerError, WorkerTimeout
from lanpair.workers import WorkerPool

TESTS = Path(__file__).resolve().parent


def ours(name: str) -> list[int]:
    """Return this process's live children whose command line names a worker ``name``-N."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                words = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if any(w.decode().startswith(f"{name}-") for w in words) and not gone(int(child)):
                    found.append(int(child))
    return found


def ends_within(pid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for a process to exit; tell whether it did. Blocking."""
    deadline = time.monotonic() + seconds
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


def gone(pid: int) -> bool:
    """Tell whether a process has exited (a zombie nobody reaps counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


async def test_results_come_back() -> None:
    """A job's return value reaches the caller."""
    async with WorkerPool(1) as pool:
        assert await pool.run(worker_jobs.add, 2, 3) == 5


async def test_a_worker_loads_nothing_of_the_daemons() -> None:
    """A worker imports its own loop and what its jobs need: no asyncio, no aiohttp, no SQLite."""
    async with WorkerPool(1) as pool:
        loaded = await pool.run(worker_jobs.packages_loaded)
    assert not {"asyncio", "aiohttp", "sqlite3", "ssl", "lanpair.workers"} & set(loaded)
    assert [m for m in loaded if m.startswith("lanpair")] == ["lanpair", "lanpair.errors"]


async def test_exceptions_come_back_with_their_type_and_traceback() -> None:
    """A job's exception is re-raised in the caller, the worker's traceback as its cause."""
    async with WorkerPool(1) as pool:
        with pytest.raises(ValueError, match="hostile input") as caught:
            await pool.run(worker_jobs.fail, "hostile input")
        assert "in fail" in str(caught.value.__cause__)
        assert await pool.run(worker_jobs.add, 1, 1) == 2


async def test_what_cannot_cross_back_becomes_worker_error() -> None:
    """An exception the pool cannot rebuild, or an unpicklable result, is a WorkerError."""
    async with WorkerPool(1) as pool:
        with pytest.raises(WorkerError, match="TwoPartError"):
            await pool.run(worker_jobs.fail_unrebuildable)
        with pytest.raises(WorkerError, match="cannot be sent back"):
            await pool.run(worker_jobs.unpicklable_result)
        assert await pool.run(worker_jobs.add, 1, 2) == 3


async def test_a_reply_naming_a_function_is_refused() -> None:
    """A worker cannot make the daemon call anything: replies may name only data classes."""
    async with WorkerPool(1) as pool:
        with pytest.raises(WorkerError, match="may not name"):
            await pool.run(worker_jobs.returns_a_function)
        assert await pool.run(worker_jobs.add, 2, 2) == 4


async def test_jobs_run_at_most_size_at_once() -> None:
    """20 jobs over 2 workers all finish, two at a time, on the pool's own processes."""
    async with WorkerPool(2) as pool:
        spans = await asyncio.gather(*(pool.run(worker_jobs.span, 0.05) for _ in range(20)))
        assert {pid for pid, _, _ in spans} <= set(pool.pids)
    edges = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert len(spans) == 20
    assert peak == 2


async def test_timeout_kills_and_replaces_only_that_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job past the timeout gets WorkerTimeout promptly; only its worker is replaced."""
    async with WorkerPool(2, timeout_s=0.5) as pool:
        before = set(pool.pids)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, "lanpair.workers"), pytest.raises(WorkerTimeout):
            await pool.run(worker_jobs.span, 30)
        assert time.monotonic() - started < 0.5 + 2
        after = set(pool.pids)
        assert len(after) == 2
        assert len(before & after) == 1
        assert all(gone(pid) for pid in before - after)
        spans = await asyncio.gather(*(pool.run(worker_jobs.span, 0.2) for _ in range(2)))
        assert {pid for pid, _, _ in spans} == after
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "worker_jobs.span" in warnings[0].getMessage()


async def test_what_a_timed_out_job_started_is_killed_with_its_worker(tmp_path: Path) -> None:
    """A job past the timeout that started a process of its own (a poster job's ffmpeg):
    that process goes with the worker (it once lived on, re-parented to init)."""
    pid_file = tmp_path / "child.pid"
    async with WorkerPool(1, timeout_s=1.0) as pool:
        with pytest.raises(WorkerTimeout):
            await pool.run(worker_jobs.sleep_in_a_child, str(pid_file), 30)
        child = int(pid_file.read_text())
        assert await asyncio.to_thread(ends_within, child, 3)


async def test_crash_gives_worker_crashed_and_pool_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that dies mid-job gives WorkerCrashed, is logged with its exit code, replaced."""
    async with WorkerPool(2) as pool:
        before = set(pool.pids)
        with caplog.at_level(logging.WARNING, "lanpair.workers"), pytest.raises(WorkerCrashed):
            await pool.run(worker_jobs.exit_hard, 3)
        after = set(pool.pids)
        assert len(after) == 2
        assert len(before & after) == 1
        results = await asyncio.gather(*(pool.run(worker_jobs.add, n, n) for n in range(4)))
        assert results == [0, 2, 4, 6]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "worker_jobs.exit_hard" in warning.getMessage()
    assert "exit code 3" in warning.getMessage()


async def test_cancelled_run_kills_its_worker_and_leaves_pool_usable() -> None:
    """Cancelling a caller kills its job's worker; a fresh one takes its place."""
    async with WorkerPool(1) as pool:
        (old,) = pool.pids
        job = asyncio.create_task(pool.run(worker_jobs.span, 30), name="cancelled-job")
        await asyncio.sleep(0.3)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert await pool.run(worker_jobs.pid) != old
        assert gone(old)
        assert len(pool.pids) == 1


async def test_exit_stops_every_worker_and_fails_busy_callers() -> None:
    """After ``async with``, no worker process is left, busy or idle, and run() refuses."""
    started = time.monotonic()
    async with WorkerPool(2, name="exit-test") as pool:
        pids = pool.pids
        assert len(ours("exit-test")) == 2
        busy = asyncio.create_task(pool.run(worker_jobs.span, 30), name="busy-job")
        await asyncio.sleep(0.3)
    assert time.monotonic() - started < 4
    with pytest.raises(WorkerError, match="stopped"):
        await busy
    with pytest.raises(WorkerError, match="stopped"):
        await pool.run(worker_jobs.add, 1, 1)
    assert ours("exit-test") == []
    assert pool.pids == ()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # not even a zombie: every worker was reaped


async def test_event_loop_never_blocks_while_a_worker_computes() -> None:
    """A task ticking every 10 ms keeps ticking (40+ times) while a worker computes for 0.6 s."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with WorkerPool(1) as pool:
        ticker = asyncio.create_task(tick(), name="ticker")
        try:
            assert await pool.run(worker_jobs.spin, 0.6) > 0
        finally:
            ticker.cancel()
    assert ticks >= 40


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_exits_when_its_parent_is_killed() -> None:
    """A worker in the middle of a job exits when the daemon that started it is SIGKILLed."""
    code = (
        "import asyncio, worker_jobs\n"
        "from lanpair.workers import WorkerPool\n"
        "async def main():\n"
        "    async with WorkerPool(1) as pool:\n"
        "        print(pool.pids[0], flush=True)\n"
        "        await pool.run(worker_jobs.span, 60)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env) as daemon:
        assert daemon.stdout is not None
        worker = int(daemon.stdout.readline())
        time.sleep(0.5)
        assert not gone(worker)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=5)
    deadline = time.monotonic() + 3
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(worker)
