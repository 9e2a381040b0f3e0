"""The ``convert`` operation: encode an image as JPEG, PNG, WebP, TIFF or AVIF.

The work is ``imaging.encode``: samples fitted to the format (16-bit kept by PNG and TIFF,
12-bit AVIF; alpha kept except by JPEG, which composites onto the background), metadata by
policy (EXIF and XMP kept or stripped, GPS only on request, ICC kept, the orientation tag set
to 1 once the pixels are upright).
"""

from __future__ import annotations

from contracts.ops import Convert
from worker.ops.api import InputFile, Item, OpContext
from worker.ops.imaging import load, write


def convert(op: Convert, item: Item, ctx: OpContext) -> InputFile:
    """Decode the item (if it is a file) and encode it as ``op.format``.

    Raises:
        UsageError: the input is not a supported image or exceeds the limits.
        FatalError: the encoder fails.
    """
    return write(load(item, ctx, orient=op.auto_orient), ctx, op)
