"""Tests of ``pixfleet.sniff``: signatures, header sizes, truncation, bombs, arbitrary bytes."""

from __future__ import annotations

import contextlib
import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixfleet.sniff import (
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    check_complete,
    inspect_image,
    sniff,
)

W, H = 37, 23  # odd and not square, so swapped or rounded sides show
LIMITS = {"max_pixels": 64_000_000, "max_side": 65_535}
PNG_SIG = b"\x89PNG\r\n\x1a\n"
ERRORS = (NotAnImageError, CorruptImageError, ImageTooLargeError)


def _rgb(w: int = W, h: int = H) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pil(fmt: str, mode: str = "RGB", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb()).convert(mode).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _cv(ext: str, image: np.ndarray | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, _rgb() if image is None else image)
    assert ok
    return buf.tobytes()


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(np.full((H, W, 3), v, np.uint8)) for v in (0, 90, 180)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_by_hand(w: int, h: int, idat: bytes = zlib.compress(b"\0\0\0\0")) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        PNG_SIG + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )


def _tiff_by_hand(order: str, w: int, h: int, *, ifd: int = 8, following: int = 0) -> bytes:
    """A TIFF header and one IFD with ImageWidth (LONG) and ImageLength (SHORT)."""
    o = "<" if order == "II" else ">"
    magic = b"II*\0" if order == "II" else b"MM\0*"
    entries = struct.pack(o + "HHII", 256, 4, 1, w) + struct.pack(o + "HHIH2x", 257, 3, 1, h)
    return (
        magic
        + struct.pack(o + "I", ifd)
        + struct.pack(o + "H", 2)
        + entries
        + struct.pack(o + "I", following)
    )


def _fits_hdu(cards: list[tuple[str, object]], data_bytes: int = 0) -> bytes:
    text = b"".join(
        (f"{k:<8}= {v!s:>20}" if v is not None else k).ljust(80).encode() for k, v in cards
    )
    text += b"END".ljust(80)
    text += b" " * (-len(text) % 2880)
    return text + b"\0" * (data_bytes + -data_bytes % 2880)


