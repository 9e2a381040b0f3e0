"""Recognise an image by its magic bytes, read its size and frame count from its headers, and
check that a file is one whole image and nothing else, never decoding a pixel.

The edge calls :func:`inspect_image` and :func:`check_complete` before it stores an upload and
worker operations call them again before any decode, so a header that lies (a decompression
bomb), a truncated file or a polyglot is refused before anything allocates pixels.
Standard library only: the edge must never import numpy, OpenCV or Pillow. Every walk over
markers, chunks, blocks, boxes, IFDs or HDUs is bounded, and reads seek to the bytes they
need; the JPEG and GIF end walks read the file through a 1 MiB window.

Supported: JPEG, PNG (and APNG), WebP (and animated), GIF (frames counted; the first is
used), TIFF (pages counted; compressions OpenCV cannot decode are refused), BMP, AVIF (still
and sequence), FITS. Three errors, and nothing else, come out of the public functions (and
``OSError`` from the file system): ``NotAnImageError`` (empty, or no supported signature: the
message names what the bytes look like, "an SVG document", "a ZIP archive"),
``CorruptImageError`` (the format is recognised but broken, truncated or carrying something
else) and ``ImageTooLargeError`` (over a limit).

Policies:

- Frames: GIF image descriptors, APNG ``acTL``, WebP ``ANMF`` chunks, the TIFF IFD chain, the
  ``stsz`` sample count of an AVIF sequence's first track, FITS planes past the second axis.
  Counting stops at ``_MAX_FRAMES`` (ImageTooLargeError whatever ``max_frames`` says). A GIF
  frame reaching past the logical screen widens the reported size, as Pillow's canvas does.
  A TIFF IFD chain that loops or points outside the file is corrupt.
- EXIF orientation is read from IFD0 only (no IFD chains, so no loops), from a single BYTE,
  SHORT or LONG value inside the entry (never at an offset, so a count of gigabytes reads
  nothing). A value outside 1-8, another type or count, or an unreadable block gives 1:
  decoders ignore broken EXIF and the pixels are fine, so the image is accepted as stored.
- Trailing data (``check_complete``): a JPEG ends at the first EOI after its first scan (the
  images an MPF segment announces, MPO and gain maps, may follow), a PNG at IEND, a GIF at its
  trailer, a WebP where its RIFF size says, an AVIF after its last top-level box. Up to
  ``_TAIL`` bytes of NULs or ASCII whitespace may follow (writers pad); anything else, an
  appended ZIP, HTML, script or a second file, is corrupt: a polyglot is refused. So are
  motion photos (an MP4 after a JPEG). TIFF, BMP and FITS have no end marker; data after them
  is not looked for.
- Markup inside: JPEG COM and APPn segments, PNG text chunks (compressed ones read up to
  ``_WINDOW`` bytes) and GIF comments holding an HTML, SVG or script tag (``<script``,
  ``<html``, ``<svg``, ``<?php``...) are corrupt. XMP is XML but uses none of those tags.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

JPEG, PNG, WEBP, GIF, TIFF, BMP, AVIF, FITS = (
    "image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp",
    "image/avif", "application/fits",
)  # fmt: skip
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIGNATURES = (
    (b"\xff\xd8\xff", JPEG), (_PNG_SIGNATURE, PNG), (b"GIF87a", GIF), (b"GIF89a", GIF),
    (b"II*\x00", TIFF), (b"MM\x00*", TIFF), (b"II+\x00", TIFF), (b"MM\x00+", TIFF),
)  # fmt: skip
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
_AV1_BRANDS = frozenset({b"av01", b"MA1A", b"MA1B"})
_LOOKALIKES = (
    (b"%PDF-", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"), (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"), (b"\xca\xfe\xba\xbe", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"), (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"#!", "a script"), (b"\x1f\x8b", "a gzip archive"), (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"%!PS", "a PostScript document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document"), (b"{\\rtf", "an RTF document"),
    (b"8BPS", "a Photoshop document"), (b"\0\0\0\x0cjP  \r\n", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 image"), (b"\xff\x0a", "a JPEG XL image"),
    (b"\0\0\0\x0cJXL \r\n", "a JPEG XL image"), (b"qoif", "a QOI image"),
)  # fmt: skip
_HTML_TAG = re.compile(rb"<(svg|!doctype\s+html|html|head|body|script|iframe)\b")
# Tags that make bytes inside or after an image dangerous where something sniffs for HTML.
_MARKUP = re.compile(rb"<(?:script|html|head|body|iframe|svg|object|embed)\b|<\?php", re.I)
_PADDING = b"\0 \t\r\n"
_TEXT = frozenset(range(32, 127)) | frozenset(b"\t\r\n\f")
_JPEG_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
)
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # not stuffing, a restart or a fill
_MAX_STEPS = 4096  # markers, chunks, boxes or IFD entries: far above real files, bounds junk
_MAX_CHUNKS = 100_000  # libpng writes 8 KiB IDAT chunks: 800 MB of them
_MAX_FRAMES = 100_000  # frames or pages counted before an image is refused as too long
_MAX_IMAGES = 8  # JPEGs in one MPF file (primary, gain map, stereo pair, previews)
_FITS_BLOCK, _FITS_MAX_BLOCKS, _FITS_MAX_HDUS = 2880, 256, 32
_TIFF_INTEGERS = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
# Compressions OpenCV's libtiff decodes: none, CCITT RLE/G3/G4, LZW, old and new JPEG,
# Deflate, PackBits. Not LZMA, Zstd, WebP, JPEG XL, JBIG, LERC or JPEG 2000.
_TIFF_COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 32773, 32946})
_TAIL = 4096  # bytes of padding (NULs, whitespace) allowed after an image's end
_WINDOW = 1 << 20  # bytes read at a time by walks that touch the whole file


class ImageInfo(NamedTuple):
    """What the headers say: media type, stored size (before EXIF orientation), frame count."""

    media_type: str
    width: int | None
    height: int | None
    frames: int | None
    """Frames, pages (TIFF) or planes (FITS); None when unknown."""
    orientation: int = 1
    """EXIF orientation 1-8 (JPEG, PNG, WebP; TIFF's own tag); 1 when absent or unreadable."""


class NotAnImageError(ValueError):
    """The bytes are not an image of a supported format."""


class CorruptImageError(ValueError):
    """The format is recognised but its headers or structure are broken or truncated."""


class ImageTooLargeError(ValueError):
    """The headers declare more pixels, a longer side or more frames than the limits allow."""


class _Reader:
    """Random access to ``[base, end)`` of a file, where a short read means a truncated image."""

    def __init__(self, f: BinaryIO, end: int, base: int = 0) -> None:
        self.f, self.end, self.base = f, end, base
        self.size = max(0, end - base)

    def read(self, offset: int, n: int, what: str) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CorruptImageError(
                f"truncated {what}: needs bytes to {offset + n}, has {self.size}"
            )
        self.f.seek(self.base + offset)
        data = self.f.read(n)
        if len(data) != n:  # the file shrank under us
            raise CorruptImageError(f"truncated {what}")
        return data

    def window(self, offset: int, n: int = _WINDOW) -> bytes:
        """Return up to ``n`` bytes from ``offset``: fewer at the end, none past it."""
        self.f.seek(self.base + offset)
        return self.f.read(max(0, min(n, self.size - offset)))

    def sub(self, start: int, stop: int) -> _Reader:
        return _Reader(self.f, min(self.end, self.base + stop), self.base + start)


def sniff(head: bytes) -> str | None:
    """Return the media type that the first bytes of a file announce, or None if unknown."""
    for magic, media_type in _SIGNATURES:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    # "BM" alone is too weak a signature (text starts with it): the DIB header size must fit too.
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return BMP
    if head.startswith(b"SIMPLE  =") and head[10:30].strip() == b"T":
        return FITS
    brands = _ftyp_brands(head)
    if brands and (brands & _AVIF_BRANDS or (brands & _HEIF_BRANDS and brands & _AV1_BRANDS)):
        return AVIF
    return None


def _ftyp_brands(head: bytes) -> set[bytes] | None:
    """Return the major and compatible brands of an ISO BMFF ``ftyp`` box, None if there is none."""
    size = int.from_bytes(head[:4], "big")
    if head[4:8] != b"ftyp" or size < 16:
        return None
    stop = min(size, len(head))
    return {head[8:12], *(head[i : i + 4] for i in range(16, stop - 3, 4))}


def _describe(data: bytes) -> str | None:
    """Say what bytes that are no supported image look like ("an SVG document"), None if unsure."""
    for magic, what in _LOOKALIKES:
        if data.startswith(magic):
            return what
    brands = _ftyp_brands(data)
    if brands is not None:
        heif = brands & {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}
        return "a HEIF image" if heif else "an MP4 or QuickTime video"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte order mark
        data = data[2:].decode("utf-16-le" if data[0] == 0xFF else "utf-16-be", "ignore").encode()
    text = data.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(b"<"):
        tag = _HTML_TAG.search(text)
        if tag is not None:
            return "an SVG document" if tag.group(1) == b"svg" else "an HTML document"
        return "an XML document" if text.startswith(b"<?xml") else "markup (HTML or XML)"
    if data and all(b in _TEXT for b in data[:512]):
        return "plain text"
    return None


def inspect_image(
    path: Path, *, max_pixels: int, max_side: int, max_frames: int | None = None
) -> ImageInfo:
    """Read an image's type, size and frame count from its headers and check them against limits.

    Raises:
        NotAnImageError: the file is empty, has no supported signature (the message says what
            it looks like), or is a TIFF compressed in a way the workers cannot decode.
        CorruptImageError: the headers are truncated or inconsistent.
        ImageTooLargeError: width x height exceeds ``max_pixels``, a side ``max_side``, or the
            frame count ``max_frames`` (None: not checked).
        OSError: the file cannot be read.
    """
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            raise NotAnImageError("empty file: 0 bytes")
        f.seek(0)
        head = f.read(1024)
        media_type = sniff(head)
        if media_type is None:
            what = _describe(head)
            if what is None:
                raise NotAnImageError(
                    f"unknown signature {head[:8].hex(' ')}: not a supported image"
                    " (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF or FITS)"
                )
            raise NotAnImageError(f"looks like {what}, not a supported image")
        info = _PARSERS[media_type](_Reader(f, size))
    _check_limits(info, max_pixels, max_side, max_frames)
    return info


def _check_limits(info: ImageInfo, max_pixels: int, max_side: int, max_frames: int | None) -> None:
    w, h, frames = info.width, info.height, info.frames
    if w is not None and h is not None:
        if w <= 0 or h <= 0:
            raise CorruptImageError(f"{info.media_type} header gives a size of {w}x{h}")
        if w > max_side or h > max_side or w * h > max_pixels:
            raise ImageTooLargeError(
                f"image is {w}x{h} ({w * h:,} pixels); the limits are {max_pixels:,} pixels"
                f" and {max_side:,} pixels a side"
            )
    # A FITS cube's planes are data, not an animation: the pixel limit covers them.
    if (
        max_frames is not None
        and frames is not None
        and frames > max_frames
        and info.media_type != FITS
    ):
        raise ImageTooLargeError(f"{info.media_type} has {frames:,} frames, at most {max_frames:,}")


def check_complete(path: Path, media_type: str) -> None:
    """Check that a file is one whole image and nothing else (see the module's policies).

    JPEG, PNG, GIF, WebP and AVIF: the structure ends where the file does (give or take some
    padding) and no markup hides in comments or text. Other media types are not checked.
    Reads headers, segments and the file's tail; JPEG and GIF walk the file in windows.

    Raises:
        CorruptImageError: the file is truncated, its structure is broken, it goes on after
            the image's end, or it carries markup.
        ImageTooLargeError: a GIF or WebP has more than ``_MAX_FRAMES`` frames.
        OSError: the file cannot be read.
    """
    check = _COMPLETE.get(media_type)
    if check is not None:
        with path.open("rb") as f:
            check(_Reader(f, f.seek(0, os.SEEK_END)))


def _check_tail(r: _Reader, end: int, what: str) -> None:
    """Refuse anything but a little padding after ``end``, where the image ``what`` ends."""
    extra = r.size - end
    if extra <= 0:
        return
    data = r.read(end, min(extra, _TAIL), "tail")
    if extra <= _TAIL and not data.strip(_PADDING):
        return
    rest = data.lstrip(_PADDING)
    other = sniff(rest)
    looks = f"another image ({other})" if other else _describe(rest)
    raise CorruptImageError(
        f"{extra:,} bytes after the {what}"
        + (f", looking like {looks}" if looks else "")
        + ": data after an image is refused (a polyglot or a damaged file)"
    )


def _refuse_markup(data: bytes, where: str) -> None:
    found = _MARKUP.search(data)
    if found is not None:
        tag = found.group().decode("latin-1")
        raise CorruptImageError(f"{where} holds markup ({tag}...): refused as a polyglot")


def _scan_markup(r: _Reader, start: int, stop: int, where: str) -> None:
    """Refuse markup in ``[start, stop)``, read in windows that overlap by a tag's length."""
    while start < stop:
        data = r.read(start, min(_WINDOW, stop - start), where)
        _refuse_markup(data, where)
        if start + len(data) >= stop:
            return
        start += len(data) - 16


# JPEG


def _jpeg_walk(r: _Reader) -> tuple[ImageInfo, int]:
    """Walk the marker segments from SOI to SOS; return the frame's info and SOS's offset."""
    if r.read(0, 2, "JPEG SOI") != b"\xff\xd8":
        raise CorruptImageError("JPEG: no start-of-image marker")
    pos, dims, orientation, exif_seen = 2, (0, 0), 1, False
    for _ in range(_MAX_STEPS):
        prefix, marker = r.read(pos, 2, "JPEG marker")
        if prefix != 0xFF:
            raise CorruptImageError(f"JPEG: no marker at byte {pos}")
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2  # a fill byte, or a marker without a length
            continue
        if marker in (0x00, 0xD8, 0xD9):
            raise CorruptImageError(f"JPEG: marker FF{marker:02X} at byte {pos} before the scan")
        length = _jpeg_length(r, pos, marker)
        if marker == 0xDA:
            if dims == (0, 0):
                raise CorruptImageError("JPEG: scan before any frame header")
            return ImageInfo(JPEG, dims[0], dims[1], 1, orientation), pos
        if marker in _JPEG_SOF and dims == (0, 0):
            if length < 8:
                raise CorruptImageError("JPEG: frame header too short")
            h, w = struct.unpack(">HH", r.read(pos + 5, 4, "JPEG frame header"))
            dims = (w, h)  # height 0 (defined later by DNL) fails the size check
        elif marker == 0xE1 and length >= 8 and not exif_seen and _is_exif(r, pos + 4):
            exif_seen, orientation = True, _exif_orientation(r.sub(pos + 10, pos + 2 + length))
        pos += 2 + length
    raise CorruptImageError(f"JPEG: no scan within {_MAX_STEPS} markers")


def _jpeg_length(r: _Reader, pos: int, marker: int) -> int:
    """Return the length of the segment at ``pos``, checked against the file."""
    length = int.from_bytes(r.read(pos + 2, 2, "JPEG segment"), "big")
    if length < 2:
        raise CorruptImageError(f"JPEG: segment FF{marker:02X} at byte {pos} is broken")
    if pos + 2 + length > r.size:
        raise CorruptImageError(f"JPEG: segment FF{marker:02X} at byte {pos} is cut: truncated")
    return length


def _is_exif(r: _Reader, at: int) -> bool:
    return r.read(at, 6, "APP1") == b"Exif\0\0"


def _jpeg_end(r: _Reader, start: int) -> tuple[int, bool]:
    """Walk the JPEG at ``start`` to its EOI; return the offset after it and whether an MPF
    segment announces more images. Refuses markup in COM and APPn segments.

    Before the first scan segments are walked by their lengths; after it the entropy-coded
    data is searched for the next marker (stuffed FF 00 and restarts are not markers).
    """
    pos, scanning, mpf = start + 2, False, False
    for _ in range(_MAX_STEPS):
        if scanning:
            pos = _jpeg_next_marker(r, pos)
        prefix, marker = r.read(pos, 2, "JPEG marker")
        if prefix != 0xFF:
            raise CorruptImageError(f"JPEG: no marker at byte {pos}")
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            return pos + 2, mpf
        if marker in (0x00, 0xD8):
            raise CorruptImageError(f"JPEG: marker FF{marker:02X} at byte {pos} inside the image")
        length = _jpeg_length(r, pos, marker)
        if marker == 0xFE or 0xE0 <= marker <= 0xEF:
            payload = r.read(pos + 4, length - 2, "JPEG segment")
            _refuse_markup(payload, f"JPEG: the FF{marker:02X} segment at byte {pos}")
            mpf = mpf or (marker == 0xE2 and payload.startswith(b"MPF\0"))
        scanning = scanning or marker == 0xDA
        pos += 2 + length
    raise CorruptImageError(f"JPEG: no end-of-image marker within {_MAX_STEPS} markers")


def _jpeg_next_marker(r: _Reader, pos: int) -> int:
    """Return the offset of the next marker at or after ``pos`` (in entropy-coded data)."""
    while pos < r.size:
        data = r.window(pos)
        found = _JPEG_MARKER.search(data)
        if found is not None:
            return pos + found.start()
        pos += max(1, len(data) - 1)  # keep a last FF: its marker code is in the next window
    raise CorruptImageError("JPEG: no end-of-image marker (FF D9): truncated")


def _jpeg_complete(r: _Reader) -> None:
    _jpeg_walk(r)
    end, mpf = _jpeg_end(r, 0)
    for _ in range(_MAX_IMAGES - 1):
        if not mpf or r.window(end, 3) != b"\xff\xd8\xff":
            break
        end = _jpeg_end(r, end)[0]  # an image the MPF segment lists: a gain map, a stereo pair
    _check_tail(r, end, "JPEG's end-of-image marker")


# PNG


def _png_chunks(r: _Reader, pos: int, stop: tuple[bytes, ...]) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, data offset, length) of each chunk from ``pos`` to one of type ``stop``."""
    for _ in range(_MAX_CHUNKS):
        length, ctype = struct.unpack(">I4s", r.read(pos, 8, "PNG chunk header"))
        if length > 0x7FFFFFFF or not ctype.isalpha():
            raise CorruptImageError(f"PNG: bad chunk header at byte {pos}")
        if pos + 12 + length > r.size:
            raise CorruptImageError(
                f"PNG: the {ctype.decode()} chunk at byte {pos} runs past the end: truncated"
            )
        yield ctype, pos + 8, length
        if ctype in stop:
            return
        pos += 12 + length
    raise CorruptImageError(f"PNG: more than {_MAX_CHUNKS} chunks")


def _png(r: _Reader) -> ImageInfo:
    ihdr = r.read(8, 25, "PNG IHDR")
    length, ctype, w, h = struct.unpack(">I4sII", ihdr[:16])
    if ctype != b"IHDR" or length != 13:
        raise CorruptImageError("PNG: the first chunk is not IHDR")
    if zlib.crc32(ihdr[4:21]) != int.from_bytes(ihdr[21:25], "big"):
        raise CorruptImageError("PNG: IHDR checksum mismatch")
    frames: int | None = 1
    orientation = 1
    for ctype, start, length in _png_chunks(r, 33, (b"IDAT", b"IEND")):
        if ctype == b"acTL" and length >= 8:  # APNG
            frames = int.from_bytes(r.read(start, 4, "PNG acTL"), "big") or None
        elif ctype == b"eXIf":
            orientation = _exif_orientation(r.sub(start, start + length))
    return ImageInfo(PNG, w, h, frames, orientation)


def _png_text_markup(r: _Reader, ctype: bytes, start: int, length: int) -> None:
    """Refuse a tEXt, zTXt or iTXt chunk holding markup (compressed text: its first MiB)."""
    where = f"PNG: the {ctype.decode()} chunk at byte {start - 8}"
    data = r.read(start, min(length, _WINDOW), "PNG text chunk")
    keyword, _, rest = data.partition(b"\0")
    if ctype == b"tEXt" or (ctype == b"iTXt" and rest[:1] != b"\1"):
        _scan_markup(r, start, start + length, where)
        return
    if ctype == b"iTXt":
        rest = rest[2:].split(b"\0", 2)[-1]  # flag, method, language, translated keyword
    try:
        text = zlib.decompressobj().decompress(rest[1:] if ctype == b"zTXt" else rest, _WINDOW)
    except zlib.error:
        text = b""  # decoders skip a broken text chunk: nothing to show anyone
    _refuse_markup(keyword + b"\0" + text, where)


def _png_complete(r: _Reader) -> None:
    if r.read(0, 8, "PNG signature") != _PNG_SIGNATURE:
        raise CorruptImageError("PNG: bad signature")
    _png(r)
    end, has_data = 0, False
    for ctype, start, length in _png_chunks(r, 8, (b"IEND",)):
        end, has_data = start + length + 4, has_data or ctype == b"IDAT"
        if ctype in (b"tEXt", b"zTXt", b"iTXt"):
            _png_text_markup(r, ctype, start, length)
    if not has_data:
        raise CorruptImageError("PNG: no IDAT chunk")
    _check_tail(r, end, "PNG's IEND chunk")


# WebP


def _webp_chunks(r: _Reader, pos: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, data offset, length) of the RIFF chunks from ``pos`` to the RIFF's end."""
    riff = int.from_bytes(r.read(4, 4, "RIFF header"), "little")
    stop = min(r.size, 8 + riff)
    for _ in range(_MAX_FRAMES + _MAX_STEPS):
        if pos + 8 > stop:
            return
        ctype, length = struct.unpack("<4sI", r.read(pos, 8, "WebP chunk header"))
        if pos + 8 + length > stop:
            raise CorruptImageError(f"WebP: the {ctype!r} chunk at byte {pos} is cut: truncated")
        yield ctype, pos + 8, length
        pos += 8 + length + (length & 1)
    raise ImageTooLargeError(f"WebP: more than {_MAX_FRAMES:,} frames")


