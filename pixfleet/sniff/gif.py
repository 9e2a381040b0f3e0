"""GIF: the logical screen (widened by frames reaching past it), the frame count, and the walk
to the trailer that ``check_complete`` needs, refusing markup in comments on the way.

The walk reads the file through a 1 MiB window, since GIF blocks are tiny. Standard library
only: the edge imports this, so it must never import numpy, scipy, astropy or OpenCV (cv2).
"""

from __future__ import annotations

import struct

from contracts.media import GIF
from pixfleet.sniff.base import (
    MAX_STEPS,
    WINDOW,
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    Reader,
)
from pixfleet.sniff.refusals import refuse_markup

_TOO_MANY_SUB_BLOCKS = "GIF: more data sub-blocks than a file its size holds"


def inspect(r: Reader, frame_cap: int) -> ImageInfo:
    """Walk the blocks to the trailer; return the canvas size and the frame count.

    Raises:
        CorruptImageError: a block is unknown or cut, there is no image, or the file is mostly
            tiny sub-blocks.
        ImageTooLargeError: more than ``frame_cap`` frames.
    """
    return _walk(r, frame_cap)[0]


def image_end(r: Reader, frame_cap: int) -> int:
    """Return the offset after the trailer, refusing comments that hold markup.

    Raises:
        CorruptImageError, ImageTooLargeError: as :func:`inspect`, and for markup in a comment.
    """
    return _walk(r, frame_cap, comments=True)[1]


class _Window:
    """Byte-at-a-time reads through a ``WINDOW`` buffer, for walks over many tiny blocks.

    ``budget`` bounds the data sub-blocks walked: encoders write 255-byte ones, so a file of
    mostly tiny sub-blocks (which would take seconds to walk) is refused long before its end.
    """

    def __init__(self, r: Reader, frame_cap: int) -> None:
        self.r, self.base, self.buf = r, 0, b""
        self.budget = r.size // 128 + 6 * frame_cap

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
            self.budget -= 1  # inline, not a call: this loop runs once per sub-block
            if self.budget < 0:
                raise CorruptImageError(_TOO_MANY_SUB_BLOCKS)

    def sub_block_data(self, pos: int) -> tuple[bytes, int]:
        """Return the data of the chain at ``pos`` (its first MiB) and the offset after it."""
        parts: list[bytes] = []
        kept = 0
        while kept < WINDOW:
            n = self.byte(pos, "data sub-block")
            if n == 0:
                return b"".join(parts), pos + 1
            parts.append(self.take(pos + 1, n, "GIF data sub-block"))
            kept, pos = kept + n, pos + 1 + n
            self.budget -= 1
            if self.budget < 0:
                raise CorruptImageError(_TOO_MANY_SUB_BLOCKS)
        return b"".join(parts), self.skip_sub_blocks(pos)


def _walk(r: Reader, frame_cap: int, comments: bool = False) -> tuple[ImageInfo, int]:
    """Walk a GIF's blocks to its trailer; return its info and the offset after the trailer.

    A frame reaching past the logical screen widens the size, as decoders grow the canvas.
    With ``comments``, comment extensions holding markup are refused.
    """
    w = _Window(r, frame_cap)
    width, height = struct.unpack("<HH", r.read(6, 4, "GIF screen descriptor"))
    packed = w.byte(10, "screen descriptor")
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    frames = 0
    for _ in range(4 * frame_cap + MAX_STEPS):
        kind = w.byte(pos, "block")
        if kind == 0x3B:
            if frames == 0:
                raise CorruptImageError("GIF: no image in the file")
            return ImageInfo(GIF, width, height, frames), pos + 1
        if kind == 0x2C:
            frames += 1
            if frames > frame_cap:
                raise ImageTooLargeError(f"GIF: more than {frame_cap:,} frames")
            left, top, fw, fh, packed = struct.unpack("<HHHHB", r.read(pos + 1, 9, "GIF frame"))
            width, height = max(width, left + fw), max(height, top + fh)
            pos += 11 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)  # + LZW code size
        elif kind == 0x21:
            label, pos = w.byte(pos + 1, "extension"), pos + 2
            if label == 0xFE and comments:
                text, pos = w.sub_block_data(pos)
                refuse_markup(text, "GIF: a comment")
                continue
        else:
            raise CorruptImageError(f"GIF: unknown block 0x{kind:02X} at byte {pos}")
        pos = w.skip_sub_blocks(pos)
    raise CorruptImageError("GIF: too many blocks")
