"""paths.replace_file: a file is replaced whole or not at all, with the mode asked for."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

import pytest

from lanpair.paths import replace_file


def test_a_file_is_replaced_whole_with_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        replace_file(target, b"new", mode=0o644, durable=True)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "thumb.webp"
    target.write_bytes(b"old picture")

    def write(out: IO[bytes]) -> None:
        out.write(b"half a pic")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_file(target, write, mode=0o600)
    assert target.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["thumb.webp"]


def test_a_writer_function_writes_the_new_file(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"

    def write(out: IO[bytes]) -> None:
        out.write(b"made by a writer")

    replace_file(target, write, mode=0o600)
    assert target.read_bytes() == b"made by a writer"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
