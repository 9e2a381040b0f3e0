"""What every format parser of :mod:`pixfleet.sniff` shares: the :class:`ImageInfo` they
return, the three errors they raise, the :class:`Reader` every read goes through, and the bounds
on their walks (the media types they answer with are ``contracts.media``'s).

Standard library only, like the whole package: the edge imports it, so it must never import
numpy, scipy, astropy, OpenCV (cv2) or Pillow.
"""

from __future__ import annotations

from typing import BinaryIO, NamedTuple

MAX_STEPS = 4096  # markers, chunks, boxes or IFD entries: far above real files, bounds junk
WINDOW = 1 << 20  # bytes read at a time by walks that touch the whole file


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


class Reader:
    """Random access to ``[base, end)`` of a file, where a short read means a truncated image."""

    def __init__(self, f: BinaryIO, end: int, base: int = 0) -> None:
        self.f, self.end, self.base = f, end, base
        self.size = max(0, end - base)

    def read(self, offset: int, n: int, what: str) -> bytes:
        """Return exactly ``n`` bytes from ``offset``.

        Raises:
            CorruptImageError: the bytes reach past the end (a truncated ``what``).
        """
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CorruptImageError(
                f"truncated {what}: needs bytes to {offset + n}, has {self.size}"
            )
        self.f.seek(self.base + offset)
        data = self.f.read(n)
        if len(data) != n:  # the file shrank under us
            raise CorruptImageError(f"truncated {what}")
        return data

    def window(self, offset: int, n: int = WINDOW) -> bytes:
        """Return up to ``n`` bytes from ``offset``: fewer at the end, none past it."""
        self.f.seek(self.base + offset)
        return self.f.read(max(0, min(n, self.size - offset)))

    def sub(self, start: int, stop: int) -> Reader:
        """Return a reader of ``[start, stop)`` of this one (cut at its end)."""
        return Reader(self.f, min(self.end, self.base + stop), self.base + start)