def _webp(r: _Reader) -> ImageInfo:
    ctype, length = struct.unpack("<4sI", r.read(12, 8, "WebP chunk header"))
    if ctype == b"VP8 ":
        d = r.read(20, 10, "VP8 frame header")
        if d[3:6] != b"\x9d\x01\x2a":
            raise CorruptImageError("WebP: bad VP8 start code")
        w, h = struct.unpack("<HH", d[6:10])
        return ImageInfo(WEBP, w & 0x3FFF, h & 0x3FFF, 1)  # the top 2 bits are scaling hints
    if ctype == b"VP8L":
        d = r.read(20, 5, "VP8L header")
        if d[0] != 0x2F:
            raise CorruptImageError("WebP: bad VP8L signature")
        bits = int.from_bytes(d[1:5], "little")
        return ImageInfo(WEBP, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1)
    if ctype != b"VP8X":
        raise CorruptImageError(f"WebP: unknown first chunk {ctype!r}")
    d = r.read(20, 10, "VP8X header")
    w, h = int.from_bytes(d[4:7], "little") + 1, int.from_bytes(d[7:10], "little") + 1
    animated = bool(d[0] & 0x02)
    if not d[0] & 0x0A:  # neither animation nor EXIF: nothing more to look for
        return ImageInfo(WEBP, w, h, 1)
    orientation, frames = 1, 0
    for kind, start, size in _webp_chunks(r, 20 + length + (length & 1)):
        if kind == b"ANMF":
            frames += 1
        elif kind == b"EXIF":
            orientation = _exif_orientation(r.sub(start, start + size))
    if animated and frames == 0:
        raise CorruptImageError("WebP: animated, but without frames")
    return ImageInfo(WEBP, w, h, frames if animated else 1, orientation)


