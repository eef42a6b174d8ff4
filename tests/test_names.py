"""Names from clients become safe file and folder names, or are refused."""

from __future__ import annotations

import pytest

from lanpair.names import (
    FALLBACK_NAME,
    MAX_NAME_BYTES,
    UnsafeName,
    cap_bytes,
    clean_text,
    folder_name,
    numbered,
    safe_name,
    safe_relpath,
)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("IMG_0001.JPG", "IMG_0001.JPG"),
        ("<img src=x onerror=alert(1)>.jpg", "_img src=x onerror=alert(1)_.jpg"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("  .hidden ", "hidden"),
        ("name. . ", "name"),
        ("a\x00b\x07.jpg", "ab.jpg"),
        ("\u202egpj.exe", "gpj.exe"),
        ("zero\u200bwidth.png", "zerowidth.png"),
        ("Cafe\u0301.png", "Caf\u00e9.png"),
        ("what?*.jpg", "what__.jpg"),
        ("", "unnamed"),
        ("...", "unnamed"),
    ],
)
def test_names_are_made_safe(raw: str, safe: str) -> None:
    """Control, format and Windows-forbidden characters go; reserved names get a prefix."""
    assert safe_name(raw) == safe


@pytest.mark.parametrize("raw", ["..", ".", "a/b", "a\\b", "../x"])
def test_names_that_leave_their_folder_are_refused(raw: str) -> None:
    """A single name holding a separator or '..' is refused, not rewritten."""
    with pytest.raises(UnsafeName):
        safe_name(raw)


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("a/b/c.jpg", ("a", "b", "c.jpg")),
        ("a\\b.jpg", ("a", "b.jpg")),
        ("./a//b", ("a", "b")),
        ("Holiday 2024/CON/x.jpg", ("Holiday 2024", "_CON", "x.jpg")),
    ],
)
def test_relative_paths_split_into_safe_parts(raw: str, parts: tuple[str, ...]) -> None:
    """Every component of a relative path is cleaned on its own."""
    assert safe_relpath(raw) == parts


@pytest.mark.parametrize(
    "raw", ["/etc/passwd", "\\\\server\\share", "C:\\Windows", "c:x", "../x", "a/../../b", "a/../b"]
)
def test_absolute_and_parent_paths_are_refused(raw: str) -> None:
    """Absolute paths, drive letters and '..' anywhere are refused outright."""
    with pytest.raises(UnsafeName):
        safe_relpath(raw)


def test_long_names_are_capped_in_bytes_keeping_the_extension() -> None:
    """A 300-byte name shrinks to 255 bytes and keeps its extension; multibyte stays whole."""
    capped = safe_name("é" * 300 + ".jpeg")
    assert len(capped.encode()) <= MAX_NAME_BYTES
    assert capped.endswith(".jpeg")
    capped.encode().decode()  # no half characters
    assert cap_bytes("x" * 300) == "x" * 255


def test_numbered_alternatives_keep_extension_and_cap() -> None:
    """Collisions become 'name (n).ext', still within the byte cap."""
    assert numbered("photo.jpg", 1) == "photo (1).jpg"
    assert numbered("README", 2) == "README (2)"
    assert numbered(".jpg", 1) == ".jpg (1)"
    long = numbered("x" * 255, 12)
    assert len(long.encode()) == MAX_NAME_BYTES
    assert long.endswith(" (12)")


def test_clean_text_keeps_emoji_sequences() -> None:
    """The zero-width joiner inside an emoji family survives cleaning."""
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert clean_text(f" {family}\n photos ") == f"{family} photos"


@pytest.mark.parametrize(
    ("raw", "folder"),
    [
        ("Hall/phone", "Hall_phone"),
        ("a\\b", "a_b"),
        ("..", FALLBACK_NAME),
        ("Anna's phone", "Anna's phone"),
    ],
)
def test_device_and_pc_names_always_make_a_folder(raw: str, folder: str) -> None:
    assert folder_name(raw) == folder
