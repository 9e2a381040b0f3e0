"""Geometric operations: ``resize``, ``crop``, ``rotate`` and ``flip`` (OpenCV + numpy).

Each takes an item (a file or the picture an earlier step left) and returns a ``Picture``;
EXIF orientation is applied first unless the op says ``auto_orient: false``. Sizes are
computed on the upright image; results larger than ``max_output_pixels`` are refused before
they are allocated. Pixels are never changed in place: branches share them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from cv2.typing import MatLike

from contracts.ops import Crop, Flip, Gravity, Resize, Rotate
from worker.errors import UsageError
from worker.ops.api import Item, OpContext, Picture
from worker.ops.imaging import (
    check_output,
    colour,
    dimensions,
    inspect,
    load,
    max_sample,
    needs_alpha,
    with_alpha,
)

_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
_FLIP = {"horizontal": 1, "vertical": 0, "both": -1}


def resize(op: Resize, item: Item, ctx: OpContext) -> Picture:
    """Scale to the op's box with its fit (see ``contracts.ops.Resize``)."""
    info = inspect(item, ctx)
    w, h = dimensions(item, info, orient=op.auto_orient)
    scaled, box = resize_plan(op, w, h)
    check_output(*scaled, ctx, "the resized image")
    if box is not None:
        check_output(*box, ctx, "the resized image")
    picture = load(item, ctx, orient=op.auto_orient, target=scaled, info=info)
    pixels = scale(picture.pixels, scaled, op.interpolation)
    if box is not None and op.fit == "cover":
        pixels = _cut(pixels, _place(box, scaled, op.gravity), box)
    elif box is not None:  # contain: pad to the box
        pixels = _pad(pixels, box, op.gravity, op.background)
    return picture.with_pixels(pixels)


