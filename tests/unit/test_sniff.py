"""Tests of ``pixfleet.sniff``: signatures, header sizes, frames, truncation, bombs, trailing data
and polyglots, lying EXIF, real files, arbitrary bytes."""

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
from PIL import Image, PngImagePlugin

import pixfleet.sniff as sniff_module
from pixfleet.sniff import (
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    check_complete,
    inspect_image,
    sniff,
)
from tests import hostile
from tests.fetch_images import PINS
from tests.realimages import MULTI_FRAME, ZERO_BYTE, real_images

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
    "gif": (lambda: _pil("GIF"), "image/gif", 1),
    "gif-cv": (lambda: _cv(".gif"), "image/gif", 1),
    "gif-animated": (lambda: _animated("GIF"), "image/gif", 3),
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
    "avif": (lambda: _pil("AVIF"), "image/avif", 1),
    "avif-cv": (lambda: _cv(".avif"), "image/avif", 1),
    "avif-sequence": (lambda: _animated("AVIF"), "image/avif", 3),
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
    ("text", "what"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG document"),
        (b"  \n\t<?xml version='1.0'?><svg/>", "an SVG document"),
        (b"<!DOCTYPE html><html></html>", "an HTML document"),
        (b"<HTML><body>hello</body></HTML>", "an HTML document"),
        (b"\xef\xbb\xbf<svg/>", "an SVG document"),
        (b"\xef\xbb\xbf \r\n<!DOCTYPE html>", "an HTML document"),
        ("\ufeff<svg/>".encode("utf-16-le"), "an SVG document"),
        (b"<!-- drawn by hand --><svg/>", "an SVG document"),
        (b'<?xml version="1.0"?><rss/>', "an XML document"),
        (b"<note>hi</note>", "markup"),
        (hostile.svg(bom=True, leading="\n  "), "an SVG document"),
        (hostile.html(), "an HTML document"),
        (hostile.xml(), "an XML document"),
    ],
)
def test_markup_posing_as_image(text: bytes, what: str, tmp_path: Path) -> None:
    assert sniff(text) is None
    with pytest.raises(NotAnImageError, match=f"looks like {what}"):
        inspect_image(_write(tmp_path, text, "x.png"), **LIMITS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"hello world", "plain text"),
        (b"BMW 320d" * 4, "plain text"),
        (bytes(range(256)), "unknown signature 00 01 02"),
        (hostile.wrong_magic(), "unknown signature 88 50 4e 47"),
        (hostile.pdf(), "a PDF document"),
        (hostile.zip_archive(), "a ZIP archive"),
        (hostile.elf(), "an ELF executable"),
        (hostile.windows_exe(), "a Windows executable"),
        (b"#!/bin/sh\nrm -rf /\n", "a script"),
        (hostile.heic(), "a HEIF image"),
        (b"\0\0\0\x18ftypisom\0\0\0\0isommp41" + bytes(32), "an MP4"),
    ],
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
        (b"\xff\xd8\xff\xe0\xff\xff" + b"\0" * 64, "cut: truncated"),
        (b"\xff\xd8\xff\xe0\x00\x01" + b"\0" * 64, "is broken"),
        (b"RIFF\0\0\0\0WEBPVP8 \x10\0\0\0" + b"\0" * 16, "start code"),
    ],
)
def test_broken_headers(data: bytes, match: str, tmp_path: Path) -> None:
    with pytest.raises(CorruptImageError, match=match):
        inspect_image(_write(tmp_path, data), **LIMITS)


@pytest.mark.parametrize(
    ("following", "match"),
    [(8, "loops back to byte 8"), (10, "truncated|outside"), (1 << 30, "outside the file")],
)
def test_broken_tiff_page_chain_is_corrupt(following: int, match: str, tmp_path: Path) -> None:
    path = _write(tmp_path, _tiff_by_hand("II", W, H, following=following))
    with pytest.raises(CorruptImageError, match=match):
        inspect_image(path, **LIMITS)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (hostile.tiff_bogus_ifd_offset(), CorruptImageError, "outside the file"),
        (hostile.tiff_ifd_loop(), CorruptImageError, "loops"),
        (hostile.tiff_compression(50000), NotAnImageError, "compression 50000"),
        (hostile.tiff_compression(34925), NotAnImageError, "compression 34925"),
    ],
)
def test_hostile_tiffs(data: bytes, error: type[Exception], match: str, tmp_path: Path) -> None:
    with pytest.raises(error, match=match):
        inspect_image(_write(tmp_path, data), **LIMITS)


