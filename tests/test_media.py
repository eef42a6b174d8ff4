"""The media adapter: what a file is, how big and how old a picture is, thumbnails and posters."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, features
from support import skip_or_fail

from lanpair.media import (
    ImageInfo,
    MediaError,
    Sniffed,
    make_thumbnail,
    probe_image,
    sniff,
    video_duration,
    video_poster,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

# Upright → stored: how to lay out a picture so that its EXIF orientation turns it upright.
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
ORIENTED_FORMATS = ["JPEG", "PNG", "WEBP", "TIFF"]


def save_picture(
    path: Path,
    image: Image.Image,
    *,
    fmt: str = "JPEG",
    orientation: int | None = None,
    taken: str | None = None,
    offset: str | None = None,
    quality: int = 95,
) -> Path:
    """Save ``image`` in ``fmt`` with the given EXIF orientation and capture time."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if taken is not None:
        tags = exif.get_ifd(0x8769)
        tags[0x9003] = taken
        if offset is not None:
            tags[0x9011] = offset
    lossy = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    image.save(path, fmt, exif=exif, **lossy)
    return path


def photo(width: int, height: int) -> Image.Image:
    """Make a picture with a photo's texture: gradients under noise."""
    gradient = Image.linear_gradient("L")
    channels = (
        gradient.resize((width, height)),
        Image.effect_noise((width, height), 40),
        gradient.rotate(90).resize((width, height)),
    )
    return Image.blend(Image.merge("RGB", channels), Image.new("RGB", (width, height), RED), 0.2)


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    """Return one pixel of ``image`` as (red, green, blue)."""
    red, green, blue = image.convert("RGB").getpixel(xy)  # type: ignore[misc]
    return red, green, blue


def is_near(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    """Tell whether two colours match within what lossy coding changes."""
    return all(abs(a - b) <= 50 for a, b in zip(colour, expected, strict=True))


def header_only_png(width: int, height: int) -> bytes:
    """Return a PNG whose header claims ``width``x``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    """Return the start of an ISO base media file with the given brands, padded to 64 bytes."""
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    box = struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands
    return (box + struct.pack(">I", 8) + b"free" + b"\x00" * 64)[:64]


def ebml(doc_type: bytes) -> bytes:
    """Return the start of a Matroska file whose EBML header names ``doc_type``."""
    body = (
        b"\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08"
        + b"\x42\x82"
        + bytes([0x80 | len(doc_type)])
        + doc_type
        + b"\x42\x87\x81\x04\x42\x85\x81\x02"
    )
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body


def files_in(folder: Path) -> list[str]:
    """List a folder's file names, hidden temporary files included."""
    return sorted(entry.name for entry in folder.iterdir())


# -- sniff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pillow_format", "mime", "mode"),
    [
        ("JPEG", "image/jpeg", "RGB"),
        ("PNG", "image/png", "RGBA"),
        ("GIF", "image/gif", "P"),
        ("WEBP", "image/webp", "RGB"),
        ("BMP", "image/bmp", "RGB"),
        ("TIFF", "image/tiff", "RGB"),
    ],
)
def test_sniff_tells_pictures_pillow_writes(
    tmp_path: Path, pillow_format: str, mime: str, mode: str
) -> None:
    """Real JPEG, PNG, GIF, WebP, BMP and TIFF files sniff as images, whatever their names."""
    path = tmp_path / "notes.txt"
    Image.new(mode, (16, 8)).save(path, pillow_format)
    assert sniff(path.read_bytes()[:64], path.name) == Sniffed("image", mime)


