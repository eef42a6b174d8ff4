"""Photos and videos as lanpair shows them: what a file is, its size and date, and its thumbnail.

Every function here is blocking and meant for a worker process. The file's kind comes from
its first bytes, never its name, and Pillow is only ever asked to decode the one format those
bytes name: a file that merely claims to be a picture never reaches another decoder.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import mimetypes
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile

from lanpair.errors import LanpairError
from lanpair.paths import replace_file

MAX_IMAGE_PIXELS = 100_000_000
SNIFF_BYTES = 64
THUMB_QUALITY = 80
THUMB_METHOD = 2  # WebP effort: 4 and 6 take 2x and 5x as long for files 5-10% smaller
WEBP_MAX_PX = 16383
POSTER_AT_S = 1.0


class MediaError(LanpairError):
    """This file could not be read as a photo or video."""

    code = "media"


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What a file's first bytes say it is: kind "image", "video" or "file", and its MIME type."""

    kind: str
    mime: str


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """A picture's size as displayed (EXIF rotation applied) and when it was taken, in UTC."""

    width: int
    height: int
    taken_at: datetime | None


# ISO base media (MP4, MOV, HEIF, AVIF): the ftyp box's major brand, then compatible brands.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2", b"miaf"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_AUDIO_BRANDS = {b"M4A ": "audio/mp4", b"M4B ": "audio/mp4", b"M4P ": "audio/mp4"}
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}

_PILLOW_FORMATS = {
    "image/jpeg": "JPEG",  # camera multi-picture JPEGs open as MPO through the JPEG plugin
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
    "image/avif": "AVIF",
}
_FFMPEG_DEMUXERS = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
    "video/x-msvideo": "avi",
}

# Stored → displayed, by EXIF orientation; the same table as ImageOps.exif_transpose.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TAG_ORIENTATION = 0x0112
_IFD_EXIF = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_OFFSET_TIME_ORIGINAL = 0x9011
_UTC_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


def sniff(head: bytes, name: str) -> Sniffed:
    """Tell a file's kind and MIME type from its first bytes; ``name`` only names plain files."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "image/png")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return Sniffed("image", "image/gif")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("image", "image/webp")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return Sniffed("video", "video/x-msvideo")
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return Sniffed("image", "image/bmp")
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return Sniffed("image", "image/tiff")
    if head[4:8] == b"ftyp" and len(head) >= 12:
        found = _sniff_ftyp(head)
        if found is not None:
            return found
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", _matroska_mime(head, name))
    return _plain_file(name)


def _sniff_ftyp(head: bytes) -> Sniffed | None:
    """Tell an ISO base media file (MP4, MOV, HEIF, AVIF) by its ftyp box's brands."""
    major = head[8:12]
    box_end = min(int.from_bytes(head[0:4], "big"), len(head))
    brands = {major} | {head[i : i + 4] for i in range(16, box_end - 3, 4)}
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and brands & _AVIF_BRANDS):
        return Sniffed("image", "image/avif")
    if major in _HEIC_BRANDS or (major in _HEIF_BRANDS and brands & _HEIC_BRANDS):
        return Sniffed("image", "image/heic")
    if major in _HEIF_BRANDS:
        return Sniffed("image", "image/heif")
    if major in _AUDIO_BRANDS:
        return Sniffed("file", _AUDIO_BRANDS[major])
    if major == b"crx ":  # Canon CR3 raw photos share the container; no thumbnailer reads them
        return None
    if major == b"qt  ":
        return Sniffed("video", "video/quicktime")
    return Sniffed("video", "video/mp4")


def _matroska_mime(head: bytes, name: str) -> str:
    """Tell WebM from other Matroska by the DocType element, or by the name if it is not seen."""
    at = head.find(b"\x42\x82")
    if at >= 0 and at + 3 <= len(head) and head[at + 2] & 0x80:
        size = head[at + 2] & 0x7F
        doc_type = head[at + 3 : at + 3 + size]
        if doc_type == b"webm":
            return "video/webm"
        if doc_type == b"matroska":
            return "video/x-matroska"
    return "video/webm" if name.lower().endswith(".webm") else "video/x-matroska"


