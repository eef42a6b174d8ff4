"""The client side's commands push and pull (``cli`` dispatches here): find the PC, move
the files with a progress bar, print one summary line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanpair import credentials
from lanpair.credentials import ClientPaths, PairedPC
from lanpair.errors import TransferIncomplete
from lanpair.locate import reach
from lanpair.spool import human_size

if TYPE_CHECKING:
    from lanpair.transfer import Summary


def _paths(args: argparse.Namespace) -> ClientPaths:
    return ClientPaths.default(getattr(args, "client_dir", None))


def _out(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - a command's output


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # noqa: T201 - a command's output


class Bar:
    """A progress bar on stderr (tqdm: bytes, rate, ETA) when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: Any = None

    def start(self, total_bytes: int, done_bytes: int, files: int) -> None:
        """Show the bar (nothing to move: no bar)."""
        if not sys.stderr.isatty() or total_bytes <= done_bytes:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=total_bytes,
            initial=done_bytes,
            desc=f"{self._label} {files} file{'s' if files != 1 else ''}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.2,
        )

    def advance(self, n_bytes: int) -> None:
        """Move the bar."""
        if self._bar is not None:
            self._bar.update(n_bytes)

    def note(self, text: str) -> None:
        """Print a line above the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            _err(text)

    def close(self) -> None:
        """Remove the bar's cursor line."""
        if self._bar is not None:
            self._bar.close()


def push(args: argparse.Namespace) -> int:
    """Send files and folders to a paired PC."""
    from lanpair import push as pushing

    paths = [Path(p) for p in args.paths]
    return _transfer(
        args,
        args.to,
        "push",
        lambda api, pc, bar: pushing.push(
            api,
            paths,
            pushing.PushState(_paths(args).push_state(pc.pc_id)),
            bar,
            stall_s=args.timeout,
        ),
    )


def pull(args: argparse.Namespace) -> int:
    """Download the gallery files that a folder lacks."""
    from lanpair import pull as pulling

    dest = Path(args.dir).expanduser().absolute()
    return _transfer(
        args,
        args.from_,
        "pull",
        lambda api, pc, bar: pulling.pull(
            api,
            dest,
            pulling.PullState(_paths(args).pull_state(pc.pc_id), dest),
            bar,
            stall_s=args.timeout,
        ),
    )


def _transfer(
    args: argparse.Namespace,
    wanted: str | None,
    verb: str,
    run: Callable[[Any, PairedPC, Bar], Awaitable[Summary]],
) -> int:
    paths = _paths(args)
    pc = credentials.load(paths.pairings).pick(wanted)
    bar = Bar("Sending" if verb == "push" else "Fetching")
    try:
        summary, pc = asyncio.run(
            _transfer_async(pc, paths.pairings, args.mdns, args.timeout, bar, run)
        )
    finally:
        bar.close()
    credentials.update(paths.pairings, pc.pc_id, last_sync=credentials.now_iso())
    if args.json:
        _out(json.dumps({"pc": pc.name, **summary.as_dict()}, indent=2))
    else:
        _out(_summary_line(verb, pc, summary))
    if summary.failed:
        for name, error in summary.failed:
            _err(f"  not {'sent' if verb == 'push' else 'fetched'}: {name}: {error}")
        raise TransferIncomplete(
            f"{len(summary.failed)} file(s) did not make it; run the same command again to "
            "continue where it stopped."
        )
    return 0


async def _transfer_async(
    pc: PairedPC,
    book_path: Path,
    use_mdns: bool,
    stall_s: float,
    bar: Bar,
    run: Callable[[Any, PairedPC, Bar], Awaitable[Summary]],
) -> tuple[Summary, PairedPC]:
    from lanpair.client import ApiClient

    reached = await reach(pc, book_path, use_mdns=use_mdns)
    if reached.moved_from:
        _err(f"{pc.name!r} moved to {reached.pc.base_url} (found by mDNS); address updated.")
    pc = reached.pc
    async with ApiClient(
        pc.base_url, fingerprint=pc.fingerprint, token=pc.token, timeout_s=stall_s
    ) as api:
        return await run(api, pc, bar), pc


def _summary_line(verb: str, pc: PairedPC, summary: Summary) -> str:
    done = "Pushed" if verb == "push" else "Pulled"
    direction = "to" if verb == "push" else "from"
    rate = summary.bytes / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    line = (
        f"{done} {summary.files} file{'s' if summary.files != 1 else ''} "
        f"({human_size(summary.bytes)}) {direction} {pc.name} in {summary.elapsed_s:.1f} s "
        f"({human_size(int(rate))}/s); {summary.already} already there"
    )
    if summary.resumed:
        line += f"; {summary.resumed} resumed"
    if summary.duplicates:
        line += f"; {summary.duplicates} kept once (same content already on the PC)"
    if summary.failed:
        line += f"; {len(summary.failed)} failed"
    return line + "."