def _webp_complete(r: _Reader) -> None:
    end = 8 + int.from_bytes(r.read(4, 4, "RIFF header"), "little")
    if end > r.size:
        raise CorruptImageError(
            f"WebP: the RIFF header says {end} bytes, the file has {r.size}: truncated"
        )
    for _ in _webp_chunks(r, 12):
        pass  # every chunk within the RIFF
    _check_tail(r, end + (end & 1), "WebP's RIFF data")


# GIF


class _Window:
    """Byte-at-a-time reads through a ``_WINDOW`` buffer, for walks over many tiny blocks.

    ``budget`` bounds the data sub-blocks walked: encoders write 255-byte ones, so a file of
    mostly tiny sub-blocks (which would take seconds to walk) is refused long before its end.
    """

    def __init__(self, r: _Reader) -> None:
        self.r, self.base, self.buf = r, 0, b""
        self.budget = r.size // 128 + 6 * _MAX_FRAMES

    def byte(self, pos: int, what: str) -> int:
        i = pos - self.base
        if 0 <= i < len(self.buf):
            return self.buf[i]
        self.base, self.buf = pos, self.r.window(pos)
        if not self.buf:
            raise CorruptImageError(f"GIF: truncated {what} at byte {pos}")
        return self.buf[0]

    def take(self, pos: int, n: int, what: str) -> bytes:
        i = pos - self.base
        if i >= 0 and i + n <= len(self.buf):
            return self.buf[i : i + n]
        return self.r.read(pos, n, what)

    def skip_sub_blocks(self, pos: int) -> int:
        """Return the offset after the chain of data sub-blocks at ``pos`` and its terminator."""
        buf, base = self.buf, self.base
        while True:
            i = pos - base
            if 0 <= i < len(buf):
                n = buf[i]
            else:
                n = self.byte(pos, "data sub-block")
                buf, base = self.buf, self.base
            pos += 1 + n
            if n == 0:
                return pos
            self.budget -= 1
            if self.budget < 0:
                raise CorruptImageError("GIF: more data sub-blocks than a file its size holds")

    def sub_block_data(self, pos: int) -> tuple[bytes, int]:
        """Return the data of the chain at ``pos`` (its first MiB) and the offset after it."""
        parts: list[bytes] = []
        kept = 0
        while kept < _WINDOW:
            n = self.byte(pos, "data sub-block")
            if n == 0:
                return b"".join(parts), pos + 1
            parts.append(self.take(pos + 1, n, "GIF data sub-block"))
            kept, pos = kept + n, pos + 1 + n
            self.budget -= 1
            if self.budget < 0:
                raise CorruptImageError("GIF: more data sub-blocks than a file its size holds")
        return b"".join(parts), self.skip_sub_blocks(pos)


