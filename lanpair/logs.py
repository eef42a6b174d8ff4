"""Logging set-up, with every device token redacted from every line."""

from __future__ import annotations

import logging
import re
import sys

# A token is 24 random bytes in URL-safe base64: exactly 32 characters of that alphabet.
TOKEN_RE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Replace anything shaped like a token with a marker."""
    return TOKEN_RE.sub(REDACTED, text)


class RedactingFormatter(logging.Formatter):
    """Format records, then redact tokens from the whole text, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the formatted record with every token replaced."""
        return redact(super().format(record))


def setup_logging(level: str) -> None:
    """Send plain log lines to stderr at ``level``, tokens redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # A line per request only when debugging: one gallery scroll is hundreds of requests,
    # and each line costs the event loop more than the request itself.
    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # A malformed upload is answered 400 with the reason; the parser's own warning about it
    # would let any client write lines into the log at will.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