def resize_plan(op: Resize, w: int, h: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """Return the scaled size and, for ``cover`` and ``contain``, the box to cut or pad to."""

    def cap(s: float) -> float:
        return s if op.upscale else min(s, 1.0)

    if op.width is None or op.height is None:
        s = cap(op.width / w if op.width is not None else (op.height or h) / h)
        return (_side(w, s), _side(h, s)), None
    sx, sy = op.width / w, op.height / h
    match op.fit:
        case "fill":
            return (_side(w, cap(sx)), _side(h, cap(sy))), None
        case "inside":
            s = cap(min(sx, sy))
            return (_side(w, s), _side(h, s)), None
        case "contain":
            s = cap(min(sx, sy))
            return (_side(w, s), _side(h, s)), (op.width, op.height)
        case _:  # cover
            s = cap(max(sx, sy))
            scaled = (_side(w, s), _side(h, s))
            return scaled, (min(op.width, scaled[0]), min(op.height, scaled[1]))


def _side(side: int, s: float) -> int:
    return max(1, math.floor(side * s + 0.5))


def scale(pixels: MatLike, size: tuple[int, int], interpolation: str = "auto") -> MatLike:
    """Resize to ``size`` (width, height): area averaging down, Lanczos up, unless told.

    Colours are weighted by alpha, so the colour of invisible pixels does not bleed into the
    visible edges.
    """
    h, w = pixels.shape[:2]
    tw, th = size
    if (w, h) == (tw, th):
        return pixels
    if interpolation == "auto":
        down, up = tw <= w and th <= h, tw >= w and th >= h
        flag = cv2.INTER_AREA if down else cv2.INTER_LANCZOS4 if up else cv2.INTER_CUBIC
    else:
        flag = _INTERPOLATION[interpolation]
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return _scale_premultiplied(pixels, size, flag)
    return cv2.resize(pixels, size, interpolation=flag)


def _scale_premultiplied(pixels: MatLike, size: tuple[int, int], flag: int) -> MatLike:
    top = max_sample(pixels)
    alpha = pixels[:, :, 3]
    if float(alpha.min()) == top:  # opaque: the plain path is exact and cheaper
        return cv2.resize(pixels, size, interpolation=flag)
    weights = cv2.merge([alpha, alpha, alpha, np.full_like(alpha, top)])
    small = cv2.resize(cv2.multiply(pixels, weights, scale=1 / top), size, interpolation=flag)
    small = small.astype(np.float32)
    a = small[:, :, 3:]
    small[:, :, :3] = np.where(a > 0, small[:, :, :3] * top / np.maximum(a, 1e-6), 0)
    if pixels.dtype == np.float32:
        return np.clip(small, 0, 1)
    result: MatLike = np.clip(small + 0.5, 0, top).astype(pixels.dtype)
    return result


def _place(box: tuple[int, int], area: tuple[int, int], gravity: Gravity) -> tuple[int, int]:
    """Top-left corner of ``box`` inside ``area`` (both width, height) by gravity."""
    (bw, bh), (aw, ah) = box, area
    x = 0 if "west" in gravity else aw - bw if "east" in gravity else (aw - bw) // 2
    y = 0 if "north" in gravity else ah - bh if "south" in gravity else (ah - bh) // 2
    return x, y


def _cut(pixels: MatLike, at: tuple[int, int], size: tuple[int, int]) -> MatLike:
    (x, y), (w, h) = at, size
    return np.ascontiguousarray(pixels[y : y + h, x : x + w])


def _pad(pixels: MatLike, box: tuple[int, int], gravity: Gravity, background: str) -> MatLike:
    h, w = pixels.shape[:2]
    if (w, h) == box:
        return pixels
    if needs_alpha(background):
        pixels = with_alpha(pixels)
    x, y = _place((w, h), box, gravity)
    return cv2.copyMakeBorder(
        pixels, y, box[1] - h - y, x, box[0] - w - x, cv2.BORDER_CONSTANT,
        value=colour(background, pixels),
    )  # fmt: skip


def crop(op: Crop, item: Item, ctx: OpContext) -> Picture:
    """Cut the op's box (clipped to the image).

    Raises:
        UsageError: the box lies entirely outside the image.
    """
    picture = load(item, ctx, orient=op.auto_orient)
    h, w = picture.pixels.shape[:2]
    if op.x is None or op.y is None:
        size = (min(op.width, w), min(op.height, h))
        return picture.with_pixels(_cut(picture.pixels, _place(size, (w, h), op.gravity), size))
    if op.x >= w or op.y >= h:
        raise UsageError(
            f"the crop box at ({op.x}, {op.y}) lies outside the {w} x {h} image",
        )
    size = (min(op.width, w - op.x), min(op.height, h - op.y))
    return picture.with_pixels(_cut(picture.pixels, (op.x, op.y), size))


def rotate(op: Rotate, item: Item, ctx: OpContext) -> Picture:
    """Rotate clockwise: exact for multiples of 90 degrees, cubic resampling otherwise."""
    angle = op.angle % 360
    info = inspect(item, ctx)
    w, h = dimensions(item, info, orient=op.auto_orient)
    if angle % 90 == 0:
        turns = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180}
        code = turns.get(int(angle), cv2.ROTATE_90_COUNTERCLOCKWISE)
        picture = load(item, ctx, orient=op.auto_orient, info=info)
        pixels = picture.pixels if code is None else cv2.rotate(picture.pixels, code)
        return picture.with_pixels(pixels)
    rad = math.radians(angle)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    size = (math.ceil(w * cos + h * sin), math.ceil(w * sin + h * cos)) if op.expand else (w, h)
    check_output(*size, ctx, f"the canvas of a {op.angle} degree rotation")
    picture = load(item, ctx, orient=op.auto_orient, info=info)
    pixels = with_alpha(picture.pixels) if needs_alpha(op.background) else picture.pixels
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -angle, 1.0)
    matrix[0, 2] += (size[0] - w) / 2
    matrix[1, 2] += (size[1] - h) / 2
    rotated = cv2.warpAffine(
        pixels, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
        borderValue=colour(op.background, pixels),
    )  # fmt: skip
    return picture.with_pixels(rotated)


def flip(op: Flip, item: Item, ctx: OpContext) -> Picture:
    """Mirror left-right, top-bottom or both."""
    picture = load(item, ctx, orient=op.auto_orient)
    return picture.with_pixels(cv2.flip(picture.pixels, _FLIP[op.axis]))
