"""FITS: the size and plane count of the first image HDU (the primary array, an IMAGE
extension or a tile-compressed image), found by walking at most ``_MAX_HDUS`` headers.

FITS has no end marker, so ``check_complete`` does not look past the data. Standard library
only: the edge imports this, so it must never import numpy, scipy, astropy or OpenCV (cv2).
"""

from __future__ import annotations

import math

from contracts.media import FITS
from pixfleet.sniff.base import CorruptImageError, ImageInfo, Reader

_BLOCK, _MAX_BLOCKS, _MAX_HDUS = 2880, 256, 32


def inspect(r: Reader) -> ImageInfo:
    """Return the first image HDU's two first axes and the product of the others (planes);
    None for all three when no HDU holds an image.

    Raises:
        CorruptImageError: a header has no END card, or a size keyword is missing or broken.
    """
    offset = 0
    for _ in range(_MAX_HDUS):
        cards, data_at = _header(r, offset)
        z = "Z" if cards.get("ZIMAGE", "").strip() == "T" else ""  # a tile-compressed image
        axes = _axes(cards, z)
        image = bool(z) or offset == 0 or cards.get("XTENSION", "").strip() == "IMAGE"
        if image and len(axes) >= 2 and math.prod(axes) > 0:
            return ImageInfo(FITS, axes[0], axes[1], math.prod(axes[2:]))
        offset = data_at + _data_size(cards)
        if offset >= r.size:
            break
    return ImageInfo(FITS, None, None, None)


def _header(r: Reader, offset: int) -> tuple[dict[str, str], int]:
    """Return the keyword values of the header at ``offset`` and the offset where it ends."""
    cards: dict[str, str] = {}
    for block in range(_MAX_BLOCKS):
        data = r.read(offset + block * _BLOCK, _BLOCK, "FITS header")
        for i in range(0, _BLOCK, 80):
            key = data[i : i + 8].decode("latin-1").strip()
            if key == "END":
                return cards, offset + (block + 1) * _BLOCK
            if data[i + 8 : i + 10] == b"= ":
                value = data[i + 10 : i + 80].decode("latin-1").strip()
                quoted = value.startswith("'")
                cards.setdefault(key, value.split("'")[1] if quoted else value.split("/")[0])
    raise CorruptImageError(f"FITS: no END card within {_MAX_BLOCKS} blocks")


def _int(cards: dict[str, str], key: str, default: int | None = None) -> int:
    if key not in cards and default is not None:
        return default
    try:
        return int(cards[key])
    except (KeyError, ValueError) as e:
        raise CorruptImageError(f"FITS: {key} is missing or not an integer") from e


def _axes(cards: dict[str, str], prefix: str) -> list[int]:
    """Return NAXIS1..NAXISn, or ZNAXIS1..ZNAXISn with prefix "Z"."""
    n = _int(cards, f"{prefix}NAXIS")
    if not 0 <= n <= 999:
        raise CorruptImageError(f"FITS: {prefix}NAXIS is {n}")
    axes = [_int(cards, f"{prefix}NAXIS{i}") for i in range(1, n + 1)]
    if any(a < 0 for a in axes):
        raise CorruptImageError(f"FITS: negative {prefix}NAXISn")
    return axes


def _data_size(cards: dict[str, str]) -> int:
    """Return the bytes of an HDU's data: |BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 * ...)."""
    axes = _axes(cards, "")
    if not axes:
        return 0
    size = abs(_int(cards, "BITPIX")) // 8 * _int(cards, "GCOUNT", 1)
    size *= _int(cards, "PCOUNT", 0) + math.prod(axes)
    if size < 0:
        raise CorruptImageError("FITS: negative PCOUNT or GCOUNT")
    return -(-size // _BLOCK) * _BLOCK  # padded to whole blocks