def _gif_walk(r: _Reader, comments: bool = False) -> tuple[ImageInfo, int]:
    """Walk a GIF's blocks to its trailer; return its info and the offset after the trailer.

    A frame reaching past the logical screen widens the size, as decoders grow the canvas.
    With ``comments``, comment extensions holding markup are refused.
    """
    w = _Window(r)
    width, height = struct.unpack("<HH", r.read(6, 4, "GIF screen descriptor"))
    packed = w.byte(10, "screen descriptor")
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    frames = 0
    for _ in range(4 * _MAX_FRAMES + _MAX_STEPS):
        kind = w.byte(pos, "block")
        if kind == 0x3B:
            if frames == 0:
                raise CorruptImageError("GIF: no image in the file")
            return ImageInfo(GIF, width, height, frames), pos + 1
        if kind == 0x2C:
            frames += 1
            if frames > _MAX_FRAMES:
                raise ImageTooLargeError(f"GIF: more than {_MAX_FRAMES:,} frames")
            left, top, fw, fh, packed = struct.unpack("<HHHHB", r.read(pos + 1, 9, "GIF frame"))
            width, height = max(width, left + fw), max(height, top + fh)
            pos += 11 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)  # + LZW code size
        elif kind == 0x21:
            label, pos = w.byte(pos + 1, "extension"), pos + 2
            if label == 0xFE and comments:
                text, pos = w.sub_block_data(pos)
                _refuse_markup(text, "GIF: a comment")
                continue
        else:
            raise CorruptImageError(f"GIF: unknown block 0x{kind:02X} at byte {pos}")
        pos = w.skip_sub_blocks(pos)
    raise CorruptImageError("GIF: too many blocks")


