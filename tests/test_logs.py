"""Token redaction in log lines."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator

import pytest

from lanpair import logs

TOKEN = "Ab3-_xYz0123456789AbCdEfGhIjKlMn"  # 32 URL-safe base64 characters
FINGERPRINT = "q0pTyDTKl0ZgQmHHYj_S-9kgIMuBaRrCbxmBOH2JcVY"  # 43 characters, SHA-256 pin
SHA256_HEX = hashlib.sha256(b"photo").hexdigest()


def test_fixture_shapes() -> None:
    """The sample token is 32 chars, the fingerprint 43, the digest 64 hex."""
    assert (len(TOKEN), len(FINGERPRINT), len(SHA256_HEX)) == (32, 43, 64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"GET /explorer/{TOKEN} 200", "GET /explorer/[redacted] 200"),
        (f"GET /explorer/{TOKEN}/photos 200", "GET /explorer/[redacted]/photos 200"),
        (f"GET /pair-confirm?t={TOKEN}&h=x", "GET /pair-confirm?t=[redacted]&h=x"),
        (f"cookie lanpair_device={TOKEN}; other=1", "cookie lanpair_device=[redacted]; other=1"),
        (f"#{TOKEN}", "#[redacted]"),
        (TOKEN, "[redacted]"),
    ],
)
def test_redact_replaces_tokens(text: str, expected: str) -> None:
    """redact() replaces a 32-char token in paths, query strings, cookies and fragments."""
    assert logs.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        f"certificate fingerprint {FINGERPRINT}",
        f"/files/{SHA256_HEX}",
        f"sha256={SHA256_HEX}",
        "dev_abc123def456 paired from 192.168.1.50",
        TOKEN[:31],
        TOKEN + "A",
    ],
)
def test_redact_leaves_other_strings_alone(text: str) -> None:
    """A 43-char fingerprint, a 64-hex digest and near-miss lengths are not redacted."""
    assert logs.redact(text) == text


@pytest.fixture
def redacting_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """Yield a private logger whose only handler redacts tokens into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.RedactingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("lanpair.tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)
    handler.close()


def test_formatter_redacts_percent_formatted_record(
    redacting_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """A token passed as a %-argument never reaches the handler's output."""
    logger, buffer = redacting_logger
    logger.info("request %s from %s", f"/explorer/{TOKEN}", "192.168.1.50")
    line = buffer.getvalue()
    assert TOKEN not in line
    assert line == "INFO request /explorer/[redacted] from 192.168.1.50\n"


def test_formatter_leaves_clean_records_untouched(
    redacting_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """A record without a token keeps its message and arguments."""
    logger, buffer = redacting_logger
    logger.warning("fingerprint %s on port %d", FINGERPRINT, 5000)
    assert buffer.getvalue() == f"WARNING fingerprint {FINGERPRINT} on port 5000\n"


def test_formatter_redacts_tracebacks(
    redacting_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """A token inside an exception's text is redacted from the logged traceback."""
    logger, buffer = redacting_logger
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        logger.exception("request failed")
    assert TOKEN not in buffer.getvalue()
    assert "bad token [redacted]" in buffer.getvalue()
