"""Safe names for files and folders made from what clients send.

A client's name is refused outright when it tries to leave its folder (an absolute
path, a ``..`` component); otherwise it is cleaned so it is valid, unambiguous and
harmless on Linux, macOS and Windows.
"""

from __future__ import annotations

import re
import unicodedata

from lanpair.errors import BadRequest

MAX_NAME_BYTES = 255
MAX_EXTENSION_CHARS = 16
ZERO_WIDTH_JOINER = "\u200d"  # joins emoji sequences; every other format character goes
FALLBACK_NAME = "unnamed"

# Characters Windows forbids in names; replaced so a copied library still works there.
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*\\]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.I)
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeName(BadRequest):
    """The name tries to leave its folder (an absolute path or a '..' part) and was refused."""

    code = "unsafe_name"


def clean_text(raw: str) -> str:
    """Drop control and format characters (emoji joiners stay), NFC, and one-space runs."""
    kept = []
    for ch in raw:
        if ch.isspace():
            kept.append(" ")
        elif ch == ZERO_WIDTH_JOINER or unicodedata.category(ch)[0] != "C":
            kept.append(ch)
    return " ".join(unicodedata.normalize("NFC", "".join(kept)).split())


def safe_name(raw: str) -> str:
    """Return one path component made safe: never empty, never hidden (leading dots go).

    Raises UnsafeName for '..' and for anything holding a path separator.
    """
    if "/" in raw or "\\" in raw:
        raise UnsafeName()
    text = clean_text(raw)
    if text in {".", ".."}:
        raise UnsafeName()
    text = _WINDOWS_FORBIDDEN.sub("_", text).strip(" .") if text else ""
    if not text:
        return FALLBACK_NAME
    if _WINDOWS_RESERVED.match(text):
        text = "_" + text
    return cap_bytes(text)


def folder_name(raw: str) -> str:
    """Return a safe folder name for a device or PC name (separators become "_")."""
    return safe_name(re.sub(r"[/\\]", "_", raw).strip(" ."))


def safe_relpath(raw: str) -> tuple[str, ...]:
    """Split a client's relative path into safe components.

    Raises UnsafeName when it is absolute or any component is '..'.
    """
    if raw.startswith(("/", "\\")) or _DRIVE.match(raw):
        raise UnsafeName()
    parts = [p for p in re.split(r"[/\\]", raw) if p not in {"", "."}]
    if any(clean_text(p) == ".." for p in parts):
        raise UnsafeName()
    if not parts:
        return (FALLBACK_NAME,)
    return tuple(safe_name(p) for p in parts)


def cap_bytes(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """Shorten ``name`` to at most ``limit`` UTF-8 bytes, keeping its extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > MAX_EXTENSION_CHARS:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    room = limit - len(suffix.encode())
    shortened = stem.encode()[:room].decode(errors="ignore").rstrip(" .")
    return (shortened or FALLBACK_NAME[: max(room, 1)]) + suffix


def numbered(name: str, n: int) -> str:
    """Return the n-th alternative to a taken name: ``photo (1).jpg``, within the byte cap."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, extension = name, ""
    suffix = f" ({n})" + (f".{extension}" if extension else "")
    room = MAX_NAME_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode(errors="ignore") + suffix
