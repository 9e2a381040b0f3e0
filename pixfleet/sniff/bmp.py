"""BMP: the size from the DIB header, and the header sizes that make "BM" a signature.

BMP has no end marker, so ``check_complete`` does not look past the pixels. Standard library
only: the edge imports this, so it must never import numpy, scipy, astropy or OpenCV (cv2).
"""

from __future__ import annotations

import struct

from contracts.media import BMP
from pixfleet.sniff.base import ImageInfo, Reader

# "BM" alone is too weak a signature (text starts with it): the DIB header size must fit too.
HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def inspect(r: Reader) -> ImageInfo:
    """Return the size the DIB header gives (one frame).

    Raises:
        CorruptImageError: the header is cut.
    """
    d = r.read(14, 12, "BMP header")
    if int.from_bytes(d[:4], "little") == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sides
        w, h = struct.unpack("<HH", d[4:8])
    else:
        w, h = struct.unpack("<ii", d[4:12])
    return ImageInfo(BMP, w, abs(h), 1)  # a negative height means rows are stored top-down
