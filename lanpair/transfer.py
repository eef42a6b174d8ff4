"""What push and pull share: progress, summaries, state files, running files a few at a time.

The two directions live in ``push`` (files to a paired PC, over tus) and ``pull`` (its
gallery to a folder, with Range); ``client_commands`` runs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from lanpair import credentials
from lanpair.errors import LanpairError, NotPaired, PinMismatch, RemoteError, Unreachable

if TYPE_CHECKING:
    from lanpair.client import ApiClient

CHUNK_BYTES = 1 << 20
PARALLEL_FILES = 4
STALL_TIMEOUT_S = 30.0
RETRY_PAUSE_S = (0.2, 0.5, 1.0, 2.0)
PROBE_TIMEOUT_S = 5.0  # after a file gave up: how long the PC has to answer one small call
STATE_VERSION = 1
SAVE_EVERY_S = 2.0
STOPS_EVERYTHING = (NotPaired, PinMismatch)

T = TypeVar("T")


class Meter(Protocol):
    """Where progress goes (a progress bar, or nothing)."""

    def start(self, total_bytes: int, done_bytes: int, files: int) -> None:
        """Announce the bytes to move, of which ``done_bytes`` already moved earlier."""

    def advance(self, n_bytes: int) -> None:
        """Count bytes that just moved."""

    def note(self, text: str) -> None:
        """Show one line about one file (a failure, a resume) without breaking the bar."""


@dataclass(slots=True)
class Summary:
    """What one push or pull did."""

    files: int = 0  # moved in this run
    bytes: int = 0  # moved in this run
    already: int = 0  # there before (the PC had it, or DIR did)
    resumed: int = 0  # continued from an interrupted run
    duplicates: int = 0  # stored by the PC as copies of files it already had
    failed: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain data (for --json)."""
        return {
            "files": self.files,
            "bytes": self.bytes,
            "already": self.already,
            "resumed": self.resumed,
            "duplicates": self.duplicates,
            "failed": [{"name": n, "error": e} for n, e in self.failed],
            "elapsed_s": round(self.elapsed_s, 3),
        }


class Fatal(LanpairError):
    """The PC cannot take or give any more (its disk is full, say): the transfer stops."""


class StateFile:
    """A JSON state file, written whole (one write at a time).

    What must survive a crash is written at once; what only saves work (a small file's
    upload URL, a finished file) at most every ``SAVE_EVERY_S``, and by ``flush`` at the
    end: 100k photos must not mean 100k rewrites of a file that lists them all.
    """

    def __init__(self, path: Path, default: dict[str, Any]) -> None:
        self.path = path
        raw = credentials.read_json(path)
        self.data: dict[str, Any] = (
            raw if isinstance(raw, dict) and raw.get("version") == STATE_VERSION else default
        )
        self.data["version"] = STATE_VERSION
        self._lock = asyncio.Lock()
        self._saved_at = -SAVE_EVERY_S
        self._dirty = False

    async def save(self, *, soon: bool = False) -> None:
        """Write the state as it is now (``soon``: unless it was written a moment ago)."""
        if soon and time.monotonic() - self._saved_at < SAVE_EVERY_S:
            self._dirty = True
            return
        async with self._lock:
            self._dirty = False
            self._saved_at = time.monotonic()
            snapshot = _deep_copy(self.data)
            await asyncio.to_thread(credentials.write_private_json, self.path, snapshot)

    async def flush(self) -> None:
        """Write what ``save(soon=True)`` left unwritten."""
        if self._dirty:
            await self.save()


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


class Job(Protocol):
    """One file to move: its name for messages, and the bytes it moved in this run."""

    @property
    def relpath(self) -> str: ...

    @property
    def moved(self) -> int: ...


J = TypeVar("J", bound=Job)


async def run_all(
    api: ApiClient,
    jobs: Sequence[J],
    work: Callable[[J], Awaitable[bool]],
    summary: Summary,
    meter: Meter,
) -> None:
    """Run ``work`` (True: the PC kept it as a duplicate) on each job, a few at a time,
    counting each in ``summary``; an error that stops everything cancels the rest.

    A job that gave up on the PC (Unreachable: nothing moved for the stall timeout) is
    followed by one small call: if the PC does not answer that either, the transfer stops
    (Unreachable) rather than let every file left wait out a timeout of its own.
    """
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            job = queue.pop()
            try:
                duplicate = await work(job)
            except (Fatal, *STOPS_EVERYTHING):
                raise
            except LanpairError as exc:
                if isinstance(exc, Unreachable) and not await answering(api):
                    raise Unreachable(
                        f"The PC stopped answering ({exc.message}); run the same command "
                        "again when it is back, to continue where it stopped."
                    ) from None
                summary.failed.append((job.relpath, exc.message))
                meter.note(f"{job.relpath}: {exc.message}")
            else:
                summary.files += 1
                summary.duplicates += duplicate
            finally:
                summary.bytes += job.moved  # a failed upload's bytes wait on the PC

    workers = [
        asyncio.create_task(worker(), name=f"transfer-{n}")
        for n in range(min(PARALLEL_FILES, len(jobs)))
    ]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def answering(api: ApiClient) -> bool:
    """Return whether the PC answers at all: any answer, even a refusal, says it is there."""
    try:
        await guarded(api.call("GET", "/api/info"), PROBE_TIMEOUT_S)
    except Unreachable:
        return False
    except LanpairError:
        pass
    return True


async def guarded(call: Awaitable[T], limit_s: float) -> T:
    """Await a request whose failure ends the transfer (no answer in ``limit_s``: too)."""
    try:
        async with asyncio.timeout(limit_s):
            return await call
    except TimeoutError:
        raise Unreachable(f"The PC did not answer within {limit_s:g} s.") from None
    except RemoteError as exc:
        raise classify(exc) from None


def classify(exc: RemoteError) -> LanpairError:
    """Return a refusal as the error to show: the whole transfer stops for some."""
    if exc.status == 0:  # no HTTP answer at all (ApiClient.call's connection failures)
        return Unreachable(exc.message)
    if exc.status == 401:
        return NotPaired(
            "The PC no longer accepts this device (the pairing expired or was revoked): "
            "pair again with `lanpair pair`."
        )
    if exc.status == 507:
        return Fatal(exc.message)
    return exc
