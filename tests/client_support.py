"""Helpers of the client tests: sample files, and waiting for an upload to reach the PC."""

from __future__ import annotations

import contextlib
import hashlib
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from PIL import Image


def make_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` small distinct JPEGs; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # noqa: S311 - repeatable test data, not a secret
    paths = []
    for n in range(count):
        image = Image.new("RGB", (48, 32))
        image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(48 * 32)])
        path = folder / f"IMG_{seed:02d}{n:02d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def make_big(path: Path, size: int, seed: int = 1) -> Path:
    """Write ``size`` pseudo-random bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # noqa: S311 - repeatable test data, not a secret
    with path.open("wb") as out:
        left = size
        while left:
            n = min(left, 1 << 20)
            out.write(rng.randbytes(n))
            left -= n
    return path


def digests(folder: Path) -> list[str]:
    """Return the sorted SHA-256 of every file under ``folder`` (names aside)."""
    return sorted(
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def wait_for_part(tus_folder: Path, push: subprocess.Popen[Any], at_least: int) -> int:
    """Wait until an unfinished upload on the PC holds ``at_least`` bytes; return its size."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sizes = [0]
        for part in tus_folder.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):  # finished meanwhile
                sizes.append(part.stat().st_size)
        if max(sizes) >= at_least:
            return max(sizes)
        assert push.poll() is None, "the push ended before it could be interrupted"
        time.sleep(0.002)
    raise AssertionError("no upload reached the PC")