def _gif_complete(r: _Reader) -> None:
    _check_tail(r, _gif_walk(r, comments=True)[1], "GIF's trailer")


# BMP


def _bmp(r: _Reader) -> ImageInfo:
    d = r.read(14, 12, "BMP header")
    if int.from_bytes(d[:4], "little") == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sides
        w, h = struct.unpack("<HH", d[4:8])
    else:
        w, h = struct.unpack("<ii", d[4:12])
    return ImageInfo(BMP, w, abs(h), 1)  # a negative height means rows are stored top-down


# TIFF (and EXIF, a TIFF stream)


def _tiff_header(r: _Reader) -> tuple[str, bool, int]:
    """Return the byte order, whether it is BigTIFF, and the first IFD's offset."""
    head = r.read(0, 8, "TIFF header")
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        raise CorruptImageError("TIFF: bad byte order mark")
    magic, a, b = struct.unpack(order + "HHH", head[2:8])
    if magic == 42:
        return order, False, int(struct.unpack(order + "I", head[4:8])[0])
    if magic == 43 and a == 8 and b == 0:
        return order, True, int(struct.unpack(order + "Q", r.read(8, 8, "BigTIFF header"))[0])
    raise CorruptImageError("TIFF: bad magic number")


def _tiff_ifd(r: _Reader, order: str, big: bool, offset: int) -> tuple[dict[int, int], int]:
    """Return the single-integer tags of the IFD at ``offset`` and the next IFD's offset."""
    if not 8 <= offset < r.size:
        raise CorruptImageError(f"TIFF: IFD offset {offset} is outside the file ({r.size} bytes)")
    word, count_fmt, entry_size = (
        (order + "Q", order + "Q", 20) if big else (order + "I", order + "H", 12)
    )
    word_size, count_size = struct.calcsize(word), struct.calcsize(count_fmt)
    count = int(struct.unpack(count_fmt, r.read(offset, count_size, "TIFF IFD"))[0])
    if count > _MAX_STEPS:
        raise CorruptImageError(f"TIFF: IFD claims {count} entries")
    data = r.read(offset + count_size, count * entry_size + word_size, "TIFF IFD")
    tags: dict[int, int] = {}
    for at in range(0, count * entry_size, entry_size):
        tag, kind = struct.unpack_from(order + "HH", data, at)
        if kind not in _TIFF_INTEGERS or struct.unpack_from(word, data, at + 4)[0] != 1:
            continue
        fmt = order + _TIFF_INTEGERS[kind]
        if struct.calcsize(fmt) <= word_size:  # then the value is in the entry, not at an offset
            tags.setdefault(tag, int(struct.unpack_from(fmt, data, at + 4 + word_size)[0]))
    return tags, int(struct.unpack_from(word, data, count * entry_size)[0])


