"""Pixel filters (``filter``) and non-local means denoising (``denoise``), with OpenCV.

Filters work on every depth the decoder gives (8- and 16-bit, gray, BGR, BGRA); alpha is
carried through untouched. Parameters were range-checked at the edge; defaults live here.
"""

from __future__ import annotations

import cv2
import numpy as np
from cv2.typing import MatLike

from contracts.ops import Denoise, Filter
from worker.ops.api import Item, OpContext, Picture
from worker.ops.imaging import load, max_sample


def apply_filter(op: Filter, item: Item, ctx: OpContext) -> Picture:
    """Apply ``op.kind`` to the picture (see ``contracts.ops.Filter`` for the parameters)."""
    picture = load(item, ctx)
    colour, alpha = _split(picture.pixels)
    match op.kind:
        case "blur":
            out = cv2.GaussianBlur(colour, (0, 0), op.sigma or 2.0)
        case "median":
            out = _median(colour, op.size or 3)
        case "unsharp":
            out = unsharp(colour, op.sigma or 1.0, 1.0 if op.amount is None else op.amount,
                          op.threshold or 0.0)  # fmt: skip
        case "bilateral":
            out = _bilateral(colour, op.size or 9, op.sigma or 5.0, op.sigma_color or 50.0)
        case "grayscale":
            out = colour if colour.ndim == 2 else cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
        case _:  # clahe
            out = _clahe(colour, op.clip_limit or 2.0, op.tiles or 8)
    return picture.with_pixels(_join(out, alpha))


def _split(pixels: MatLike) -> tuple[MatLike, MatLike | None]:
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return pixels[:, :, :3], pixels[:, :, 3]
    return pixels, None


def _join(colour: MatLike, alpha: MatLike | None) -> MatLike:
    if alpha is None:
        return colour
    if colour.ndim == 2:
        colour = cv2.cvtColor(colour, cv2.COLOR_GRAY2BGR)
    return cv2.merge([*cv2.split(colour), alpha])


def _median(pixels: MatLike, size: int) -> MatLike:
    if size <= 5 or pixels.dtype == np.uint8:
        return cv2.medianBlur(pixels, size)
    # OpenCV takes windows above 5 in 8 bits only; scipy's filter keeps the depth.
    from scipy.ndimage import median_filter

    window = (size, size, 1) if pixels.ndim == 3 else (size, size)
    return median_filter(pixels, size=window, mode="nearest")  # edges as cv2.medianBlur


def unsharp(pixels: MatLike, sigma: float, amount: float, threshold: float) -> MatLike:
    """``pixels + amount * (pixels - blur)``, left unchanged where the difference is below
    ``threshold`` (in 8-bit levels, scaled to the depth).

    Computed by ``cv2.addWeighted`` in the samples' own type (saturating, rounded): a 12 MP
    image needs a few image-sized buffers, not float copies of it.
    """
    blur = cv2.GaussianBlur(pixels, (0, 0), sigma)
    out = cv2.addWeighted(pixels, 1 + amount, blur, -amount, 0)
    if pixels.dtype == np.float32:
        out = np.clip(out, 0, 1)
    if threshold > 0:
        keep = cv2.absdiff(pixels, blur) < threshold * max_sample(pixels) / 255
        np.copyto(out, pixels, where=keep)
    return out


def _bilateral(pixels: MatLike, size: int, sigma: float, sigma_colour: float) -> MatLike:
    if pixels.dtype == np.uint8:
        return cv2.bilateralFilter(pixels, size, sigma_colour, sigma)
    top = max_sample(pixels)
    as_float = pixels.astype(np.float32) / top  # OpenCV filters 8-bit or float only
    out = cv2.bilateralFilter(as_float, size, sigma_colour / 255, sigma)
    return np.clip(out * top + 0.5, 0, top).astype(pixels.dtype)


def _clahe(pixels: MatLike, clip_limit: float, tiles: int) -> MatLike:
    """Equalise the lightness (L of Lab) so colours keep their hue."""
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    # OpenCV clips at clip_limit x tile area / bins: with 65,536 bins a 16-bit limit is 256
    # times the 8-bit one for the same contrast.
    deep = cv2.createCLAHE(clipLimit=clip_limit * 256, tileGridSize=(tiles, tiles))
    if pixels.ndim == 2:
        return (clahe if pixels.dtype == np.uint8 else deep).apply(pixels)
    if pixels.dtype != np.uint8:
        lab = cv2.cvtColor(pixels.astype(np.float32) / max_sample(pixels), cv2.COLOR_BGR2Lab)
        light = np.clip(lab[:, :, 0] / 100 * 65535 + 0.5, 0, 65535).astype(np.uint16)
        lab[:, :, 0] = deep.apply(light).astype(np.float32) / 65535 * 100
        out = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)
        top = max_sample(pixels)
        return np.clip(out * top + 0.5, 0, top).astype(pixels.dtype)
    lab = cv2.cvtColor(pixels, cv2.COLOR_BGR2Lab)
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)


def denoise(op: Denoise, item: Item, ctx: OpContext) -> Picture:
    """Non-local means: luminance and colour strengths for colour images, one for gray.

    16-bit images are denoised in 16 bits (OpenCV's L1 norm variant); alpha is kept.
    """
    picture = load(item, ctx)
    colour, alpha = _split(picture.pixels)
    ctx.progress(0.05, "denoising")
    if colour.dtype == np.uint8 and colour.ndim == 3:
        out = cv2.fastNlMeansDenoisingColored(
            colour, None, op.strength, op.colour_strength, op.template, op.search
        )
    elif colour.dtype == np.uint8:
        out = cv2.fastNlMeansDenoising(colour, None, op.strength, op.template, op.search)
    else:
        out = _denoise_deep(colour, op)
    return picture.with_pixels(_join(out, alpha))


def _denoise_deep(pixels: MatLike, op: Denoise) -> MatLike:
    """16-bit (or float) samples: OpenCV's NL-means takes them with the L1 norm, per channel,
    with ``h`` in the samples' own scale."""
    deep = pixels if pixels.dtype == np.uint16 else (pixels * 65535 + 0.5).astype(np.uint16)
    scale = 65535 / 255
    channels = cv2.split(deep) if deep.ndim == 3 else [deep]
    out = [
        cv2.fastNlMeansDenoising(
            c, [op.strength * scale], None, op.template, op.search, cv2.NORM_L1
        )
        for c in channels
    ]
    merged = cv2.merge(out) if len(out) > 1 else out[0]
    if pixels.dtype == np.float32:
        return merged.astype(np.float32) / 65535
    return merged