def test_sniff_tells_avif_pillow_writes(tmp_path: Path) -> None:
    """A real AVIF file sniffs as image/avif."""
    if not features.check("avif"):
        skip_or_fail("this Pillow was built without AVIF")
    path = tmp_path / "a.bin"
    Image.new("RGB", (16, 8)).save(path, "AVIF")
    assert sniff(path.read_bytes()[:64], path.name) == Sniffed("image", "image/avif")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (ftyp(b"heic", b"mif1", b"heic"), Sniffed("image", "image/heic")),
        (ftyp(b"heix", b"mif1"), Sniffed("image", "image/heic")),
        (ftyp(b"hevc", b"msf1"), Sniffed("image", "image/heic")),
        (ftyp(b"mif1", b"mif1", b"heic"), Sniffed("image", "image/heic")),
        (ftyp(b"mif1", b"mif1"), Sniffed("image", "image/heif")),
        (ftyp(b"msf1", b"msf1"), Sniffed("image", "image/heif")),
        (ftyp(b"avif", b"avif", b"mif1", b"miaf"), Sniffed("image", "image/avif")),
        (ftyp(b"mif1", b"avif", b"miaf"), Sniffed("image", "image/avif")),
        (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), Sniffed("video", "video/mp4")),
        (ftyp(b"mp42", b"mp42", b"isom"), Sniffed("video", "video/mp4")),
        (ftyp(b"M4V ", b"M4V ", b"mp42"), Sniffed("video", "video/mp4")),
        (ftyp(b"3gp4", b"3gp4", b"isom"), Sniffed("video", "video/mp4")),
        (ftyp(b"3g2a", b"3g2a"), Sniffed("video", "video/mp4")),
        (ftyp(b"zzzz"), Sniffed("video", "video/mp4")),
        (ftyp(b"qt  ", b"qt  "), Sniffed("video", "video/quicktime")),
        (ebml(b"webm"), Sniffed("video", "video/webm")),
        (ebml(b"matroska"), Sniffed("video", "video/x-matroska")),
        (b"RIFF\x00\x10\x00\x00AVI LIST" + b"\x00" * 48, Sniffed("video", "video/x-msvideo")),
    ],
    ids=lambda value: value.mime if isinstance(value, Sniffed) else "",
)
def test_sniff_tells_containers_by_their_header(head: bytes, expected: Sniffed) -> None:
    """HEIC/HEIF/AVIF brands are images; other ftyp brands, Matroska and AVI are videos."""
    assert sniff(head, "upload.bin") == expected


def test_sniff_names_matroska_by_extension_when_doc_type_is_not_in_the_head() -> None:
    """A Matroska head cut before its DocType falls back to the name: .webm or else Matroska."""
    head = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01"
    assert sniff(head, "clip.webm") == Sniffed("video", "video/webm")
    assert sniff(head, "clip.mkv") == Sniffed("video", "video/x-matroska")


def test_sniff_keeps_audio_in_mp4_a_plain_file() -> None:
    """An .m4a voice memo shares MP4's container but is a file, not a video."""
    assert sniff(ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "memo.m4a") == Sniffed(
        "file", "audio/mp4"
    )


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
            "x.svg",
            "image/svg+xml",
        ),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            "x.svg",
            "image/svg+xml",
        ),
        (b"<!doctype html><html><body>hi</body></html>", "page.html", "text/html"),
        (b"BM is how this note starts, and it is text", "notes.txt", "text/plain"),
        (b"\x00\x01\x02\x03", "photo.jpg", "image/jpeg"),
        (b"\x1f\x8b\x08\x00", "backup.tar.gz", "application/gzip"),
        (ftyp(b"crx ", b"crx ", b"isom"), "IMG_0001.CR3", "application/octet-stream"),
        (b"", "empty", "application/octet-stream"),
        (b"%PDF-1.7", "no-extension", "application/octet-stream"),
    ],
)
def test_sniff_calls_everything_else_a_file_named_by_its_extension(
    head: bytes, name: str, expected: str
) -> None:
    """SVG, HTML, text and unknown bytes are files (never images), typed by their names."""
    assert sniff(head, name) == Sniffed("file", expected)


# -- probe_image ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ORIENTED_FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_probe_reports_the_displayed_size(tmp_path: Path, fmt: str, orientation: int) -> None:
    """A stored 40x20 picture probes as 40x20 for orientations 1-4 and 20x40 for 5-8."""
    stored = Image.new("RGB", (40, 20))
    path = save_picture(tmp_path / "a.bin", stored, fmt=fmt, orientation=orientation)
    expected = (40, 20) if orientation <= 4 else (20, 40)
    assert probe_image(path) == ImageInfo(*expected, taken_at=None)


def test_probe_reads_capture_time_with_its_offset(tmp_path: Path) -> None:
    """DateTimeOriginal with OffsetTimeOriginal becomes that moment in UTC."""
    image = Image.new("RGB", (8, 8))
    east = save_picture(tmp_path / "e.jpg", image, taken="2024:07:01 12:00:00", offset="+02:00")
    west = save_picture(tmp_path / "w.jpg", image, taken="2024:07:01 12:00:00", offset="-05:30")
    assert probe_image(east).taken_at == datetime(2024, 7, 1, 10, 0, tzinfo=UTC)
    assert probe_image(west).taken_at == datetime(2024, 7, 1, 17, 30, tzinfo=UTC)