@pytest.mark.parametrize(
    ("compression", "mode"),
    [("tiff_lzw", "RGB"), ("tiff_adobe_deflate", "RGB"), ("packbits", "RGB"), ("jpeg", "RGB"),
     ("group4", "1")],
)  # fmt: skip
def test_tiff_compressions_opencv_decodes(compression: str, mode: str, tmp_path: Path) -> None:
    path = _write(tmp_path, _pil("TIFF", mode, compression=compression))
    assert inspect_image(path, **LIMITS) == ImageInfo("image/tiff", W, H, 1)


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


def test_png_without_image_data(tmp_path: Path) -> None:
    data = _png_by_hand(W, H)
    idat = data.index(b"IDAT") - 4
    path = _write(tmp_path, data[:idat] + _png_chunk(b"IEND", b""))
    with pytest.raises(CorruptImageError, match="no IDAT"):
        check_complete(path, "image/png")


@pytest.mark.parametrize(
    "name", ["gif-animated", "webp-animated", "avif-sequence", "jpeg-cmyk", "png-16", "fits"]
)
def test_check_complete_of_truncated_files(
    name: str, samples: dict[str, bytes], tmp_path: Path
) -> None:
    data = samples[name]
    path = _write(tmp_path, data[: len(data) - 40])
    if name == "fits":  # no end marker: not checked
        check_complete(path, "application/fits")
        return
    with pytest.raises(CorruptImageError, match=r"truncated|runs past|cut"):
        _inspect_and_check(path)


@pytest.mark.parametrize("name", ["bmp", "tiff", "tiff-pages", "fits"])
def test_check_complete_ignores_formats_without_an_end(
    name: str, samples: dict[str, bytes], tmp_path: Path
) -> None:
    _, media_type, _ = SAMPLES[name]
    check_complete(_write(tmp_path, samples[name] + hostile.zip_archive()), media_type)


# Frames


@pytest.mark.parametrize(
    "name", ["apng", "webp-animated", "gif-animated", "tiff-pages", "avif-sequence"]
)
def test_frame_limit(name: str, samples: dict[str, bytes], tmp_path: Path) -> None:
    path = _write(tmp_path, samples[name])
    assert inspect_image(path, **LIMITS, max_frames=3).frames == 3
    with pytest.raises(ImageTooLargeError, match="has 3 frames, at most 2"):
        inspect_image(path, **LIMITS, max_frames=2)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF", "AVIF"])
def test_many_frames_are_counted(fmt: str, tmp_path: Path) -> None:
    path = _write(tmp_path, hostile.animated(fmt, 40, 16, 12))
    assert inspect_image(path, **LIMITS).frames == 40
    with pytest.raises(ImageTooLargeError, match="40 frames, at most 39"):
        inspect_image(path, **LIMITS, max_frames=39)


def _gif_by_hand(
    screen: tuple[int, int] = (10, 10),
    frames: tuple[tuple[int, int, int, int], ...] = ((0, 0, 10, 10),),
    data: bytes = b"\x02\x4c\x01",
    comment: bytes | None = None,
) -> bytes:
    """A GIF without colour tables: (left, top, width, height) frames, each with ``data``."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    if comment is not None:
        out += (
            b"\x21\xfe"
            + b"".join(
                bytes([len(comment[i : i + 255])]) + comment[i : i + 255]
                for i in range(0, len(comment), 255)
            )
            + b"\0"
        )
    for left, top, w, h in frames:
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # a graphic control extension
        out += b"\x2c" + struct.pack("<HHHHB", left, top, w, h, 0) + b"\x02" + data + b"\0"
    return out + b"\x3b"


def test_gif_frame_beyond_the_screen_widens_the_size(tmp_path: Path) -> None:
    path = _write(tmp_path, _gif_by_hand(frames=((0, 0, 10, 10), (5000, 30, 100, 70))))
    assert inspect_image(path, **LIMITS) == ImageInfo("image/gif", 5100, 100, 2)
    with pytest.raises(ImageTooLargeError, match="5100x100"):
        inspect_image(path, max_pixels=100_000, max_side=65_535)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_gif_by_hand(frames=()), "no image"),
        (_gif_by_hand()[:-1] + b"\x99", "unknown block 0x99"),
        (_gif_by_hand()[:-3], "truncated"),
        (b"GIF89a\x0a\x00\x0a\x00\x87\x00\x00" + bytes(100), "truncated"),  # a cut colour table
    ],
)
def test_broken_gifs(data: bytes, match: str, tmp_path: Path) -> None:
    with pytest.raises(CorruptImageError, match=match):
        inspect_image(_write(tmp_path, data), **LIMITS)


def test_walks_stop_at_the_frame_bound(
    samples: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sniff_module, "_MAX_FRAMES", 2)
    with pytest.raises(ImageTooLargeError, match="more than 2 frames"):
        inspect_image(_write(tmp_path, samples["gif-animated"]), **LIMITS)
    with pytest.raises(ImageTooLargeError, match="more than 2 pages"):
        inspect_image(_write(tmp_path, samples["tiff-pages"]), **LIMITS)


def test_gif_of_tiny_sub_blocks_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoders write 255-byte sub-blocks; millions of 1-byte ones would take seconds to walk."""
    data = _gif_by_hand(data=b"\x01\x00" * 20_000)
    _inspect_and_check(_write(tmp_path, data))
    monkeypatch.setattr(sniff_module, "_MAX_FRAMES", 1000)  # the budget is size / 128 + 6 x this
    with pytest.raises(CorruptImageError, match="sub-blocks"):
        inspect_image(_write(tmp_path, data), **LIMITS)


