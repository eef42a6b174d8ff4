"""Helpers shared by tests: skipping (or failing, under CI) when the machine lacks something."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def running_in_ci() -> bool:
    """Return whether this run is CI's, where nothing may be skipped for a missing tool."""
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason`` on a developer's machine; fail under CI=true (CI installs it all)."""
    if running_in_ci():
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)