def test_probe_reads_capture_time_without_offset_as_local_time(tmp_path: Path) -> None:
    """DateTimeOriginal alone is this PC's local time (here UTC+9), converted to UTC."""
    path = save_picture(tmp_path / "a.jpg", Image.new("RGB", (8, 8)), taken="2024:07:01 12:00:00")
    code = (
        "import sys; from pathlib import Path; from lanpair.media import probe_image; "
        "print(probe_image(Path(sys.argv[1])).taken_at.isoformat())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        env={**os.environ, "TZ": "XYZ-9"},  # POSIX TZ: nine hours east of UTC, no DST
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "2024-07-01T03:00:00+00:00"


@pytest.mark.parametrize("taken", ["0000:00:00 00:00:00", "    :  :     :  :  ", "yesterday"])
def test_probe_ignores_a_capture_time_that_is_not_a_time(tmp_path: Path, taken: str) -> None:
    """A blank or nonsense DateTimeOriginal gives no capture time, not an error."""
    path = save_picture(tmp_path / "a.jpg", Image.new("RGB", (8, 8)), taken=taken)
    assert probe_image(path) == ImageInfo(8, 8, taken_at=None)


def test_probe_reads_png_without_decoding_it(tmp_path: Path) -> None:
    """A PNG probes from its header: a file cut inside the pixel data still tells its size."""
    path = tmp_path / "a.png"
    photo(300, 200).save(path, "PNG")
    path.write_bytes(path.read_bytes()[:2000])
    assert probe_image(path) == ImageInfo(300, 200, taken_at=None)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jpg", b""),
        ("random.jpg", os.urandom(5000)),
        ("cut-header.jpg", None),
        ("bomb.png", header_only_png(50_000, 50_000)),
        ("nearly-bomb.png", header_only_png(12_000, 10_000)),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
    ],
)
def test_probe_refuses_what_it_cannot_read(
    tmp_path: Path, name: str, content: bytes | None
) -> None:
    """Empty, random, header-truncated, too-many-pixel and SVG files raise MediaError."""
    path = tmp_path / name
    if content is None:
        save_picture(path, photo(64, 64), taken="2024:07:01 12:00:00")
        content = path.read_bytes()[:120]
    path.write_bytes(content)
    with pytest.raises(MediaError):
        probe_image(path)


def test_media_error_speaks_to_the_user() -> None:
    """MediaError is a LanpairError with code "media" and a sentence for a person."""
    error = MediaError()
    assert error.code == "media"
    assert error.message == "This file could not be read as a photo or video."


# -- make_thumbnail -------------------------------------------------------------------------


def test_thumbnail_of_a_12_megapixel_photo_fits_400px(tmp_path: Path) -> None:
    """A 4000x3000 JPEG becomes a 400x300 WebP, returned size and file agreeing."""
    src = save_picture(tmp_path / "big.jpg", photo(4000, 3000), quality=90)
    dst = tmp_path / "big.webp"
    assert make_thumbnail(src, dst) == (400, 300)
    with Image.open(dst) as thumb:
        assert (thumb.format, thumb.size, thumb.mode) == ("WEBP", (400, 300), "RGB")


def test_thumbnail_of_a_rotated_portrait_is_portrait(tmp_path: Path) -> None:
    """A 4000x3000 JPEG tagged orientation 6 becomes 300x400, matching what probe says."""
    src = save_picture(tmp_path / "p.jpg", photo(4000, 3000), orientation=6)
    assert make_thumbnail(src, tmp_path / "p.webp", px=400) == (300, 400)
    assert probe_image(src) == ImageInfo(3000, 4000, taken_at=None)


