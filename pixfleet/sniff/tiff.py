"""TIFF and EXIF (a TIFF stream): the first IFD's size, compression and orientation, the page
count of the IFD chain, and the EXIF orientation that JPEG, PNG and WebP carry.

Only single-integer tags held inside their entries are read (never at an offset), so an entry
claiming gigabytes reads nothing. Standard library only: the edge imports this, so it must never
import numpy, scipy, astropy or OpenCV (cv2).
"""

from __future__ import annotations

import struct

from contracts.media import TIFF
from pixfleet.sniff.base import (
    MAX_STEPS,
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    Reader,
)

_INTEGERS = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
# Compressions OpenCV's libtiff decodes: none, CCITT RLE/G3/G4, LZW, old and new JPEG,
# Deflate, PackBits. Not LZMA, Zstd, WebP, JPEG XL, JBIG, LERC or JPEG 2000.
_COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 32773, 32946})
_WIDTH, _LENGTH, _COMPRESSION, _ORIENTATION = 256, 257, 259, 274


def inspect(r: Reader, frame_cap: int) -> ImageInfo:
    """Return the first page's size and orientation, and the number of pages.

    Raises:
        NotAnImageError: the first page is compressed in a way the workers cannot decode.
        CorruptImageError: the header or an IFD is broken, or the chain loops.
        ImageTooLargeError: the chain is longer than ``frame_cap``.
    """
    order, big, offset = _header(r)
    tags, following = _ifd(r, order, big, offset)
    if _WIDTH not in tags or _LENGTH not in tags:
        raise CorruptImageError("TIFF: the first IFD has no ImageWidth or ImageLength")
    compression = tags.get(_COMPRESSION, 1)
    if compression not in _COMPRESSIONS:
        raise NotAnImageError(f"TIFF: compression {compression} is not supported")
    orientation = tags.get(_ORIENTATION, 1)
    pages = _pages(r, order, big, offset, following, frame_cap)
    return ImageInfo(
        TIFF, tags[_WIDTH], tags[_LENGTH], pages, orientation if 1 <= orientation <= 8 else 1
    )


def is_exif(r: Reader, at: int) -> bool:
    """Tell whether the bytes at ``at`` are the ``Exif`` prefix of a JPEG APP1 segment."""
    return r.read(at, 6, "APP1") == b"Exif\0\0"


def exif_orientation(r: Reader) -> int:
    """Return the Orientation tag of an EXIF block (a TIFF stream), 1 if absent or broken."""
    try:
        if is_exif(r, 0):  # PNG and WebP writers sometimes keep the JPEG prefix
            r = r.sub(6, r.size)
        order, big, offset = _header(r)
        value = _ifd(r, order, big, offset)[0].get(_ORIENTATION, 1)
    except CorruptImageError:
        return 1  # broken EXIF is common and decoders ignore it: so do we
    return value if 1 <= value <= 8 else 1


def _header(r: Reader) -> tuple[str, bool, int]:
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


def _layout(order: str, big: bool) -> tuple[str, str, int]:
    """Return the struct formats of an IFD's entry count and of an offset, and an entry's size."""
    return (order + "Q", order + "Q", 20) if big else (order + "H", order + "I", 12)


def _ifd(r: Reader, order: str, big: bool, offset: int) -> tuple[dict[int, int], int]:
    """Return the single-integer tags of the IFD at ``offset`` and the next IFD's offset."""
    if not 8 <= offset < r.size:
        raise CorruptImageError(f"TIFF: IFD offset {offset} is outside the file ({r.size} bytes)")
    count_fmt, word, entry_size = _layout(order, big)
    word_size, count_size = struct.calcsize(word), struct.calcsize(count_fmt)
    count = int(struct.unpack(count_fmt, r.read(offset, count_size, "TIFF IFD"))[0])
    if count > MAX_STEPS:
        raise CorruptImageError(f"TIFF: IFD claims {count} entries")
    data = r.read(offset + count_size, count * entry_size + word_size, "TIFF IFD")
    tags: dict[int, int] = {}
    for at in range(0, count * entry_size, entry_size):
        tag, kind = struct.unpack_from(order + "HH", data, at)
        if kind not in _INTEGERS or struct.unpack_from(word, data, at + 4)[0] != 1:
            continue
        fmt = order + _INTEGERS[kind]
        if struct.calcsize(fmt) <= word_size:  # then the value is in the entry, not at an offset
            tags.setdefault(tag, int(struct.unpack_from(fmt, data, at + 4 + word_size)[0]))
    return tags, int(struct.unpack_from(word, data, count * entry_size)[0])


def _pages(r: Reader, order: str, big: bool, first: int, following: int, frame_cap: int) -> int:
    """Count the pages of the IFD chain, reading only each IFD's entry count and next offset.

    Raises:
        CorruptImageError: the chain loops, or points outside the file or at a cut IFD.
        ImageTooLargeError: the chain is longer than ``frame_cap``.
    """
    count_fmt, word, entry_size = _layout(order, big)
    count_size = struct.calcsize(count_fmt)
    seen = {first}
    while following:
        if following in seen:
            raise CorruptImageError(f"TIFF: the IFD chain loops back to byte {following}")
        if len(seen) >= frame_cap:
            raise ImageTooLargeError(f"TIFF: more than {frame_cap:,} pages")
        if not 8 <= following < r.size:
            raise CorruptImageError(f"TIFF: IFD offset {following} is outside the file")
        seen.add(following)
        count = struct.unpack(count_fmt, r.read(following, count_size, "TIFF IFD"))[0]
        at = following + count_size + count * entry_size
        following = int(struct.unpack(word, r.read(at, struct.calcsize(word), "TIFF IFD"))[0])
    return len(seen)
