"""JPEG: the frame size and EXIF orientation from the segments before the first scan, and the
walk to the end-of-image marker (and through the images an MPF segment announces) that
``check_complete`` needs, refusing markup in COM and APPn segments on the way.

Standard library only: the edge imports this, so it must never import numpy, scipy, astropy or
OpenCV (cv2).
"""

from __future__ import annotations

import re
import struct

from contracts.media import JPEG
from pixfleet.sniff.base import MAX_STEPS, CorruptImageError, ImageInfo, Reader
from pixfleet.sniff.refusals import refuse_markup
from pixfleet.sniff.tiff import exif_orientation, is_exif

_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # not stuffing, a restart or a fill
_MAX_IMAGES = 8  # JPEGs in one MPF file (primary, gain map, stereo pair, previews)


def inspect(r: Reader) -> ImageInfo:
    """Walk the marker segments from SOI to SOS; return the frame's size and orientation.

    Raises:
        CorruptImageError: the segments are broken or cut, or there is no frame before the scan.
    """
    if r.read(0, 2, "JPEG SOI") != b"\xff\xd8":
        raise CorruptImageError("JPEG: no start-of-image marker")
    pos, dims, orientation, exif_seen = 2, (0, 0), 1, False
    for _ in range(MAX_STEPS):
        marker, step = _marker(r, pos)
        if step:
            pos += step
            continue
        if marker in (0x00, 0xD8, 0xD9):
            raise CorruptImageError(f"JPEG: marker FF{marker:02X} at byte {pos} before the scan")
        length = _length(r, pos, marker)
        if marker == 0xDA:
            if dims == (0, 0):
                raise CorruptImageError("JPEG: scan before any frame header")
            return ImageInfo(JPEG, dims[0], dims[1], 1, orientation)
        if marker in _SOF and dims == (0, 0):
            if length < 8:
                raise CorruptImageError("JPEG: frame header too short")
            h, w = struct.unpack(">HH", r.read(pos + 5, 4, "JPEG frame header"))
            dims = (w, h)  # height 0 (defined later by DNL) fails the size check
        elif marker == 0xE1 and length >= 8 and not exif_seen and is_exif(r, pos + 4):
            exif_seen, orientation = True, exif_orientation(r.sub(pos + 10, pos + 2 + length))
        pos += 2 + length
    raise CorruptImageError(f"JPEG: no scan within {MAX_STEPS} markers")


def image_end(r: Reader) -> int:
    """Return the offset after the last EOI: the primary image's, or that of the last image
    its MPF segment announces (a gain map, a stereo pair) when one follows directly.

    Raises:
        CorruptImageError: the structure is broken or truncated, or a segment holds markup.
    """
    inspect(r)
    end, mpf = _end(r, 0)
    for _ in range(_MAX_IMAGES - 1):
        if not mpf or r.window(end, 3) != b"\xff\xd8\xff":
            break
        end = _end(r, end)[0]
    return end


def _marker(r: Reader, pos: int) -> tuple[int, int]:
    """Return the marker code at ``pos`` and, for a fill byte or a marker without a length
    (TEM, a restart), the bytes to step over; 0 for a marker that starts a segment."""
    prefix, marker = r.read(pos, 2, "JPEG marker")
    if prefix != 0xFF:
        raise CorruptImageError(f"JPEG: no marker at byte {pos}")
    if marker == 0xFF:
        return marker, 1
    return marker, 2 if marker == 0x01 or 0xD0 <= marker <= 0xD7 else 0


def _length(r: Reader, pos: int, marker: int) -> int:
    """Return the length of the segment at ``pos``, checked against the file."""
    length = int.from_bytes(r.read(pos + 2, 2, "JPEG segment"), "big")
    if length < 2:
        raise CorruptImageError(f"JPEG: segment FF{marker:02X} at byte {pos} is broken")
    if pos + 2 + length > r.size:
        raise CorruptImageError(f"JPEG: segment FF{marker:02X} at byte {pos} is cut: truncated")
    return length


def _end(r: Reader, start: int) -> tuple[int, bool]:
    """Walk the JPEG at ``start`` to its EOI; return the offset after it and whether an MPF
    segment announces more images. Refuses markup in COM and APPn segments.

    Before the first scan segments are walked by their lengths; after it the entropy-coded
    data is searched for the next marker (stuffed FF 00 and restarts are not markers).
    """
    pos, scanning, mpf = start + 2, False, False
    for _ in range(MAX_STEPS):
        if scanning:
            pos = _next_marker(r, pos)
        marker, step = _marker(r, pos)
        if step:
            pos += step
            continue
        if marker == 0xD9:
            return pos + 2, mpf
        if marker in (0x00, 0xD8):
            raise CorruptImageError(f"JPEG: marker FF{marker:02X} at byte {pos} inside the image")
        length = _length(r, pos, marker)
        if marker == 0xFE or 0xE0 <= marker <= 0xEF:
            payload = r.read(pos + 4, length - 2, "JPEG segment")
            refuse_markup(payload, f"JPEG: the FF{marker:02X} segment at byte {pos}")
            mpf = mpf or (marker == 0xE2 and payload.startswith(b"MPF\0"))
        scanning = scanning or marker == 0xDA
        pos += 2 + length
    raise CorruptImageError(f"JPEG: no end-of-image marker within {MAX_STEPS} markers")


def _next_marker(r: Reader, pos: int) -> int:
    """Return the offset of the next marker at or after ``pos`` (in entropy-coded data)."""
    while pos < r.size:
        data = r.window(pos)
        found = _MARKER.search(data)
        if found is not None:
            return pos + found.start()
        pos += max(1, len(data) - 1)  # keep a last FF: its marker code is in the next window
    raise CorruptImageError("JPEG: no end-of-image marker (FF D9): truncated")