def _tiff(r: _Reader) -> ImageInfo:
    order, big, offset = _tiff_header(r)
    tags, following = _tiff_ifd(r, order, big, offset)
    if 256 not in tags or 257 not in tags:
        raise CorruptImageError("TIFF: the first IFD has no ImageWidth or ImageLength")
    compression = tags.get(259, 1)
    if compression not in _TIFF_COMPRESSIONS:
        raise NotAnImageError(f"TIFF: compression {compression} is not supported")
    orientation = tags.get(274, 1)
    pages = _tiff_pages(r, order, big, offset, following)
    return ImageInfo(TIFF, tags[256], tags[257], pages, orientation if 1 <= orientation <= 8 else 1)


def _tiff_pages(r: _Reader, order: str, big: bool, first: int, following: int) -> int:
    """Count the pages of the IFD chain, reading only each IFD's entry count and next offset.

    Raises:
        CorruptImageError: the chain loops, or points outside the file or at a cut IFD.
        ImageTooLargeError: the chain is longer than ``_MAX_FRAMES``.
    """
    count_fmt, entry_size, word = (
        (order + "Q", 20, order + "Q") if big else (order + "H", 12, order + "I")
    )
    count_size = struct.calcsize(count_fmt)
    seen = {first}
    while following:
        if following in seen:
            raise CorruptImageError(f"TIFF: the IFD chain loops back to byte {following}")
        if len(seen) >= _MAX_FRAMES:
            raise ImageTooLargeError(f"TIFF: more than {_MAX_FRAMES:,} pages")
        if not 8 <= following < r.size:
            raise CorruptImageError(f"TIFF: IFD offset {following} is outside the file")
        seen.add(following)
        count = struct.unpack(count_fmt, r.read(following, count_size, "TIFF IFD"))[0]
        at = following + count_size + count * entry_size
        following = int(struct.unpack(word, r.read(at, struct.calcsize(word), "TIFF IFD"))[0])
    return len(seen)


