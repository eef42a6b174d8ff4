"""Background tasks: named, referenced by whoever starts them, and never dying silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def spawn(
    coro: Coroutine[Any, Any, None],
    name: str,
    *,
    keep_in: set[asyncio.Task[None]] | None = None,
) -> asyncio.Task[None]:
    """Start ``coro`` as a task called ``name``; log its exception if it ever raises one.

    With ``keep_in``, the task is held there until it is done (the caller's set of tasks
    to cancel when it stops).
    """
    task = asyncio.create_task(coro, name=name)
    if keep_in is not None:
        keep_in.add(task)
        task.add_done_callback(keep_in.discard)
    task.add_done_callback(_log_death)
    return task


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())
