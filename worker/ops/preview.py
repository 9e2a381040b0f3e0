"""The ``preview`` operation: a FITS image plane rendered for the eye as PNG, JPEG or WebP.

Reads one plane (``worker.ops.fitsio``), shrinks it when ``size`` asks (area averaging that
ignores NaNs), scales it (``worker.ops.stretch``), applies a colour map and encodes it with
``worker.ops.imaging``. Runs in a worker child; never imports litestar.
"""

from __future__ import annotations

import cv2
import numpy as np

from contracts.astro import Colormap, Preview
from contracts.media import FITS
from contracts.ops import Convert
from worker.errors import UsageError
from worker.ops import stretch
from worker.ops.api import InputFile, OpContext, Picture
from worker.ops.fitsio import open_fits, plane_data, science_plane
from worker.ops.imaging import check_output, write
from worker.ops.inputs import check_input
from worker.ops.thumbnail import target_size


def preview(op: Preview, item: InputFile, ctx: OpContext) -> InputFile:
    """Render the plane ``op.hdu``/``op.plane`` as ``<name>.png|jpg|webp``.

    Limits are taken on the full-resolution plane; the plane is then shrunk so its longer
    side is at most ``op.size`` (area averaging over the finite pixels; an output pixel
    covering only NaNs stays NaN), stretched, and coloured (``op.colormap``; 8-bit levels).
    NaN pixels become transparent (PNG and WebP: BGRA output with alpha 0; black in JPEG)
    or ``op.nan_colour`` (its alpha is kept by PNG and WebP, and composited onto black in
    JPEG); the alpha channel is only added when the plane has NaNs. FITS row 0 is the
    bottom of the image: the rows are flipped so the image appears as DS9 shows it (north up
    and east left for the usual orientation of a celestial WCS).

    Raises:
        UsageError: the input is not FITS, has no such HDU or plane, holds no image, is
            larger than the limits, or the preview would exceed ``max_output_pixels``.
    """
    info = check_input(item, ctx.limits)
    if info.media_type != FITS:
        raise UsageError(f"input {item.name!r} is {info.media_type}, not FITS: preview reads FITS")
    with open_fits(item, ctx) as hdul:
        plane = science_plane(hdul, item, op.hdu)
        height, width = plane.shape[-2:]
        if width * height > ctx.limits.max_pixels:
            raise UsageError(
                f"input {item.name!r}: HDU {plane.index} is {width} x {height} pixels, "
                f"more than {ctx.limits.max_pixels:,}"
            )
        data = plane_data(plane, op.plane)
    ctx.progress(0.3)
    vmin, vmax = stretch.limits(data, op.scaling)
    size = target_size(width, height, op.size) if op.size else (width, height)
    check_output(*size, ctx, "the preview")
    if size != (width, height):
        data = shrink(data, size)
    values = stretch.apply(data, op.scaling, vmin, vmax, out=_float32(data))
    ctx.progress(0.7)
    pixels = render(values, op.colormap, op.nan_colour, alpha=op.format != "jpeg")
    picture = Picture(pixels=cv2.flip(pixels, 0), name=item.name, source_type=FITS)
    return write(picture, ctx, Convert(format=op.format, metadata="strip", compression=_PNG_LEVEL))


_PNG_LEVEL = 3  # zlib level: 6 (the default) takes twice as long for a few percent


def _float32(data: np.ndarray) -> np.ndarray | None:
    """``data`` itself when it can hold the stretched values in place."""
    return data if data.dtype == np.float32 and data.flags.writeable else None


def shrink(data: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``data`` resized to ``size`` (width, height) by area averaging, float32.

    NaNs do not spread: each output pixel averages the finite input pixels it covers, and is
    NaN only when it covers no finite pixel.
    """
    data = data.astype(np.float32, copy=False)
    missing = np.isnan(data)
    if not missing.any():
        return np.asarray(cv2.resize(data, size, interpolation=cv2.INTER_AREA))
    filled = np.where(missing, np.float32(0.0), data)
    weight = cv2.resize((~missing).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    total = cv2.resize(filled, size, interpolation=cv2.INTER_AREA)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = total / weight
    out[weight <= 0] = np.nan
    return out


def render(values: np.ndarray, name: Colormap, nan_colour: str, *, alpha: bool) -> np.ndarray:
    """Stretched values ([0, 1], NaN) as gray, BGR or BGRA pixels (see ``preview``).

    ``alpha``: the output format keeps an alpha channel.
    """
    nan = np.isnan(values)
    pixels = stretch.colormap(stretch.levels(values, nan), name)
    if not nan.any():
        return pixels
    if nan_colour == "transparent":
        r, g, b, a = 0, 0, 0, 0
    else:
        r, g, b, a = stretch.rgba(nan_colour)
    if a < 255 and alpha:
        pixels = _channels(pixels, 4)
        pixels[nan] = (b, g, r, a)
        return pixels
    if a < 255:  # composited onto black, as transparency is in JPEG
        r, g, b = (round(v * a / 255) for v in (r, g, b))
    if pixels.ndim == 2 and r == g == b:
        pixels[nan] = r
        return pixels
    pixels = _channels(pixels, 3)
    pixels[nan] = (b, g, r)
    return pixels


def _channels(pixels: np.ndarray, n: int) -> np.ndarray:
    """Gray or BGR pixels as BGR (``n`` 3) or BGRA with opaque alpha (``n`` 4)."""
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGRA if n == 4 else cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2BGRA) if n == 4 else pixels
