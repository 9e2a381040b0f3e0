"""WebP: the size from the VP8, VP8L or VP8X header, the ``ANMF`` frame count and ``EXIF``
orientation of an extended file, and the RIFF end that ``check_complete`` needs.

Standard library only: the edge imports this, so it must never import numpy, scipy, astropy or
OpenCV (cv2).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from contracts.media import WEBP
from pixfleet.sniff.base import MAX_STEPS, CorruptImageError, ImageInfo, ImageTooLargeError, Reader
from pixfleet.sniff.tiff import exif_orientation


def inspect(r: Reader, frame_cap: int) -> ImageInfo:
    """Return the size, and for an extended file the frame count and orientation.

    Raises:
        CorruptImageError: the first chunk is unknown or damaged, a chunk is cut, or an
            animation has no frames.
        ImageTooLargeError: more than ``frame_cap`` frames.
    """
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
    for kind, start, size in _chunks(r, 20 + length + (length & 1), frame_cap):
        if kind == b"ANMF":
            frames += 1
        elif kind == b"EXIF":
            orientation = exif_orientation(r.sub(start, start + size))
    if animated and frames == 0:
        raise CorruptImageError("WebP: animated, but without frames")
    return ImageInfo(WEBP, w, h, frames if animated else 1, orientation)


def image_end(r: Reader, frame_cap: int) -> int:
    """Return where the RIFF data ends (padded to an even offset), having walked its chunks.

    Raises:
        CorruptImageError: the RIFF size reaches past the file, or a chunk is cut.
        ImageTooLargeError: more than ``frame_cap`` frames.
    """
    end = _riff_end(r)
    if end > r.size:
        raise CorruptImageError(
            f"WebP: the RIFF header says {end} bytes, the file has {r.size}: truncated"
        )
    for _ in _chunks(r, 12, frame_cap):
        pass  # every chunk within the RIFF
    return end + (end & 1)


def _riff_end(r: Reader) -> int:
    """Return the offset where the RIFF header says the data ends."""
    return 8 + int.from_bytes(r.read(4, 4, "RIFF header"), "little")


def _chunks(r: Reader, pos: int, frame_cap: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, data offset, length) of the RIFF chunks from ``pos`` to the RIFF's end."""
    stop = min(r.size, _riff_end(r))
    for _ in range(frame_cap + MAX_STEPS):
        if pos + 8 > stop:
            return
        ctype, length = struct.unpack("<4sI", r.read(pos, 8, "WebP chunk header"))
        if pos + 8 + length > stop:
            raise CorruptImageError(f"WebP: the {ctype!r} chunk at byte {pos} is cut: truncated")
        yield ctype, pos + 8, length
        pos += 8 + length + (length & 1)
    raise ImageTooLargeError(f"WebP: more than {frame_cap:,} frames")