def _plain_file(name: str) -> Sniffed:
    """Name a file that is neither picture nor video by its extension."""
    mime, encoding = mimetypes.guess_type(name)
    if encoding is not None:
        mime = _COMPRESSED.get(encoding)
    return Sniffed("file", mime or "application/octet-stream")


def probe_image(path: Path, name: str | None = None) -> ImageInfo:
    """Read a picture's displayed size and capture time from its headers alone. Blocking.

    ``name`` is the file's name where ``path`` is another link to it (a staging name).
    """
    with _decoding(path, name or path.name) as image:
        exif = _exif_of(image)
        width, height = image.size
        if _orientation(image, exif) >= 5:
            width, height = height, width
        return ImageInfo(width=width, height=height, taken_at=_taken_at(exif))


def make_thumbnail(src: Path, dst: Path, *, px: int = 400) -> tuple[int, int]:
    """Write an upright WebP thumbnail of ``src`` to ``dst``, long edge at most ``px``. Blocking.

    Raises MediaError for a source it cannot read (nothing is written then); OSError
    if ``dst`` cannot be written.
    """
    _check_px(px)
    with _decoding(src, src.name) as image:
        method = _UPRIGHT.get(_orientation(image, _exif_of(image)))
        icc = image.info.get("icc_profile") if image.mode in ("RGB", "RGBA") else None
        # JPEG only: let the decoder scale by 1/2, 1/4 or 1/8, to no less than the thumbnail.
        # Asking for twice that (as thumbnail() would) costs ~15 ms more on 12 MP for a
        # difference no one sees at this size.
        image.draft("RGB", _fit(image.size, px))
        thumb = _shrink(image, px)
        if method is not None:
            thumb = thumb.transpose(method)
        thumb = _flatten(thumb)
    _save_webp(thumb, dst, icc if isinstance(icc, bytes) else None)
    return thumb.size


def video_poster(
    src: Path,
    dst: Path,
    *,
    px: int = 400,
    timeout_s: float = 30,
    search_path: str | None = None,
) -> tuple[int, int] | None:
    """Write a WebP frame of a video (at 1 s, or its first) to ``dst``, long edge at most ``px``.

    Returns its size, or None when ffmpeg is not on ``search_path`` (default: PATH).
    Raises MediaError when ffmpeg cannot read the video. Blocking.
    """
    _check_px(px)
    ffmpeg = shutil.which("ffmpeg", path=search_path)
    if ffmpeg is None:
        return None
    demuxer = _demuxer_for(src)
    deadline = time.monotonic() + timeout_s
    frame = _grab_frame(ffmpeg, demuxer, src, px, POSTER_AT_S, deadline)
    if not frame:  # shorter than POSTER_AT_S
        frame = _grab_frame(ffmpeg, demuxer, src, px, None, deadline)
    if not frame:
        raise MediaError(f"{src.name}: ffmpeg found no video frame in it")
    try:
        with _guarded(), Image.open(BytesIO(frame), formats=("PPM",)) as image:
            image.load()
            poster = image.convert("RGB")
    except Exception as exc:
        raise MediaError(f"{src.name}: ffmpeg gave an unreadable frame ({exc})") from exc
    _save_webp(poster, dst, None)
    return poster.size


def video_duration(
    src: Path, timeout_s: float = 10, *, search_path: str | None = None
) -> float | None:
    """Return a video's length in seconds, or None if unknown or ffprobe is not on PATH.

    Raises MediaError when ffprobe cannot read the video. Blocking.
    """
    ffprobe = shutil.which("ffprobe", path=search_path)
    if ffprobe is None:
        return None
    args = [
        ffprobe,
        *("-v", "error", "-protocol_whitelist", "file", "-f", _demuxer_for(src)),
        *("-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1"),
        _ffmpeg_url(src),
    ]
    out = _run_tool(args, src, timeout_s)
    try:
        seconds = float(out.decode("ascii", "replace").strip())
    except ValueError:  # "N/A": a stream without a known length
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# -- pictures ------------------------------------------------------------------------------


