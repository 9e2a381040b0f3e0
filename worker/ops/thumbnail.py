"""The ``thumbnail`` operation: the longer side becomes ``op.size`` pixels, then encoded.

JPEGs are decoded at 1/2, 1/4 or 1/8 scale when the target allows (``imaging.load`` with a
target): libjpeg scales in the DCT, so a 12 MP photo never exists at full size. The picture is
scaled in its stored orientation and turned upright afterwards (cheaper on the small result).
EXIF and XMP are dropped; the ICC profile is kept.
"""

from __future__ import annotations

from contracts.ops import Convert, Thumbnail
from worker.ops.api import InputFile, Item, OpContext
from worker.ops.geometry import scale
from worker.ops.imaging import dimensions, inspect, load, upright, write


def thumbnail(op: Thumbnail, item: Item, ctx: OpContext) -> InputFile:
    """Scale so the longer side is ``op.size`` (never up) and encode as ``op.format``.

    Writes ``<item name>.<jpg|png|webp|avif>``. Alpha is kept for PNG, WebP and AVIF and
    composited onto white for JPEG; 16-bit samples are kept for PNG (12 bits for AVIF).

    Raises:
        UsageError: the input is not a supported image, is corrupt, or exceeds the limits.
    """
    info = inspect(item, ctx)
    target = target_size(*dimensions(item, info), op.size)
    picture = load(item, ctx, orient=False, target=target, info=info)
    h, w = picture.pixels.shape[:2]
    tw, th = target
    if (w - h) * (tw - th) < 0:  # still stored turned (EXIF 5-8): so is the target
        tw, th = th, tw
    small = upright(picture.with_pixels(scale(picture.pixels, (tw, th))))
    quality = None if op.format == "png" else op.quality
    return write(small, ctx, Convert(format=op.format, quality=quality, metadata="strip"))


def target_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the longer side ``size`` and the aspect kept, never larger."""
    longer = max(width, height)
    if longer <= size:
        return width, height

    def side(v: int) -> int:  # round half up, at least one pixel
        return max(1, (2 * v * size + longer) // (2 * longer))

    return (size, side(height)) if width >= height else (side(width), size)
