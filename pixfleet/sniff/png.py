"""PNG and APNG: the IHDR size, the ``acTL`` frame count and ``eXIf`` orientation, and the walk
to IEND that ``check_complete`` needs, refusing markup in text chunks on the way.

Standard library only (zlib for compressed text): the edge imports this, so it must never
import numpy, scipy, astropy or OpenCV (cv2).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from contracts.media import PNG
from pixfleet.sniff.base import WINDOW, CorruptImageError, ImageInfo, Reader
from pixfleet.sniff.refusals import refuse_markup, scan_markup
from pixfleet.sniff.tiff import exif_orientation

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_CHUNKS = 100_000  # libpng writes 8 KiB IDAT chunks: 800 MB of them


def inspect(r: Reader) -> ImageInfo:
    """Return the IHDR size, the APNG frame count and the EXIF orientation before the data.

    Raises:
        CorruptImageError: IHDR is missing or damaged, or a chunk is broken or cut.
    """
    ihdr = r.read(8, 25, "PNG IHDR")
    length, ctype, w, h = struct.unpack(">I4sII", ihdr[:16])
    if ctype != b"IHDR" or length != 13:
        raise CorruptImageError("PNG: the first chunk is not IHDR")
    if zlib.crc32(ihdr[4:21]) != int.from_bytes(ihdr[21:25], "big"):
        raise CorruptImageError("PNG: IHDR checksum mismatch")
    frames: int | None = 1
    orientation = 1
    for ctype, start, length in _chunks(r, 33, (b"IDAT", b"IEND")):
        if ctype == b"acTL" and length >= 8:  # APNG
            frames = int.from_bytes(r.read(start, 4, "PNG acTL"), "big") or None
        elif ctype == b"eXIf":
            orientation = exif_orientation(r.sub(start, start + length))
    return ImageInfo(PNG, w, h, frames, orientation)


def image_end(r: Reader) -> int:
    """Return the offset after the IEND chunk.

    Raises:
        CorruptImageError: the signature, IHDR or a chunk is broken, there is no IDAT chunk,
            or a text chunk holds markup.
    """
    if r.read(0, 8, "PNG signature") != SIGNATURE:
        raise CorruptImageError("PNG: bad signature")
    inspect(r)
    end, has_data = 0, False
    for ctype, start, length in _chunks(r, 8, (b"IEND",)):
        end, has_data = start + length + 4, has_data or ctype == b"IDAT"
        if ctype in (b"tEXt", b"zTXt", b"iTXt"):
            _text_markup(r, ctype, start, length)
    if not has_data:
        raise CorruptImageError("PNG: no IDAT chunk")
    return end


def _chunks(r: Reader, pos: int, stop: tuple[bytes, ...]) -> Iterator[tuple[bytes, int, int]]:
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


def _text_markup(r: Reader, ctype: bytes, start: int, length: int) -> None:
    """Refuse a tEXt, zTXt or iTXt chunk holding markup (compressed text: its first MiB)."""
    where = f"PNG: the {ctype.decode()} chunk at byte {start - 8}"
    data = r.read(start, min(length, WINDOW), "PNG text chunk")
    keyword, _, rest = data.partition(b"\0")
    if ctype == b"tEXt" or (ctype == b"iTXt" and rest[:1] != b"\1"):
        scan_markup(r, start, start + length, where)
        return
    if ctype == b"iTXt":
        rest = rest[2:].split(b"\0", 2)[-1]  # flag, method, language, translated keyword
    try:
        text = zlib.decompressobj().decompress(rest[1:] if ctype == b"zTXt" else rest, WINDOW)
    except zlib.error:
        text = b""  # decoders skip a broken text chunk: nothing to show anyone
    refuse_markup(keyword + b"\0" + text, where)