def _exif_orientation(r: _Reader) -> int:
    """Return the Orientation tag of an EXIF block (a TIFF stream), 1 if absent or broken."""
    try:
        if _is_exif(r, 0):  # PNG and WebP writers sometimes keep the JPEG prefix
            r = r.sub(6, r.size)
        order, big, offset = _tiff_header(r)
        value = _tiff_ifd(r, order, big, offset)[0].get(274, 1)
    except CorruptImageError:
        return 1  # broken EXIF is common and decoders ignore it: so do we
    return value if 1 <= value <= 8 else 1


# AVIF (ISO BMFF)


def _boxes(r: _Reader, start: int, stop: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, payload offset, end) of the boxes in ``[start, stop)``."""
    pos = start
    for _ in range(_MAX_STEPS):
        if pos >= stop:
            return
        btype, size, header = _box_header(r, pos, stop)
        if size < header or pos + size > stop:
            raise CorruptImageError(f"AVIF: box {btype!r} at byte {pos} has a bad size {size}")
        yield btype, pos + header, pos + size
        pos += size
    raise CorruptImageError(f"AVIF: more than {_MAX_STEPS} boxes")


def _box_header(r: _Reader, pos: int, stop: int) -> tuple[bytes, int, int]:
    """Return a box's type, size (0: to ``stop``) and header length."""
    size, btype = struct.unpack(">I4s", r.read(pos, 8, "AVIF box header"))
    if size == 1:
        return btype, int.from_bytes(r.read(pos + 8, 8, "AVIF box size"), "big"), 16
    return btype, size or stop - pos, 8


def _child(r: _Reader, start: int, stop: int, path: tuple[bytes, ...]) -> tuple[int, int] | None:
    """Return (payload offset, end) of the first box along ``path`` (meta is a full box)."""
    for btype, payload, end in _boxes(r, start, stop):
        if btype == path[0]:
            payload += 4 if btype == b"meta" else 0
            return (payload, end) if len(path) == 1 else _child(r, payload, end, path[1:])
    return None


def _avif_top(r: _Reader) -> tuple[dict[bytes, tuple[int, int]], int]:
    """Return the top-level boxes by type (the first of each) and where the last one ends.

    The walk stops at the first bytes that are not a box header: what follows is trailing data.
    """
    found: dict[bytes, tuple[int, int]] = {}
    pos = 0
    for _ in range(_MAX_STEPS):
        if pos + 8 > r.size:
            break
        btype, size, header = _box_header(r, pos, r.size)
        if not btype.isalnum() or size < header:
            break
        if pos + size > r.size:
            if btype in (b"ftyp", b"meta", b"moov", b"mdat", b"free", b"skip", b"uuid"):
                raise CorruptImageError(f"AVIF: {btype!r} box runs past the end: truncated")
            break
        found.setdefault(btype, (pos + header, pos + size))
        pos += size
    return found, pos


def _avif(r: _Reader) -> ImageInfo:
    top = _avif_top(r)[0]
    if b"meta" not in top:
        raise CorruptImageError("AVIF: no meta box")
    meta_start, meta_end = top[b"meta"]
    w, h = _avif_size(r, meta_start + 4, meta_end)
    frames: int | None = 1
    if b"moov" in top:  # a sequence: its first track's sample count
        found = _child(r, *top[b"moov"], (b"trak", b"mdia", b"minf", b"stbl", b"stsz"))
        found = found or _child(r, *top[b"moov"], (b"trak", b"mdia", b"minf", b"stbl", b"stz2"))
        if found is not None and found[1] - found[0] < 12:
            raise CorruptImageError("AVIF: sample size box too short")
        frames = int.from_bytes(r.read(found[0] + 8, 4, "AVIF stsz"), "big") if found else None
        if frames == 0:
            raise CorruptImageError("AVIF: a sequence without samples")
    return ImageInfo(AVIF, w, h, frames)


def _avif_size(r: _Reader, start: int, stop: int) -> tuple[int, int]:
    """Return the ``ispe`` extents of the primary item, or the largest if it cannot be told."""
    ipco = _child(r, start, stop, (b"iprp", b"ipco"))
    if ipco is None:
        raise CorruptImageError("AVIF: no item properties (iprp/ipco)")
    extents: dict[int, tuple[int, int]] = {}
    for index, (btype, payload, end) in enumerate(_boxes(r, *ipco), 1):
        if btype == b"ispe" and end - payload >= 12:
            w, h = struct.unpack(">II", r.read(payload + 4, 8, "AVIF ispe"))
            extents[index] = (w, h)
    if not extents:
        raise CorruptImageError("AVIF: no image spatial extents (ispe)")
    for index in _avif_primary_properties(r, start, stop):
        if index in extents:
            return extents[index]
    return max(extents.values(), key=lambda wh: wh[0] * wh[1])


