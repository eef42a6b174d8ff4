"""QR codes for the pairing URL: always a full QR code (phone cameras cannot read Micro QR)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import segno


@dataclass(frozen=True, slots=True)
class QrImages:
    """One URL drawn as inline SVG and as a PNG data URL."""

    svg: str
    png_data_url: str


def render(url: str) -> QrImages:
    """Draw ``url`` as a QR code, SVG and PNG. Blocking (CPU)."""
    code = segno.make_qr(url, error="m")
    return QrImages(
        svg=code.svg_inline(scale=4, title="lanpair pairing code"),
        png_data_url=code.png_data_uri(scale=3, border=4),
    )


def terminal(url: str) -> str:
    """Draw ``url`` as a QR code of block characters for a terminal."""
    out = io.StringIO()
    segno.make_qr(url, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()
