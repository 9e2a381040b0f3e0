"""AVIF and the ISO BMFF boxes it is made of (the HEIF family): the ``ftyp`` brands that tell
AVIF from HEIC and video, the primary item's ``ispe`` extents, the sample count of an image
sequence's first track, and where the last top-level box ends for ``check_complete``.

Standard library only: the edge imports this, so it must never import numpy, scipy, astropy or
OpenCV (cv2).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from contracts.media import AVIF
from pixfleet.sniff.base import MAX_STEPS, WINDOW, CorruptImageError, ImageInfo, Reader

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
_AV1_BRANDS = frozenset({b"av01", b"MA1A", b"MA1B"})
# Top-level boxes an AVIF is made of: one of them cut short is a truncated file, not a tail.
_STRUCTURE = (b"ftyp", b"meta", b"moov", b"mdat", b"free", b"skip", b"uuid")
_SAMPLE_SIZES = (b"trak", b"mdia", b"minf", b"stbl")  # the path to stsz or stz2


def ftyp_brands(head: bytes) -> set[bytes] | None:
    """Return the major and compatible brands of an ISO BMFF ``ftyp`` box, None if there is none."""
    size = int.from_bytes(head[:4], "big")
    if head[4:8] != b"ftyp" or size < 16:
        return None
    stop = min(size, len(head))
    return {head[8:12], *(head[i : i + 4] for i in range(16, stop - 3, 4))}


def is_avif(head: bytes) -> bool:
    """Tell whether the ``ftyp`` box at the start of ``head`` announces AVIF (or AV1 in HEIF)."""
    brands = ftyp_brands(head)
    return bool(
        brands and (brands & _AVIF_BRANDS or (brands & _HEIF_BRANDS and brands & _AV1_BRANDS))
    )


def inspect(r: Reader) -> ImageInfo:
    """Return the primary item's size and, for a sequence, its first track's sample count.

    Raises:
        CorruptImageError: a box is broken or cut, or meta, ispe or the samples are missing.
    """
    top = _top(r)[0]
    if b"meta" not in top:
        raise CorruptImageError("AVIF: no meta box")
    meta_start, meta_end = top[b"meta"]
    w, h = _size(r, meta_start + 4, meta_end)
    frames: int | None = 1
    if b"moov" in top:  # a sequence: its first track's sample count
        found = _child(r, *top[b"moov"], (*_SAMPLE_SIZES, b"stsz"))
        found = found or _child(r, *top[b"moov"], (*_SAMPLE_SIZES, b"stz2"))
        if found is not None and found[1] - found[0] < 12:
            raise CorruptImageError("AVIF: sample size box too short")
        frames = int.from_bytes(r.read(found[0] + 8, 4, "AVIF stsz"), "big") if found else None
        if frames == 0:
            raise CorruptImageError("AVIF: a sequence without samples")
    return ImageInfo(AVIF, w, h, frames)


def image_end(r: Reader) -> int:
    """Return where the last top-level box ends, having checked the image's boxes.

    Raises:
        CorruptImageError: as :func:`inspect`.
    """
    inspect(r)
    return _top(r)[1]


def _boxes(r: Reader, start: int, stop: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, payload offset, end) of the boxes in ``[start, stop)``."""
    pos = start
    for _ in range(MAX_STEPS):
        if pos >= stop:
            return
        btype, size, header = _box_header(r, pos, stop)
        if size < header or pos + size > stop:
            raise CorruptImageError(f"AVIF: box {btype!r} at byte {pos} has a bad size {size}")
        yield btype, pos + header, pos + size
        pos += size
    raise CorruptImageError(f"AVIF: more than {MAX_STEPS} boxes")


def _box_header(r: Reader, pos: int, stop: int) -> tuple[bytes, int, int]:
    """Return a box's type, size (0: to ``stop``) and header length."""
    size, btype = struct.unpack(">I4s", r.read(pos, 8, "AVIF box header"))
    if size == 1:
        return btype, int.from_bytes(r.read(pos + 8, 8, "AVIF box size"), "big"), 16
    return btype, size or stop - pos, 8


def _child(r: Reader, start: int, stop: int, path: tuple[bytes, ...]) -> tuple[int, int] | None:
    """Return (payload offset, end) of the first box along ``path`` (meta is a full box)."""
    for btype, payload, end in _boxes(r, start, stop):
        if btype == path[0]:
            payload += 4 if btype == b"meta" else 0
            return (payload, end) if len(path) == 1 else _child(r, payload, end, path[1:])
    return None


def _top(r: Reader) -> tuple[dict[bytes, tuple[int, int]], int]:
    """Return the top-level boxes by type (the first of each) and where the last one ends.

    The walk stops at the first bytes that are not a box header: what follows is trailing data.
    """
    found: dict[bytes, tuple[int, int]] = {}
    pos = 0
    for _ in range(MAX_STEPS):
        if pos + 8 > r.size:
            break
        btype, size, header = _box_header(r, pos, r.size)
        if not btype.isalnum() or size < header:
            break
        if pos + size > r.size:
            if btype in _STRUCTURE:
                raise CorruptImageError(f"AVIF: {btype!r} box runs past the end: truncated")
            break
        found.setdefault(btype, (pos + header, pos + size))
        pos += size
    return found, pos


def _size(r: Reader, start: int, stop: int) -> tuple[int, int]:
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
    for index in _primary_properties(r, start, stop):
        if index in extents:
            return extents[index]
    return max(extents.values(), key=lambda wh: wh[0] * wh[1])


def _primary_properties(r: Reader, start: int, stop: int) -> list[int]:
    """Return the property indexes (1-based) ``ipma`` gives the ``pitm`` item; [] if unknown."""
    pitm, ipma = _child(r, start, stop, (b"pitm",)), _child(r, start, stop, (b"iprp", b"ipma"))
    if pitm is None or ipma is None or ipma[1] - ipma[0] > WINDOW:
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