@contextlib.contextmanager
def _guarded() -> Iterator[None]:
    """Refuse decompression bombs and keep Pillow's complaints about hostile files quiet."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # corrupt EXIF, odd MPO: the file's fault
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@contextlib.contextmanager
def _decoding(path: Path, name: str) -> Iterator[ImageFile.ImageFile]:
    """Open ``path`` (a file called ``name``) with the one Pillow decoder its bytes name;
    every failure is MediaError."""
    try:
        with _guarded(), path.open("rb") as fp:
            sniffed = sniff(fp.read(SNIFF_BYTES), name)
            fp.seek(0)
            with Image.open(fp, formats=(_pillow_format(sniffed, name),)) as image:
                # Checked here too: warning filters are per process, not per thread.
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise MediaError(f"{name}: too many pixels to open safely")
                yield image
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"{name}: too many pixels to open safely") from exc
    except Exception as exc:  # Pillow raises a dozen types for hostile input
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MediaError(f"{name}: not a readable picture ({reason})") from exc


def _pillow_format(sniffed: Sniffed, name: str) -> str:
    """Return the one Pillow format to decode a sniffed file (called ``name``) with."""
    pillow_name = _PILLOW_FORMATS.get(sniffed.mime) if sniffed.kind == "image" else None
    if pillow_name is None:
        raise MediaError(f"{name}: not a picture")
    if pillow_name == "HEIF" and not _heif_opener_registered():
        raise MediaError("HEIC needs pip install 'lanpair[heif]'")
    if pillow_name not in Image.OPEN:
        Image.init()
    if pillow_name not in Image.OPEN:
        raise MediaError(f"{name}: this Pillow cannot decode {sniffed.mime}")
    return pillow_name


@functools.cache
def _heif_opener_registered() -> bool:
    """Teach Pillow HEIC/HEIF once, if the optional pillow_heif is installed."""
    try:
        pillow_heif = importlib.import_module("pillow_heif")
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _exif_of(image: Image.Image) -> Image.Exif:
    """Read EXIF from the headers only (PNG's own getexif would decode the pixels)."""
    try:
        return Image.Image.getexif(image)
    except Exception:  # a broken EXIF block does not make the pixels unreadable
        return Image.Exif()


def _orientation(image: Image.Image, exif: Image.Exif) -> int:
    """Return the EXIF orientation still to apply, 1 (upright) when absent or nonsense."""
    if image.format == "TIFF" and _pillow_turns_tiff():
        return 1
    value = exif.get(_TAG_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


@functools.cache
def _pillow_turns_tiff() -> bool:
    """Tell whether this Pillow reports TIFF sizes upright and turns TIFFs as it loads them."""
    sample = BytesIO()
    Image.new("L", (2, 1)).save(sample, "TIFF", tiffinfo={_TAG_ORIENTATION: 6})
    with Image.open(sample, formats=("TIFF",)) as image:
        return image.size == (1, 2)


def _taken_at(exif: Image.Exif) -> datetime | None:
    """Return DateTimeOriginal in UTC, using OffsetTimeOriginal or else this PC's time zone."""
    try:
        tags = exif.get_ifd(_IFD_EXIF)
        text = _exif_text(tags.get(_TAG_DATETIME_ORIGINAL))
        if text is None:
            return None
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
        offset = _utc_offset(_exif_text(tags.get(_TAG_OFFSET_TIME_ORIGINAL)))
        if offset is None:
            return moment.astimezone(UTC)  # a naive time is read as this PC's local time
        return moment.replace(tzinfo=offset).astimezone(UTC)
    except Exception:  # a broken or absurd date is no date, not an unreadable picture
        return None


def _exif_text(value: object) -> str | None:
    """Return an EXIF ASCII value as text, without padding; None if it is not text."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ") or None


def _utc_offset(text: str | None) -> timezone | None:
    """Parse an EXIF offset such as "+02:00"; None if absent or malformed."""
    match = _UTC_OFFSET.fullmatch(text or "")
    if match is None:
        return None
    sign, hours, minutes = match[1], int(match[2]), int(match[3])
    if hours > 14 or minutes > 59:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if sign == "-" else delta)


def _check_px(px: int) -> None:
    """Refuse a thumbnail size WebP cannot hold."""
    if not 1 <= px <= WEBP_MAX_PX:
        raise ValueError(f"px must be between 1 and {WEBP_MAX_PX}, not {px}")


def _fit(size: tuple[int, int], px: int) -> tuple[int, int]:
    """Return ``size`` scaled down so its long edge is at most ``px``."""
    width, height = size
    scale = min(1.0, px / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrink(image: Image.Image, px: int) -> Image.Image:
    """Decode and scale down to fit a ``px`` square, in a mode that resamples smoothly."""
    image.load()
    if image.mode in ("1", "P", "PA") and max(image.size) > 4 * px:
        # Palette images resample only by nearest neighbour; first cut them down that way so
        # the RGBA copy below stays small.
        image = image.resize(_fit(image.size, 4 * px), Image.Resampling.NEAREST)
    if image.mode.startswith("I;16") or image.mode == "I":
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    elif image.mode in ("PA", "LA", "La", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    image.thumbnail((px, px), reducing_gap=2.0)
    return image


def _flatten(image: Image.Image) -> Image.Image:
    """Return an RGB image, transparent parts laid on white."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _save_webp(image: Image.Image, dst: Path, icc: bytes | None) -> None:
    """Write ``image`` to ``dst`` as WebP, whole or not at all."""

    def write(out: IO[bytes]) -> None:
        extra = {"icc_profile": icc} if icc else {}
        image.save(out, format="WEBP", quality=THUMB_QUALITY, method=THUMB_METHOD, **extra)

    replace_file(dst, write, mode=0o600)  # a picture of a private photo


# -- videos --------------------------------------------------------------------------------


def _demuxer_for(src: Path) -> str:
    """Return the ffmpeg demuxer for a video's bytes; naming it stops playlist tricks."""
    try:
        with src.open("rb") as fp:
            sniffed = sniff(fp.read(SNIFF_BYTES), src.name)
    except OSError as exc:
        raise MediaError(f"{src.name}: cannot be read ({exc.strerror})") from exc
    demuxer = _FFMPEG_DEMUXERS.get(sniffed.mime)
    if sniffed.kind != "video" or demuxer is None:
        raise MediaError(f"{src.name}: not a video")
    return demuxer


def _ffmpeg_url(src: Path) -> str:
    """Name a local file so ffmpeg can take it for nothing else (a protocol, an option)."""
    return f"file:{src.resolve()}"


def _grab_frame(
    ffmpeg: str, demuxer: str, src: Path, px: int, at_s: float | None, deadline: float
) -> bytes:
    """Return one scaled frame as PPM bytes, empty when there is none at ``at_s``."""
    seek = ("-ss", f"{at_s:.3f}") if at_s is not None else ()
    fit = f"scale='min(iw,{px})':'min(ih,{px})':force_original_aspect_ratio=decrease"
    args = [
        ffmpeg,
        *("-nostdin", "-hide_banner", "-loglevel", "error"),
        *("-protocol_whitelist", "file", "-f", demuxer, *seek, "-i", _ffmpeg_url(src)),
        *("-map", "0:v:0", "-frames:v", "1", "-vf", fit, "-an", "-sn", "-dn"),
        *("-f", "image2pipe", "-c:v", "ppm", "pipe:1"),
    ]
    if at_s is not None:
        try:
            return _run_tool(args, src, deadline - time.monotonic())
        except MediaError:
            return b""  # some builds fail rather than print nothing when seeking past the end
    return _run_tool(args, src, deadline - time.monotonic())


def _run_tool(args: list[str], src: Path, timeout_s: float) -> bytes:
    """Run ffmpeg or ffprobe and return its output; MediaError if it fails or overruns."""
    if timeout_s <= 0:
        raise MediaError(f"{src.name}: reading the video took too long")
    try:
        done = subprocess.run(  # noqa: S603  (list args, no shell, a tool found by shutil.which)
            args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{src.name}: reading the video took too long") from exc
    except OSError as exc:
        raise MediaError(f"{src.name}: cannot run {Path(args[0]).name} ({exc})") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise MediaError(f"{src.name}: not a readable video ({detail[0]})")
    return done.stdout