def _avif_primary_properties(r: _Reader, start: int, stop: int) -> list[int]:
    """Return the property indexes (1-based) ``ipma`` gives the ``pitm`` item; [] if unknown."""
    pitm, ipma = _child(r, start, stop, (b"pitm",)), _child(r, start, stop, (b"iprp", b"ipma"))
    if pitm is None or ipma is None or ipma[1] - ipma[0] > _WINDOW:
        return []
    try:
        p = r.read(pitm[0], min(8, pitm[1] - pitm[0]), "AVIF pitm")
        primary = struct.unpack_from(">H" if p[0] == 0 else ">I", p, 4)[0]
        return _ipma_lookup(r.read(ipma[0], ipma[1] - ipma[0], "AVIF ipma"), primary)
    except (struct.error, IndexError):
        return []  # a broken association table: the caller takes the largest extents


def _ipma_lookup(data: bytes, item_id: int) -> list[int]:
    """Return the property indexes an ``ipma`` payload associates with ``item_id``.

    Raises:
        struct.error, IndexError: the payload is cut short.
    """
    version, wide = data[0], data[3] & 1
    id_fmt = ">H" if version == 0 else ">I"
    index_fmt, mask = (">H", 0x7FFF) if wide else (">B", 0x7F)  # the top bit: "essential"
    id_size, index_size = struct.calcsize(id_fmt), struct.calcsize(index_fmt)
    pos = 8
    for _ in range(min(int.from_bytes(data[4:8], "big"), len(data))):
        item, n = struct.unpack_from(id_fmt, data, pos)[0], data[pos + id_size]
        pos += id_size + 1
        if item == item_id:
            at = range(pos, pos + n * index_size, index_size)
            return [struct.unpack_from(index_fmt, data, i)[0] & mask for i in at]
        pos += n * index_size
    return []


def _avif_complete(r: _Reader) -> None:
    _avif(r)
    _check_tail(r, _avif_top(r)[1], "AVIF's last box")


# FITS


def _fits_header(r: _Reader, offset: int) -> tuple[dict[str, str], int]:
    """Return the keyword values of the header at ``offset`` and the offset where it ends."""
    cards: dict[str, str] = {}
    for block in range(_FITS_MAX_BLOCKS):
        data = r.read(offset + block * _FITS_BLOCK, _FITS_BLOCK, "FITS header")
        for i in range(0, _FITS_BLOCK, 80):
            key = data[i : i + 8].decode("latin-1").strip()
            if key == "END":
                return cards, offset + (block + 1) * _FITS_BLOCK
            if data[i + 8 : i + 10] == b"= ":
                value = data[i + 10 : i + 80].decode("latin-1").strip()
                quoted = value.startswith("'")
                cards.setdefault(key, value.split("'")[1] if quoted else value.split("/")[0])
    raise CorruptImageError(f"FITS: no END card within {_FITS_MAX_BLOCKS} blocks")


def _fits_int(cards: dict[str, str], key: str, default: int | None = None) -> int:
    if key not in cards and default is not None:
        return default
    try:
        return int(cards[key])
    except (KeyError, ValueError) as e:
        raise CorruptImageError(f"FITS: {key} is missing or not an integer") from e


def _fits_axes(cards: dict[str, str], prefix: str) -> list[int]:
    """Return NAXIS1..NAXISn, or ZNAXIS1..ZNAXISn with prefix "Z"."""
    n = _fits_int(cards, f"{prefix}NAXIS")
    if not 0 <= n <= 999:
        raise CorruptImageError(f"FITS: {prefix}NAXIS is {n}")
    axes = [_fits_int(cards, f"{prefix}NAXIS{i}") for i in range(1, n + 1)]
    if any(a < 0 for a in axes):
        raise CorruptImageError(f"FITS: negative {prefix}NAXISn")
    return axes


def _fits_data_size(cards: dict[str, str]) -> int:
    """Return the bytes of an HDU's data: |BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 * ...)."""
    axes = _fits_axes(cards, "")
    if not axes:
        return 0
    size = abs(_fits_int(cards, "BITPIX")) // 8 * _fits_int(cards, "GCOUNT", 1)
    size *= _fits_int(cards, "PCOUNT", 0) + math.prod(axes)
    if size < 0:
        raise CorruptImageError("FITS: negative PCOUNT or GCOUNT")
    return -(-size // _FITS_BLOCK) * _FITS_BLOCK  # padded to whole blocks


def _fits(r: _Reader) -> ImageInfo:
    offset = 0
    for _ in range(_FITS_MAX_HDUS):
        cards, data_at = _fits_header(r, offset)
        z = "Z" if cards.get("ZIMAGE", "").strip() == "T" else ""  # a tile-compressed image
        axes = _fits_axes(cards, z)
        image = bool(z) or offset == 0 or cards.get("XTENSION", "").strip() == "IMAGE"
        if image and len(axes) >= 2 and math.prod(axes) > 0:
            return ImageInfo(FITS, axes[0], axes[1], math.prod(axes[2:]))
        offset = data_at + _fits_data_size(cards)
        if offset >= r.size:
            break
    return ImageInfo(FITS, None, None, None)


_PARSERS: dict[str, Callable[[_Reader], ImageInfo]] = {
    JPEG: lambda r: _jpeg_walk(r)[0], PNG: _png, WEBP: _webp, GIF: lambda r: _gif_walk(r)[0],
    BMP: _bmp, TIFF: _tiff, AVIF: _avif, FITS: _fits,
}  # fmt: skip
_COMPLETE: dict[str, Callable[[_Reader], None]] = {
    JPEG: _jpeg_complete, PNG: _png_complete, GIF: _gif_complete, WEBP: _webp_complete,
    AVIF: _avif_complete,
}  # fmt: skip