# AVIF


def _box(btype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + btype + payload


def _full_box(btype: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return _box(btype, bytes([version]) + flags.to_bytes(3, "big") + payload)


def _avif_by_hand(
    extents: tuple[tuple[int, int], ...] = ((W, H),),
    associations: dict[int, list[int]] | None = None,
    primary: int = 1,
    ftyp: bytes = b"avif\0\0\0\0avifmif1miaf",
    ipma: bytes | None = None,
) -> bytes:
    """An AVIF's boxes (the mdat holds no real AV1): ``ispe`` per extents, ``ipma`` per
    associations of item ids to 1-based property indexes."""
    ipco = _box(b"ipco", b"".join(_full_box(b"ispe", struct.pack(">II", *e)) for e in extents))
    associations = associations if associations is not None else {1: [1]}
    if ipma is None:
        entries = b"".join(
            struct.pack(">HB", item, len(props)) + bytes(props)
            for item, props in associations.items()
        )
        ipma = _full_box(b"ipma", struct.pack(">I", len(associations)) + entries)
    meta = _full_box(
        b"meta",
        _full_box(b"hdlr", b"\0" * 4 + b"pict" + b"\0" * 13)
        + _full_box(b"pitm", struct.pack(">H", primary))
        + _box(b"iprp", ipco + ipma),
    )
    return _box(b"ftyp", ftyp) + meta + _box(b"mdat", b"\0" * 32)


@pytest.mark.parametrize(
    ("avif", "size"),
    [
        (_avif_by_hand(), (W, H)),
        (_avif_by_hand(((W, H), (4000, 3000)), {1: [1], 2: [2]}), (W, H)),  # + a bigger item
        (_avif_by_hand(((160, 120), (W, H)), {2: [1], 1: [0x82]}), (W, H)),  # essential bit
        (_avif_by_hand(((W, H), (4000, 3000)), {1: [1], 2: [2]}, primary=2), (4000, 3000)),
        (_avif_by_hand(((W, H), (4000, 3000)), {}, primary=7), (4000, 3000)),  # unknown: largest
        (_avif_by_hand(((W, H), (80, 60)), ipma=_full_box(b"ipma", b"\0\0\0\x09\0")), (80, 60)),
        (_avif_by_hand(ftyp=b"mif1\0\0\0\0mif1MA1B"), (W, H)),
    ],
)
def test_avif_size_of_the_primary_item(avif: bytes, size: tuple[int, int], tmp_path: Path) -> None:
    path = _write(tmp_path, avif)
    assert inspect_image(path, **LIMITS) == ImageInfo("image/avif", *size, 1)
    check_complete(path, "image/avif")


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (_avif_by_hand(((100_000, 100_000),)), ImageTooLargeError, "100000x100000"),
        (_avif_by_hand(()), CorruptImageError, "no image spatial extents"),
        (
            _box(b"ftyp", b"avif\0\0\0\0avif") + _box(b"mdat", b"\0" * 8),
            CorruptImageError,
            "no meta",
        ),
        (_avif_by_hand()[:-8], CorruptImageError, "truncated"),
        (_avif_by_hand(ftyp=b"mif1\0\0\0\0mif1heic"), NotAnImageError, "a HEIF image"),
    ],
)
def test_broken_avifs(data: bytes, error: type[Exception], match: str, tmp_path: Path) -> None:
    with pytest.raises(error, match=match):
        inspect_image(_write(tmp_path, data), **LIMITS)


# Trailing data and polyglots

ENDED = [
    "jpeg", "jpeg-progressive", "png", "apng", "gif", "gif-animated", "webp-lossy",
    "webp-animated", "avif", "avif-sequence",
]  # fmt: skip