def _bmp_core() -> bytes:
    row = b"\0" * (-(-W * 3 // 4) * 4)
    header = struct.pack("<IHHHH", 12, W, H, 1, 24)
    return b"BM" + struct.pack("<IHHI", 26 + len(row) * H, 0, 0, 26) + header + row * H


def _negative_height_bmp() -> bytes:
    data = bytearray(_pil("BMP"))
    data[22:26] = struct.pack("<i", -H)
    return bytes(data)


SAMPLES: dict[str, tuple[Callable[[], bytes], str, int | None]] = {
    "jpeg": (lambda: _pil("JPEG"), "image/jpeg", 1),
    "jpeg-progressive": (lambda: _pil("JPEG", progressive=True), "image/jpeg", 1),
    "jpeg-gray": (lambda: _pil("JPEG", "L"), "image/jpeg", 1),
    "jpeg-cmyk": (lambda: _pil("JPEG", "CMYK"), "image/jpeg", 1),
    "jpeg-cv": (lambda: _cv(".jpg"), "image/jpeg", 1),
    "png": (lambda: _pil("PNG"), "image/png", 1),
    "png-rgba": (lambda: _pil("PNG", "RGBA"), "image/png", 1),
    "png-palette": (lambda: _pil("PNG", "P"), "image/png", 1),
    "png-16": (lambda: _cv(".png", _rgb().astype(np.uint16) * 257), "image/png", 1),
    "apng": (lambda: _animated("PNG"), "image/png", 3),
    "webp-lossy": (lambda: _pil("WEBP"), "image/webp", 1),
    "webp-lossless": (lambda: _pil("WEBP", lossless=True), "image/webp", 1),
    "webp-alpha": (lambda: _pil("WEBP", "RGBA"), "image/webp", 1),
    "webp-animated": (lambda: _animated("WEBP"), "image/webp", 3),
    "webp-cv": (lambda: _cv(".webp"), "image/webp", 1),
    "gif": (lambda: _pil("GIF"), "image/gif", None),
    "gif-cv": (lambda: _cv(".gif"), "image/gif", None),
    "bmp": (lambda: _pil("BMP"), "image/bmp", 1),
    "bmp-top-down": (_negative_height_bmp, "image/bmp", 1),
    "bmp-core": (_bmp_core, "image/bmp", 1),
    "bmp-cv": (lambda: _cv(".bmp"), "image/bmp", 1),
    "tiff": (lambda: _pil("TIFF"), "image/tiff", 1),
    "tiff-cv": (lambda: _cv(".tiff"), "image/tiff", 1),
    "tiff-big": (lambda: _pil("TIFF", big_tiff=True), "image/tiff", 1),
    "tiff-pages": (lambda: _animated("TIFF"), "image/tiff", 3),
    "tiff-le-by-hand": (lambda: _tiff_by_hand("II", W, H), "image/tiff", 1),
    "tiff-be-by-hand": (lambda: _tiff_by_hand("MM", W, H), "image/tiff", 1),
    "fits": (
        lambda: _fits_hdu(
            [("SIMPLE", "T"), ("BITPIX", 16), ("NAXIS", 2), ("NAXIS1", W), ("NAXIS2", H)],
            W * H * 2,
        ),
        "application/fits",
        1,
    ),
}


class Samples(dict[str, bytes]):
    """The sample files' bytes, with a short repr for hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} samples>"


@pytest.fixture(scope="module")
def samples() -> Samples:
    return Samples({name: make() for name, (make, _, _) in SAMPLES.items()})


def _write(tmp_path: Path, data: bytes, name: str = "img") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sniff_and_size(name: str, samples: dict[str, bytes], tmp_path: Path) -> None:
    _, media_type, frames = SAMPLES[name]
    path = _write(tmp_path, samples[name])
    assert sniff(samples[name][:32]) == media_type
    assert inspect_image(path, **LIMITS) == ImageInfo(media_type, W, H, frames)
    check_complete(path, media_type)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation(fmt: str, orientation: int, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    extra = {"tiffinfo": {274: orientation}} if fmt == "TIFF" else {"exif": exif.tobytes()}
    info = inspect_image(_write(tmp_path, _pil(fmt, **extra)), **LIMITS)
    assert (info.width, info.height, info.orientation) == (W, H, orientation)


def test_broken_exif_is_ignored(samples: dict[str, bytes], tmp_path: Path) -> None:
    jpeg = samples["jpeg"]
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 14) + b"Exif\0\0MM\0*\xff\xff\xff\xff"
    info = inspect_image(_write(tmp_path, jpeg[:2] + app1 + jpeg[2:]), **LIMITS)
    assert (info.width, info.height, info.orientation) == (W, H, 1)


def test_jpeg_fill_bytes_and_standalone_markers(samples: dict[str, bytes], tmp_path: Path) -> None:
    jpeg = samples["jpeg"]
    path = _write(tmp_path, jpeg[:2] + b"\xff\x01" + b"\xff\xff" + jpeg[2:])
    assert inspect_image(path, **LIMITS).width == W
    check_complete(path, "image/jpeg")


EMPTY_PRIMARY = [("SIMPLE", "T"), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", "T")]
TABLE = [("XTENSION", "'BINTABLE'"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 16), ("NAXIS2", 3)]
EXTENSION_COUNTS = [("PCOUNT", 0), ("GCOUNT", 1)]
CUBE = [("XTENSION", "'IMAGE   '"), ("BITPIX", -32), ("NAXIS", 3), ("NAXIS1", W), ("NAXIS2", H)]
TILES = [("ZIMAGE", "T"), ("ZNAXIS", 2), ("ZNAXIS1", 4000), ("ZNAXIS2", 3000)]


@pytest.mark.parametrize(
    ("cards", "expected"),
    [
        (  # empty primary HDU, a table, then a cube in an IMAGE extension
            [EMPTY_PRIMARY, TABLE + EXTENSION_COUNTS, [*CUBE, ("NAXIS3", 4), *EXTENSION_COUNTS]],
            (W, H, 4),
        ),
        ([EMPTY_PRIMARY, TABLE + EXTENSION_COUNTS + TILES], (4000, 3000, 1)),  # tile-compressed
        ([EMPTY_PRIMARY[:3]], (None, None, None)),  # no image at all
    ],
)
def test_fits_hdus(
    cards: list[list[tuple[str, object]]], expected: tuple[int | None, ...], tmp_path: Path
) -> None:
    data = b"".join(_fits_hdu(hdu, 48 if i == 1 else 0) for i, hdu in enumerate(cards))
    info = inspect_image(_write(tmp_path, data), **LIMITS)
    assert (info.media_type, info.width, info.height, info.frames) == (
        "application/fits",
        *expected,
    )


@pytest.mark.parametrize(
    "text",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        b"  \n\t<?xml version='1.0'?><svg/>",
        b"<!DOCTYPE html><html></html>",
        b"<HTML><body>hello</body></HTML>",
        b"\xef\xbb\xbf<svg/>",
        b"<!-- drawn by hand --><svg/>",
    ],
)
def test_markup_posing_as_image(text: bytes, tmp_path: Path) -> None:
    assert sniff(text) is None
    with pytest.raises(NotAnImageError, match="markup"):
        inspect_image(_write(tmp_path, text, "x.png"), **LIMITS)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty file"), (b"hello world", "unknown signature"), (b"BMW 320d" * 4, "unknown")],
)
def test_not_an_image(data: bytes, message: str, tmp_path: Path) -> None:
    with pytest.raises(NotAnImageError, match=message):
        inspect_image(_write(tmp_path, data), **LIMITS)


def test_limits(samples: dict[str, bytes], tmp_path: Path) -> None:
    path = _write(tmp_path, samples["png"])
    assert inspect_image(path, max_pixels=W * H, max_side=W).width == W
    with pytest.raises(ImageTooLargeError, match=f"{W}x{H}"):
        inspect_image(path, max_pixels=W * H - 1, max_side=W)
    with pytest.raises(ImageTooLargeError, match=f"{W - 1:,} pixels a side"):
        inspect_image(path, max_pixels=W * H, max_side=W - 1)


def test_png_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = _write(tmp_path, _png_by_hand(100_000, 100_000))
    check_complete(path, "image/png")  # well-formed: only its size is wrong
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match="100000x100000"):
            inspect_image(path, **LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_jpeg_bomb_is_refused_from_its_header(samples: dict[str, bytes], tmp_path: Path) -> None:
    data = bytearray(samples["jpeg"])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)
    with pytest.raises(ImageTooLargeError, match="60000x60000"):
        inspect_image(_write(tmp_path, bytes(data)), **LIMITS)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_tiff_by_hand("II", W, H, ifd=1 << 30), "outside the file"),
        (_tiff_by_hand("MM", W, H, ifd=4), "outside the file"),
        (b"II*\0\x08\0\0\0\xff\xff" + b"\0" * 64, "entries|truncated"),
        (_tiff_by_hand("II", 0, H), "size of 0x"),
        (_png_by_hand(W, H)[:29] + b"\0\0\0\0" + _png_by_hand(W, H)[33:], "checksum"),
        (b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 64, "scan before"),
        (b"\xff\xd8\xff\xe0\xff\xff" + b"\0" * 64, "cut or broken"),
        (b"RIFF\0\0\0\0WEBPVP8 \x10\0\0\0" + b"\0" * 16, "start code"),
    ],
)
def test_broken_headers(data: bytes, match: str, tmp_path: Path) -> None:
    with pytest.raises(CorruptImageError, match=match):
        inspect_image(_write(tmp_path, data), **LIMITS)


@pytest.mark.parametrize("following", [8, 10, 1 << 30])  # a loop, junk, outside the file
def test_broken_tiff_page_chain_leaves_frames_unknown(following: int, tmp_path: Path) -> None:
    info = inspect_image(_write(tmp_path, _tiff_by_hand("II", W, H, following=following)), **LIMITS)
    assert (info.width, info.height, info.frames) == (W, H, None)


def _inspect_and_check(path: Path) -> None:
    check_complete(path, inspect_image(path, **LIMITS).media_type)


@pytest.mark.parametrize("name", ["jpeg", "jpeg-progressive", "png", "png-rgba", "apng"])
@pytest.mark.parametrize("keep", [0.01, 0.1, 0.25, 0.5, 0.9, 0.99, -2, -1])
def test_truncated(name: str, keep: float, samples: dict[str, bytes], tmp_path: Path) -> None:
    data = samples[name]
    cut = max(len(data) + int(keep), 9) if keep < 0 else max(int(len(data) * keep), 9)
    path = _write(tmp_path, data[:cut])
    with pytest.raises(CorruptImageError):
        _inspect_and_check(path)
    _write(tmp_path, data[:cut] + b"\0" * 5000)  # a partial download, preallocated
    with pytest.raises(CorruptImageError):
        _inspect_and_check(path)


@pytest.mark.parametrize(
    ("name", "tail", "whole"),
    [
        ("jpeg", b"\0" * 100, True),
        ("jpeg", b"\0" * 5000, False),
        ("jpeg", b"junk", False),
        ("png", b"\0" * 100, True),
        ("png", b"\0" * 5000, False),
    ],
)
def test_padding_after_the_end(
    name: str, tail: bytes, whole: bool, samples: dict[str, bytes], tmp_path: Path
) -> None:
    path = _write(tmp_path, samples[name] + tail)
    if whole:
        _inspect_and_check(path)
    else:
        with pytest.raises(CorruptImageError):
            _inspect_and_check(path)


def test_png_without_image_data(tmp_path: Path) -> None:
    data = _png_by_hand(W, H)
    idat = data.index(b"IDAT") - 4
    path = _write(tmp_path, data[:idat] + _png_chunk(b"IEND", b""))
    with pytest.raises(CorruptImageError, match="no IDAT"):
        check_complete(path, "image/png")


def test_check_complete_ignores_other_formats(samples: dict[str, bytes], tmp_path: Path) -> None:
    check_complete(_write(tmp_path, samples["webp-lossy"][:30]), "image/webp")


# Arbitrary bytes: only the three errors, never a hang or another exception.

SEEDS = [
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe1\x00\x20Exif\0\0MM\0*\0\0\0\x08",
    PNG_SIG,
    PNG_SIG + b"\0\0\0\x0dIHDR",
    b"GIF89a",
    b"II*\0",
    b"MM\0*",
    b"II+\0\x08\0\0\0",
    b"RIFF\0\0\0\0WEBPVP8X",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"RIFF\0\0\0\0WEBPVP8L",
    b"BM\0\0\0\0\0\0\0\0\0\0\0\0\x28\0\0\0",
    b"SIMPLE  =                    T".ljust(80) + b"NAXIS   = ",
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "input"


def _only_our_errors(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    assert sniff(data) in {None, *(media for _, media, _ in SAMPLES.values())}
    try:
        info = inspect_image(path, max_pixels=10_000_000, max_side=10_000)
    except ERRORS:
        pass
    else:
        assert info.width is None or 0 < info.width <= 10_000
    for media_type in ("image/jpeg", "image/png"):
        with contextlib.suppress(CorruptImageError):
            check_complete(path, media_type)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(scratch: Path, data: bytes) -> None:
    _only_our_errors(scratch, data)


@FUZZ
@given(seed=st.sampled_from(SEEDS), rest=st.binary(max_size=4096))
def test_signature_then_arbitrary_bytes(scratch: Path, seed: bytes, rest: bytes) -> None:
    _only_our_errors(scratch, seed + rest)


@FUZZ
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    keep=st.integers(1, 1 << 20),
    edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
)
def test_mutated_images(
    scratch: Path, samples: dict[str, bytes], name: str, keep: int, edits: list[tuple[int, int]]
) -> None:
    original = samples[name]
    mutated = bytearray(original[: min(keep, len(original))])
    for at, value in edits:  # positions wrap around, so shrinking moves them to the start
        mutated[at % len(mutated)] = value
    _only_our_errors(scratch, bytes(mutated))
