"""Recognise an image by its magic bytes and read its size from its headers, never its pixels.

The edge calls this before queueing an upload and worker operations call it before any decode,
so a header that lies (a decompression bomb) is refused before anything allocates pixels.
Standard library only: the edge must never import numpy, OpenCV or Pillow. Every walk over
markers, chunks, IFDs or HDUs is bounded, and reads seek to the few bytes they need.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

JPEG, PNG, WEBP, GIF, TIFF, BMP, FITS = (
    "image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp",
    "application/fits",
)  # fmt: skip
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIGNATURES = (
    (b"\xff\xd8\xff", JPEG), (_PNG_SIGNATURE, PNG), (b"GIF87a", GIF), (b"GIF89a", GIF),
    (b"II*\x00", TIFF), (b"MM\x00*", TIFF), (b"II+\x00", TIFF), (b"MM\x00+", TIFF),
)  # fmt: skip
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_MARKUP = (b"<svg", b"<?xml", b"<!doctype", b"<html", b"<!--")
_JPEG_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
)
_MAX_STEPS = 4096  # markers, chunks, IFD entries or pages: far above real files, bounds junk
_MAX_CHUNKS = 100_000  # libpng writes 8 KiB IDAT chunks: 800 MB of them
_FITS_BLOCK, _FITS_MAX_BLOCKS, _FITS_MAX_HDUS = 2880, 256, 32
_TIFF_INTEGERS = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
_TAIL = 4096  # JPEG: bytes of zero padding allowed after EOI; PNG: bytes of anything after IEND


class ImageInfo(NamedTuple):
    """What the headers say: media type, stored size (before EXIF orientation), frame count."""

    media_type: str
    width: int | None
    height: int | None
    frames: int | None
    """Frames or pages; None when counting them would mean reading the image data."""
    orientation: int = 1
    """EXIF orientation 1-8 (JPEG, PNG, WebP; TIFF's own tag); 1 when absent or unreadable."""


class NotAnImageError(ValueError):
    """The bytes are not an image of a supported format."""


class CorruptImageError(ValueError):
    """The format is recognised but its headers or structure are broken or truncated."""


class ImageTooLargeError(ValueError):
    """The headers declare more pixels, or a longer side, than the limits allow."""


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
    return None


def inspect_image(path: Path, *, max_pixels: int, max_side: int) -> ImageInfo:
    """Read an image's type, size and frame count from its headers and check them against limits.

    Raises:
        NotAnImageError: the file is empty, markup, or has no supported signature.
        CorruptImageError: the headers are truncated or inconsistent.
        ImageTooLargeError: width x height exceeds ``max_pixels`` or a side ``max_side``.
        OSError: the file cannot be read.
    """
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            raise NotAnImageError("empty file")
        f.seek(0)
        head = f.read(1024)
        media_type = sniff(head)
        if media_type is None:
            text = head.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip().lower()
            if text.startswith(_MARKUP):
                raise NotAnImageError("looks like HTML/SVG/XML markup, not a raster image")
            raise NotAnImageError(f"unknown signature {head[:8].hex(' ')}")
        info = _PARSERS[media_type](_Reader(f, size))
    w, h = info.width, info.height
    if w is not None and h is not None:
        if w <= 0 or h <= 0:
            raise CorruptImageError(f"{media_type} header gives a size of {w}x{h}")
        if w > max_side or h > max_side or w * h > max_pixels:
            raise ImageTooLargeError(
                f"image is {w}x{h} ({w * h:,} pixels); the limits are {max_pixels:,} pixels"
                f" and {max_side:,} pixels a side"
            )
    return info


def check_complete(path: Path, media_type: str) -> None:
    """Check that a JPEG or PNG file is whole: its structure ends where the file does.

    Other media types are not checked. Reads headers and the file's tail, never the pixel data.

    Raises:
        CorruptImageError: the file is truncated or its structure is broken.
        OSError: the file cannot be read.
    """
    check = {JPEG: _jpeg_complete, PNG: _png_complete}.get(media_type)
    if check is not None:
        with path.open("rb") as f:
            check(_Reader(f, f.seek(0, os.SEEK_END)))


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
        length = int.from_bytes(r.read(pos + 2, 2, "JPEG segment"), "big")
        if length < 2 or pos + 2 + length > r.size:
            raise CorruptImageError(f"JPEG: segment FF{marker:02X} at byte {pos} is cut or broken")
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


def _is_exif(r: _Reader, at: int) -> bool:
    return r.read(at, 6, "APP1") == b"Exif\0\0"


def _jpeg_complete(r: _Reader) -> None:
    _, sos = _jpeg_walk(r)
    # Entropy-coded data cannot contain FF D9 (FF is stuffed), so the file is whole when its
    # tail, after the scan began, ends in EOI: no need to walk megabytes of scan data.
    start = max(sos + 2, r.size - _TAIL)
    if not r.read(start, r.size - start, "JPEG tail").rstrip(b"\0").endswith(b"\xff\xd9"):
        raise CorruptImageError("JPEG: no end-of-image marker (FF D9) at the end: truncated")


def _png_chunks(r: _Reader, pos: int, stop: tuple[bytes, ...]) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, data offset, length) of each chunk from ``pos`` to one of type ``stop``."""
    for _ in range(_MAX_CHUNKS):
        length, ctype = struct.unpack(">I4s", r.read(pos, 8, "PNG chunk header"))
        if length > 0x7FFFFFFF or not ctype.isalpha():
            raise CorruptImageError(f"PNG: bad chunk header at byte {pos}")
        if pos + 12 + length > r.size:
            raise CorruptImageError(f"PNG: {ctype!r} chunk runs past the end of the file")
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


def _png_complete(r: _Reader) -> None:
    if r.read(0, 8, "PNG signature") != _PNG_SIGNATURE:
        raise CorruptImageError("PNG: bad signature")
    _png(r)
    end, has_data = 0, False
    for ctype, start, length in _png_chunks(r, 8, (b"IEND",)):
        end, has_data = start + length + 4, has_data or ctype == b"IDAT"
    if not has_data:
        raise CorruptImageError("PNG: no IDAT chunk")
    if r.size - end > _TAIL:
        raise CorruptImageError(f"PNG: {r.size - end} bytes after the IEND chunk")


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
    if ctype == b"VP8X":
        d = r.read(20, 10, "VP8X header")
        w, h = int.from_bytes(d[4:7], "little") + 1, int.from_bytes(d[7:10], "little") + 1
        if not d[0] & 0x0A:  # neither animation nor EXIF: nothing more to look for
            return ImageInfo(WEBP, w, h, 1)
        frames: int | None = None  # unknown if the walk hits its bound
        orientation, anmf, pos = 1, 0, 20 + length + (length & 1)
        for _ in range(_MAX_STEPS):
            if pos + 8 > r.size:
                frames = anmf
                break
            ctype, length = struct.unpack("<4sI", r.read(pos, 8, "WebP chunk header"))
            if ctype == b"ANMF":
                anmf += 1
            elif ctype == b"EXIF":
                orientation = _exif_orientation(r.sub(pos + 8, pos + 8 + length))
            pos += 8 + length + (length & 1)
        return ImageInfo(WEBP, w, h, frames if d[0] & 0x02 else 1, orientation)
    raise CorruptImageError(f"WebP: unknown first chunk {ctype!r}")


def _gif(r: _Reader) -> ImageInfo:
    w, h = struct.unpack("<HH", r.read(6, 4, "GIF screen descriptor"))
    return ImageInfo(GIF, w, h, None)  # counting frames means walking all the LZW data


def _bmp(r: _Reader) -> ImageInfo:
    d = r.read(14, 12, "BMP header")
    if int.from_bytes(d[:4], "little") == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sides
        w, h = struct.unpack("<HH", d[4:8])
    else:
        w, h = struct.unpack("<ii", d[4:12])
    return ImageInfo(BMP, w, abs(h), 1)  # a negative height means rows are stored top-down


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
    orientation = tags.get(274, 1)
    pages = _tiff_pages(r, order, big, offset, following)
    return ImageInfo(TIFF, tags[256], tags[257], pages, orientation if 1 <= orientation <= 8 else 1)


def _tiff_pages(r: _Reader, order: str, big: bool, first: int, following: int) -> int | None:
    """Count the pages of the IFD chain; None if it loops, breaks or is too long.

    Readers stop at a broken chain but still show the first page, so the file is not corrupt.
    """
    seen = {first}
    while following:
        if following in seen or len(seen) >= _MAX_STEPS:
            return None
        seen.add(following)
        try:
            following = _tiff_ifd(r, order, big, following)[1]
        except CorruptImageError:
            return None
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
    JPEG: lambda r: _jpeg_walk(r)[0], PNG: _png, WEBP: _webp, GIF: _gif, BMP: _bmp, TIFF: _tiff,
    FITS: _fits,
}  # fmt: skip