@pytest.mark.parametrize("name", ENDED)
@pytest.mark.parametrize("tail", [b"\0" * 100, b"\r\n", b" " * 4096, b"\0\n" * 2048])
def test_padding_after_the_end_is_accepted(
    name: str, tail: bytes, samples: dict[str, bytes], tmp_path: Path
) -> None:
    _inspect_and_check(_write(tmp_path, samples[name] + tail))


@pytest.mark.parametrize("name", ENDED)
@pytest.mark.parametrize(
    ("tail", "match"),
    [
        (b"\0" * 5000, "5,000 bytes after"),
        (b"junk", "looking like plain text"),
        (hostile.zip_archive(), "looking like a ZIP archive"),
        (b"\n" + hostile.html(), "looking like an HTML document"),
        (hostile.svg(), "looking like an SVG document"),
        (hostile.pdf(), "looking like a PDF document"),
        (hostile.jpeg(), r"looking like another image \(image/jpeg\)"),
        (bytes(range(256)) * 20, "bytes after the"),
    ],
)
def test_data_after_the_end_is_refused(
    name: str, tail: bytes, match: str, samples: dict[str, bytes], tmp_path: Path
) -> None:
    path = _write(tmp_path, samples[name] + tail)
    inspect_image(path, **LIMITS)  # the headers are fine: the whole file is not
    with pytest.raises(CorruptImageError, match=match):
        check_complete(path, SAMPLES[name][1])


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", 2 + len(payload)) + payload


def _png_with(chunk: bytes, data: bytes) -> bytes:
    at = data.index(b"IDAT") - 4
    return data[:at] + chunk + data[at:]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (hostile.jpeg_script_comment(), "FFFE segment at byte 2"),
        (_jpeg_segment(0xE5, b"<HTML><body>hi") + b"", "FFE5 segment"),
        (_png_with(_png_chunk(b"tEXt", b"Comment\0<script>x</script>"), hostile.png()), "tEXt"),
        (
            _png_with(_png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"<svg onload=x>")),
             hostile.png()),
            "zTXt",
        ),
        (
            _png_with(_png_chunk(b"iTXt", b"Comment\0\1\0en\0\0" + zlib.compress(b"<?php x")),
             hostile.png()),
            "iTXt",
        ),
        (_gif_by_hand(comment=b"x" * 300 + b"<iframe src=//evil>"), "GIF: a comment"),
    ],
)  # fmt: skip
def test_markup_inside_an_image_is_refused(data: bytes, where: str, tmp_path: Path) -> None:
    if data.startswith(b"\xff\xe5"):  # the APP5 segment goes after SOI
        data = hostile.jpeg()[:2] + data + hostile.jpeg()[2:]
    path = _write(tmp_path, data)
    with pytest.raises(CorruptImageError, match=f"{where}.*holds markup"):
        _inspect_and_check(path)


def test_harmless_text_inside_an_image_is_accepted(tmp_path: Path) -> None:
    xmp = (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
    )
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a < b, <3")
    info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=True)
    for data in (
        _pil("JPEG", xmp=xmp, comment=b"a < b, <3 <b>bold</b>"),
        _pil("PNG", pnginfo=info),
        _gif_by_hand(comment=b"made with <3 and <b>bold</b>"),
    ):
        _inspect_and_check(_write(tmp_path, data))


def test_jpeg_mpf_images_may_follow(tmp_path: Path) -> None:
    """MPO files and gain-map JPEGs (Ultra HDR) list further JPEGs in an APP2 MPF segment."""
    primary = hostile.jpeg()
    mpf = primary[:2] + _jpeg_segment(0xE2, b"MPF\0MM\0*\0\0\0\x08\0\0") + primary[2:]
    _inspect_and_check(_write(tmp_path, mpf + hostile.jpeg()))
    _inspect_and_check(_write(tmp_path, mpf + hostile.jpeg() + hostile.jpeg() + b"\0" * 8))
    with pytest.raises(CorruptImageError, match="ZIP archive"):
        _inspect_and_check(_write(tmp_path, mpf + hostile.jpeg() + hostile.zip_archive()))
    with pytest.raises(CorruptImageError, match="another image"):  # no MPF: a polyglot
        _inspect_and_check(_write(tmp_path, primary + hostile.jpeg()))


def test_jpeg_end_found_past_markers_between_scans(
    samples: dict[str, bytes], tmp_path: Path
) -> None:
    """A COM segment between progressive scans may hold FF D9: its length skips it."""
    data = samples["jpeg-progressive"]
    second = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    comment = _jpeg_segment(0xFE, b"\xff\xd9 not the end")
    _inspect_and_check(_write(tmp_path, data[:second] + comment + data[second:]))