@pytest.mark.parametrize("fmt", ORIENTED_FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_thumbnail_is_upright_for_every_orientation(
    tmp_path: Path, fmt: str, orientation: int
) -> None:
    """A red top-left corner stored under any EXIF orientation comes out top-left."""
    upright = Image.new("RGB", (120, 80), BLUE)
    ImageDraw.Draw(upright).rectangle((0, 0, 29, 29), fill=RED)
    inverse = STORED[orientation]
    stored = upright if inverse is None else upright.transpose(inverse)
    src = save_picture(tmp_path / "o.bin", stored, fmt=fmt, orientation=orientation)
    dst = tmp_path / "o.webp"
    assert make_thumbnail(src, dst, px=60) == (60, 40)
    with Image.open(dst) as thumb:
        assert is_near(rgb_at(thumb, (2, 2)), RED)
        assert is_near(rgb_at(thumb, (57, 37)), BLUE)


def test_thumbnail_lays_transparency_on_white(tmp_path: Path) -> None:
    """A PNG with alpha is flattened: transparent pixels turn white, opaque ones keep colour."""
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((50, 0, 99, 99), fill=(*BLUE, 255))
    src = tmp_path / "a.png"
    image.save(src)
    dst = tmp_path / "a.webp"
    assert make_thumbnail(src, dst, px=50) == (50, 50)
    with Image.open(dst) as thumb:
        assert thumb.mode == "RGB"
        assert is_near(rgb_at(thumb, (5, 25)), WHITE)
        assert is_near(rgb_at(thumb, (45, 25)), BLUE)


@pytest.mark.parametrize(
    ("pillow_format", "mode"),
    [
        ("PNG", "RGB"),
        ("PNG", "I;16"),
        ("PNG", "1"),
        ("GIF", "P"),
        ("WEBP", "RGBA"),
        ("BMP", "RGB"),
        ("TIFF", "CMYK"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
    ],
)
def test_thumbnail_reads_every_picture_format(
    tmp_path: Path, pillow_format: str, mode: str
) -> None:
    """Each format and pixel mode a phone or PC may hold turns into an RGB WebP thumbnail."""
    src = tmp_path / "a.bin"
    image = photo(1000, 500).convert("L" if mode.startswith("I") else "RGB").convert(mode)
    image.save(src, pillow_format)
    dst = tmp_path / "a.webp"
    assert make_thumbnail(src, dst, px=100) == (100, 50)
    with Image.open(dst) as thumb:
        assert (thumb.format, thumb.mode) == ("WEBP", "RGB")


def test_thumbnail_reads_avif(tmp_path: Path) -> None:
    """An AVIF picture turns into a WebP thumbnail."""
    if not features.check("avif"):
        skip_or_fail("this Pillow was built without AVIF")
    src = tmp_path / "a.avif"
    photo(600, 300).save(src, "AVIF")
    assert make_thumbnail(src, tmp_path / "a.webp", px=100) == (100, 50)


def test_thumbnail_never_enlarges(tmp_path: Path) -> None:
    """A picture smaller than the thumbnail size keeps its own size."""
    src = save_picture(tmp_path / "small.jpg", photo(120, 90))
    assert make_thumbnail(src, tmp_path / "small.webp") == (120, 90)


def test_thumbnail_replaces_an_older_one_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Writing over an existing thumbnail swaps it whole; only src and dst are left."""
    src = save_picture(tmp_path / "a.jpg", photo(800, 600))
    dst = tmp_path / "a.webp"
    dst.write_bytes(b"old")
    assert make_thumbnail(src, dst, px=80) == (80, 60)
    assert dst.read_bytes()[:4] == b"RIFF"
    assert files_in(tmp_path) == ["a.jpg", "a.webp"]


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "case", ["truncated", "random", "empty", "bomb", "nearly-bomb", "svg", "missing"]
)
def test_thumbnail_refuses_bad_input_quickly_and_writes_nothing(tmp_path: Path, case: str) -> None:
    """Truncated, random, empty, bomb, SVG and missing sources raise MediaError; dst untouched."""
    src = tmp_path / "src.jpg"
    if case == "truncated":
        save_picture(src, photo(1600, 1200), quality=90)
        src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif case == "random":
        src.write_bytes(os.urandom(100_000))
    elif case == "empty":
        src.write_bytes(b"")
    elif case == "bomb":
        src.write_bytes(header_only_png(50_000, 50_000))
    elif case == "nearly-bomb":
        src.write_bytes(header_only_png(12_000, 10_000))
    elif case == "svg":
        src.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    before = files_in(tmp_path)
    with pytest.raises(MediaError):
        make_thumbnail(src, tmp_path / "dst.webp")
    assert files_in(tmp_path) == before


def test_thumbnail_of_heic_without_pillow_heif_says_what_to_install(tmp_path: Path) -> None:
    """Without pillow_heif, a HEIC file raises MediaError naming the lanpair[heif] extra."""
    src = tmp_path / "IMG_0001.HEIC"
    src.write_bytes(ftyp(b"heic", b"mif1", b"heic") + b"\x00" * 200)
    with pytest.raises(MediaError) as raised:
        make_thumbnail(src, tmp_path / "dst.webp")
    if importlib.util.find_spec("pillow_heif") is None:
        assert "pip install 'lanpair[heif]'" in raised.value.message
    assert files_in(tmp_path) == ["IMG_0001.HEIC"]


@pytest.mark.parametrize("px", [0, -1, 16384])
def test_thumbnail_refuses_a_size_webp_cannot_hold(tmp_path: Path, px: int) -> None:
    """A thumbnail size outside 1..16383 is a programming error: ValueError."""
    src = save_picture(tmp_path / "a.jpg", photo(40, 30))
    with pytest.raises(ValueError, match="px"):
        make_thumbnail(src, tmp_path / "a.webp", px=px)


# -- videos ---------------------------------------------------------------------------------


@pytest.fixture
def ffmpeg() -> str:
    """Return ffmpeg's path, or skip (fail under CI) without it."""
    found = shutil.which("ffmpeg")
    if found is None:
        skip_or_fail("ffmpeg is not installed (apt-get install ffmpeg)")
    return found


def make_video(ffmpeg: str, path: Path, *, seconds: float, size: str = "320x240") -> Path:
    """Encode a test-pattern video (MPEG-4 part 2: every ffmpeg build has that encoder)."""
    source = f"testsrc=duration={seconds}:size={size}:rate=10"
    encode = ("-c:v", "mpeg4", "-pix_fmt", "yuv420p")
    args = [ffmpeg, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", source, *encode]
    subprocess.run([*args, str(path)], check=True, timeout=60)
    return path


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mov", "clip.avi", "clip.mkv"])
def test_poster_is_a_webp_frame_fitted_to_px(tmp_path: Path, ffmpeg: str, name: str) -> None:
    """A 2 s 320x240 MP4, MOV, AVI or Matroska video gives a 200x150 WebP poster."""
    src = make_video(ffmpeg, tmp_path / name, seconds=2)
    assert sniff(src.read_bytes()[:64], src.name).kind == "video"
    dst = tmp_path / "poster.webp"
    assert video_poster(src, dst, px=200) == (200, 150)
    with Image.open(dst) as poster:
        assert (poster.format, poster.size) == ("WEBP", (200, 150))


def test_poster_of_a_clip_shorter_than_a_second_is_its_first_frame(
    tmp_path: Path, ffmpeg: str
) -> None:
    """A 0.5 s video still gets a poster; a small one is not enlarged."""
    src = make_video(ffmpeg, tmp_path / "short.mp4", seconds=0.5, size="160x120")
    assert video_poster(src, tmp_path / "poster.webp", px=400) == (160, 120)


@pytest.mark.parametrize("name", ["broken.mp4", "photo.jpg"])
def test_poster_refuses_what_is_not_a_readable_video(
    tmp_path: Path, ffmpeg: str, name: str
) -> None:
    """An MP4 header over garbage, or a picture, raises MediaError and writes nothing."""
    src = tmp_path / name
    if name.endswith(".mp4"):
        src.write_bytes(ftyp(b"isom", b"isom") + os.urandom(20_000))
    else:
        save_picture(src, photo(64, 48))
    with pytest.raises(MediaError):
        video_poster(src, tmp_path / "poster.webp")
    assert files_in(tmp_path) == [name]


def test_duration_of_a_two_second_video(tmp_path: Path, ffmpeg: str) -> None:
    """ffprobe reports a 2 s video as about 2 seconds."""
    if shutil.which("ffprobe") is None:
        skip_or_fail("ffprobe is not installed (apt-get install ffmpeg)")
    src = make_video(ffmpeg, tmp_path / "clip.mp4", seconds=2)
    duration = video_duration(src)
    assert duration is not None
    assert duration == pytest.approx(2.0, abs=0.15)


def test_duration_refuses_a_broken_video(tmp_path: Path) -> None:
    """ffprobe failing on garbage behind an MP4 header raises MediaError."""
    if shutil.which("ffprobe") is None:
        skip_or_fail("ffprobe is not installed (apt-get install ffmpeg)")
    src = tmp_path / "broken.mp4"
    src.write_bytes(ftyp(b"isom", b"isom") + os.urandom(20_000))
    with pytest.raises(MediaError):
        video_duration(src)


def test_video_tools_missing_from_path_give_none(tmp_path: Path) -> None:
    """Without ffmpeg and ffprobe on the search path, poster and duration are None, no file."""
    nowhere = tmp_path / "empty-bin"
    nowhere.mkdir()
    src = tmp_path / "clip.mp4"
    src.write_bytes(ftyp(b"isom", b"isom") + b"\x00" * 100)
    assert video_poster(src, tmp_path / "poster.webp", search_path=str(nowhere)) is None
    assert video_duration(src, search_path=str(nowhere)) is None
    assert files_in(tmp_path) == ["clip.mp4", "empty-bin"]