# EXIF that lies: never a crash or an allocation, orientation falls back to 1


@pytest.mark.parametrize(
    ("data", "orientation"),
    [
        (hostile.exif_orientation(0), 1),
        (hostile.exif_orientation(9), 1),
        (hostile.exif_orientation(65535), 1),
        (hostile.exif_orientation(6, kind=hostile.ASCII, count=2), 1),
        (hostile.exif_orientation(6, kind=hostile.RATIONAL), 1),
        (hostile.exif_orientation(6, count=2), 1),
        (hostile.exif_orientation(6, kind=hostile.LONG), 6),  # LONG is tolerated, as readers do
        (hostile.exif_huge_tag(), 6),
        (hostile.exif_too_many_entries(), 1),
        (hostile.exif_ifd_loop(), 3),
        (_png_with(_png_chunk(b"eXIf", hostile.exif_block([(0x112, 3, 1, hostile.short(0))])),
         hostile.png()), 1),
        (_png_with(_png_chunk(b"eXIf", b"MM\0*\xff\xff\xff\xf0"), hostile.png()), 1),
    ],
)  # fmt: skip
def test_lying_exif(data: bytes, orientation: int, tmp_path: Path) -> None:
    path = _write(tmp_path, data)
    tracemalloc.start()
    try:
        info = inspect_image(path, **LIMITS)
        check_complete(path, info.media_type)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (info.width, info.height, info.orientation) == (hostile.W, hostile.H, orientation)
    assert peak < 1_000_000


# Real files from cameras and libraries pass whole


PAGES = {**MULTI_FRAME, "scikit-image/multipage_rgb.tif": 2}  # Pillow cannot count this one


def test_real_files_pass() -> None:
    root = real_images()
    for pin in PINS:
        for name in pin.files:
            rel = f"{pin.package}/{name}"
            if rel == ZERO_BYTE:
                continue
            info = inspect_image(root / rel, **LIMITS, max_frames=1000)
            check_complete(root / rel, info.media_type)
            assert info.frames == PAGES.get(rel, 1), rel


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
    b"GIF89a\x0a\x00\x0a\x00\x80\x00\x00" + bytes(6),  # with a 2-colour table
    b"GIF89a\x0a\x00\x0a\x00\x00\x00\x00\x2c",
    b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf",
    b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf\0\0\0\x60meta\0\0\0\0",
    b"\0\0\0\x18ftypmif1\0\0\0\0mif1av01\0\0\0\x10iprp\0\0\0\x08ipco",
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "input"


CHECKED = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "image/tiff")


def _only_our_errors(path: Path, data: bytes) -> None:
    """The public functions raise the three documented errors and nothing else."""
    path.write_bytes(data)
    assert sniff(data) in {None, *(media for _, media, _ in SAMPLES.values())}
    try:
        info = inspect_image(path, max_pixels=10_000_000, max_side=10_000, max_frames=5)
    except ERRORS:
        pass
    else:
        assert info.width is None or 0 < info.width <= 10_000
        assert info.frames is None or 0 < info.frames <= 5
        assert 1 <= info.orientation <= 8
    for media_type in CHECKED:  # also the wrong parser for the bytes
        with contextlib.suppress(CorruptImageError, ImageTooLargeError):
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


HEADERS = ["jpeg", "jpeg-progressive", "png", "apng", "gif-animated", "tiff", "tiff-pages",
           "webp-lossy", "webp-animated", "avif", "avif-sequence"]  # fmt: skip


@FUZZ
@given(
    name=st.sampled_from(HEADERS),
    keep=st.integers(1, 1 << 20),
    edits=st.lists(
        st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 511), st.binary(
            min_size=1, max_size=4
        )),
        min_size=1,
        max_size=6,
    ),
)  # fmt: skip
def test_mutated_headers(
    scratch: Path,
    samples: dict[str, bytes],
    name: str,
    keep: int,
    edits: list[tuple[str, int, bytes]],
) -> None:
    """Edits within the first 512 bytes (where the headers, boxes and first chunks are)."""
    mutated = bytearray(samples[name])
    for kind, at, value in edits:
        at %= len(mutated) + 1
        if kind == "set":
            mutated[at : at + len(value)] = value
        elif kind == "insert":
            mutated[at:at] = value
        else:
            del mutated[at : at + len(value)]
        if not mutated:
            mutated = bytearray(b"\0")
    _only_our_errors(scratch, bytes(mutated[:keep]))
