"""The ``composite`` operation: several FITS images combined into one colour image.

Each input's science plane is read (``worker.ops.fitsio``) and put on the reference grid
(``op.grid``, else the first input's): an input on the same pixel grid is cut or padded,
any other is reprojected (``worker.ops.reproject``). Additive mode scales each channel
(``worker.ops.stretch``), colours it and sums; Lupton mode is ``make_lupton_rgb``. Every step
works in float32, in place, a block of rows at a time: three 4096^2 channels become a PNG in
0.25-0.4 s (``loadtests/bench_composite.py``). Runs in a worker child (heavy pool); never
imports litestar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from astropy.wcs import WCS

from contracts.astro import Channel, Composite, Lupton
from contracts.media import FITS
from worker.errors import FatalError, UsageError
from worker.ops import stretch
from worker.ops.api import InputFile, OpContext, OutputFile, output_path
from worker.ops.fitsio import open_fits, plane_data, science_plane
from worker.ops.imaging import EXTENSIONS, MEDIA_TYPES, check_output
from worker.ops.inputs import check_input
from worker.ops.reproject import grid_wcs, regrid

SAME_GRID_TOLERANCE = 1e-9
"""Degrees: two WCS within this at every test point are one pixel grid (no reprojection)."""
PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION, 1,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
]  # fmt: skip
"""zlib's run-length strategy (the level then hardly matters) after the UP filter. For a
4096^2 RGB composite: 0.1-0.35 s (smooth to noisy skies), up to 15 % smaller than OpenCV's
default (RLE after SUB) at the same speed; level 6 with the default strategy takes 2-4 times
as long for files 6-20 % smaller. Measured by ``loadtests/bench_composite.py --png``."""
_JPEG_QUALITY = 90


@dataclass(frozen=True)
class _Grid:
    """The reference pixel grid: its celestial WCS (None: the inputs have none) and shape."""

    wcs: WCS | None
    shape: tuple[int, int]


def composite(op: Composite, items: list[InputFile], ctx: OpContext) -> list[OutputFile]:
    """Combine the inputs (in order) into ``<op.name>.png|jpg|tif``.

    Channels: the science plane of each input (its first plane for a cube), on the reference
    grid; pixels the reprojection does not reach are NaN. Inputs without a celestial WCS
    are combined pixel by pixel, when every input has the first one's size and ``op.grid`` is
    not given. Additive mode: each channel is
    scaled by its ``Channel.scaling`` to [0, 1], multiplied by its colour (the alpha of
    ``#rrggbbaa`` multiplies like ``weight``) times ``weight``, summed and clipped. Lupton
    mode: ``make_lupton_rgb(r, g, b, minimum, stretch, Q)``; the 8-bit result equals
    astropy's for float32 data (it truncates, as astropy does); 16 bits are the same values
    times 65535, rounded. NaN pixels are black (astropy leaves them undefined). Rows are
    flipped so north is up as DS9 shows it (FITS row 0 is the bottom).

    Raises:
        UsageError: wrong number of inputs, a non-FITS input or one without an image, an input
            that cannot be placed on the grid (no celestial WCS), or an output over
            ``max_output_pixels``.
    """
    problem = op.check_inputs(len(items))
    if problem:
        raise UsageError(problem)
    minimum = _minimum(op.lupton) if op.lupton is not None else []
    grid = None
    if op.grid is not None:
        wcs, shape = grid_wcs(op.grid)
        grid = _Grid(wcs, shape)
        check_output(shape[1], shape[0], ctx, "the composite")
    steps = len(items) + 1
    channels: list[np.ndarray] = []
    for i, item in enumerate(items):
        data, wcs = _read(item, ctx)
        if grid is None:
            grid = _Grid(wcs, (data.shape[0], data.shape[1]))
            check_output(data.shape[1], data.shape[0], ctx, "the composite")
        else:
            data = _onto(data, wcs, grid, item, op, _part(ctx, i / steps, 1 / steps))
        channels.append(data)
        ctx.progress((i + 1) / steps, f"channel {i + 1} of {len(items)}")
    ny, nx = channels[0].shape
    pixels = np.empty((ny, nx, 3), np.uint8 if op.bits == 8 else np.uint16)
    if op.lupton is not None:
        lupton(channels, pixels, op.lupton, minimum)
    else:
        assert op.channels is not None
        additive(channels, op.channels, pixels)
    del channels
    path = output_path(ctx.workdir, f"{op.name}.{EXTENSIONS[op.format]}")
    path.write_bytes(encode(pixels, op.format))
    ctx.progress(1.0)
    return [OutputFile(path=path, media_type=MEDIA_TYPES[op.format], name=op.name)]


def _part(ctx: OpContext, start: float, span: float) -> Callable[[float], None]:
    """Progress of a part of the work: its fraction mapped into [start, start + span]."""
    return lambda fraction: ctx.progress(start + span * fraction)


def _minimum(lupton: Lupton) -> list[float]:
    if isinstance(lupton.minimum, list):
        if len(lupton.minimum) not in (1, 3):
            raise UsageError("lupton minimum takes one value, or three (red, green, blue)")
        return lupton.minimum * (3 // len(lupton.minimum))
    return [lupton.minimum] * 3


# -- channels on one grid ------------------------------------------------------------------


def _read(item: InputFile, ctx: OpContext) -> tuple[np.ndarray, WCS | None]:
    """The science plane of a FITS input as float32, and its celestial WCS (or None)."""
    info = check_input(item, ctx.limits)
    if info.media_type != FITS:
        raise UsageError(f"input {item.name!r} is {info.media_type}, not FITS")
    with open_fits(item, ctx) as hdul:
        plane = science_plane(hdul, item)
        ny, nx = plane.shape[-2:]
        if nx * ny > ctx.limits.max_pixels:
            raise UsageError(
                f"input {item.name!r}: HDU {plane.index} is {nx} x {ny} pixels, "
                f"more than {ctx.limits.max_pixels:,}"
            )
        data = plane_data(plane).astype(np.float32, copy=False)
        return data, plane.celestial if plane.wcs is not None else None


def _onto(
    data: np.ndarray,
    wcs: WCS | None,
    grid: _Grid,
    item: InputFile,
    op: Composite,
    progress: Callable[[float], None],
) -> np.ndarray:
    """``data`` on the reference grid: as it is, cut or padded, or reprojected."""
    if wcs is None or grid.wcs is None:
        if op.grid is None and data.shape == grid.shape:
            return data  # pixel-aligned inputs without a celestial WCS
        raise UsageError(
            f"input {item.name!r} cannot be placed on the "
            + ("grid: it has no celestial WCS" if wcs is None else "first input's grid")
            + f" (inputs without one must all be {grid.shape[1]} x {grid.shape[0]} pixels)"
        )
    if same_grid(wcs, grid.wcs, grid.shape):
        return _fit(data, grid.shape)
    try:
        image, _footprint = regrid(
            data, wcs, grid.wcs, grid.shape, op.interpolation, progress=progress
        )
    except ValueError as e:
        raise UsageError(f"input {item.name!r} cannot be reprojected: {e}") from e
    return image


def same_grid(wcs: WCS, reference: WCS, shape: tuple[int, int]) -> bool:
    """Whether ``wcs`` puts 25 pixels spread over the reference grid (corners, edges,
    centre) where ``reference`` does, within ``SAME_GRID_TOLERANCE`` degrees."""
    if [c[:4] for c in wcs.wcs.ctype] != [c[:4] for c in reference.wcs.ctype]:
        return False
    if wcs.wcs.radesys != reference.wcs.radesys:  # same numbers, other frames
        return False
    ny, nx = shape
    x, y = (a.ravel() for a in np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5)))
    try:
        with np.errstate(invalid="ignore"):
            lon_a, lat_a = wcs.all_pix2world(x, y, 0)
            lon_b, lat_b = reference.all_pix2world(x, y, 0)
    except (ValueError, MemoryError):
        return False
    finite = np.isfinite(lon_a) & np.isfinite(lat_a)
    if not np.array_equal(finite, np.isfinite(lon_b) & np.isfinite(lat_b)):
        return False
    d_lon = (lon_a[finite] - lon_b[finite] + 180.0) % 360.0 - 180.0
    d_lon *= np.cos(np.radians(lat_b[finite]))
    d_lat = lat_a[finite] - lat_b[finite]
    return bool(np.all(np.hypot(d_lon, d_lat) <= SAME_GRID_TOLERANCE))


def _fit(data: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``data`` (same grid origin) cut or padded with NaN to ``shape``."""
    if data.shape == shape:
        return data
    out = np.full(shape, np.nan, np.float32)
    ny, nx = min(shape[0], data.shape[0]), min(shape[1], data.shape[1])
    out[:ny, :nx] = data[:ny, :nx]
    return out


# -- combining -----------------------------------------------------------------------------
#
# Channels are combined a block of rows at a time into the output pixels: the temporaries of
# a block stay in cache and are reused, so the only large arrays are the channels (modified
# in place) and the output. A fresh 64 MiB array costs more than the arithmetic done in it
# (page faults; with transparent huge pages, compaction stalls of 100 ms and more).

BLOCK_PIXELS = 1 << 18
"""Pixels per block of rows (1 MiB of float32): a block and its temporaries fit in L2/L3."""


def _blocks(ny: int, nx: int) -> Iterator[slice]:
    rows = max(1, BLOCK_PIXELS // nx)
    for y0 in range(0, ny, rows):
        yield slice(y0, min(ny, y0 + rows))


def additive(channels: Sequence[np.ndarray], specs: Sequence[Channel], pixels: np.ndarray) -> None:
    """Fill ``pixels`` (BGR, flipped) with the sum of each channel scaled to [0, 1], times its
    colour and weight, clipped; levels rounded. NaN adds nothing. Overwrites the channels."""
    ny, nx = channels[0].shape
    limits = [
        stretch.limits(data, spec.scaling) for data, spec in zip(channels, specs, strict=True)
    ]
    factors = []
    for data, spec, (vmin, vmax) in zip(channels, specs, limits, strict=True):
        *colour, alpha = stretch.rgba(spec.colour)
        factors.append([c / 255 * alpha / 255 * spec.weight for c in colour])
        if spec.scaling.stretch == "histeq":  # equalised over the whole image, not a block
            stretch.apply(data, spec.scaling, vmin, vmax, out=data)
    total = np.empty((3, max(1, BLOCK_PIXELS // nx), nx), np.float32)
    flipped = pixels[::-1]
    for rows in _blocks(ny, nx):
        rgb = total[:, : rows.stop - rows.start]
        rgb.fill(0.0)
        for data, spec, (vmin, vmax), factor in zip(channels, specs, limits, factors, strict=True):
            values = data[rows]
            if spec.scaling.stretch != "histeq":
                stretch.apply(values, spec.scaling, vmin, vmax, out=values)
            np.fmax(values, 0.0, out=values)  # NaN -> 0
            for k in range(3):
                if factor[k]:
                    cv2.scaleAdd(values, factor[k], rgb[k], dst=rgb[k])
        np.minimum(rgb, 1.0, out=rgb)
        _store(rgb, flipped[rows], truncate=False)


def lupton(
    channels: Sequence[np.ndarray], pixels: np.ndarray, params: Lupton, minimum: Sequence[float]
) -> None:
    """Fill ``pixels`` (BGR, flipped) with astropy 8's ``make_lupton_rgb(r, g, b, minimum,
    params.stretch, params.Q)`` of float32 channels (overwritten); NaN pixels are black.

    The float32 operations are astropy's, in its order (so the rounding is the same and the
    8-bit result is equal, not just close), a block of rows at a time: minima subtracted;
    I = (r + g + b) / 3; f = asinh(I Q / stretch) * slope (slope a float64 scalar, as astropy
    multiplies it); each band times f / I (0 where I <= 0), clipped below at 0; every band
    divided by max(r, g, b) where that is above 1; 8 bits are ``floor(255 v)`` as astropy's
    ``astype``, 16 bits ``round(65535 v)``.
    """
    eps = 1.0 / 2**23  # astropy's: Q this small means 0.1, and Q is capped at 1e10
    q = 0.1 if abs(params.Q) < eps else min(params.Q, 1e10)
    slope = 0.1 / np.arcsinh(0.1 * q)  # a float64 numpy scalar, as in LuptonAsinhStretch
    soften = q / float(params.stretch)
    ny, nx = channels[0].shape
    shape = (max(1, BLOCK_PIXELS // nx), nx)
    scratch = (np.empty(shape, np.float32), np.empty(shape, np.float32), np.empty(shape, bool))
    flipped = pixels[::-1]
    for rows in _blocks(ny, nx):
        n = rows.stop - rows.start
        intensity, factor, dark = (a[:n] for a in scratch)
        bands = [c[rows] for c in channels]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN, inf, 0 / 0
            _lupton_block(bands, minimum, soften, slope, intensity, factor, dark)
        _store(bands, flipped[rows], truncate=True)


def _lupton_block(
    bands: list[np.ndarray],
    minimum: Sequence[float],
    soften: float,
    slope: np.float64,
    intensity: np.ndarray,
    factor: np.ndarray,
    dark: np.ndarray,
) -> None:
    for band, low in zip(bands, minimum, strict=True):
        np.subtract(band, low, out=band)
    r, g, b = bands
    np.add(r, g, out=intensity)
    intensity += b
    intensity /= 3.0
    np.multiply(intensity, soften, out=factor)
    np.arcsinh(factor, out=factor)
    np.multiply(factor, slope, out=factor)
    factor /= intensity
    np.less_equal(intensity, 0.0, out=dark)
    np.copyto(factor, 0.0, where=dark)
    for band in bands:
        band *= factor
        np.fmax(band, 0.0, out=band)  # as astropy's clip, and NaN -> 0
    peak = np.maximum(r, g, out=factor)
    np.maximum(peak, b, out=peak)
    np.maximum(peak, 1.0, out=peak)  # x / 1.0 is x: only bands over 1 change
    for band in bands:
        band /= peak


# -- output --------------------------------------------------------------------------------


def _store(rgb: Sequence[np.ndarray] | np.ndarray, out: np.ndarray, *, truncate: bool) -> None:
    """Red, green, blue in [0, 1] (no NaN; overwritten) as the BGR levels of ``out``.

    ``truncate``: 8-bit levels are ``floor(v * 255)`` (astropy's conversion); otherwise
    levels are rounded.
    """
    top = 255.0 if out.dtype == np.uint8 else 65535.0
    for k, band in enumerate(reversed(rgb)):
        np.multiply(band, top, out=band)
        if not (truncate and top == 255.0):
            band += 0.5
        np.fmin(band, top, out=band)  # a NaN left by inf / inf (overflowing data): white
        np.copyto(out[:, :, k], band, casting="unsafe")  # float -> int truncates


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """PNG (``PNG_PARAMS``), JPEG (quality 90) or TIFF (deflate).

    Raises:
        FatalError: the encoder fails.
    """
    if fmt == "png":
        params = PNG_PARAMS
    elif fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    else:
        deflate = cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE
        params = [cv2.IMWRITE_TIFF_COMPRESSION, deflate]
    try:
        ok, buf = cv2.imencode("." + EXTENSIONS[fmt], pixels, params)
    except cv2.error as e:
        raise FatalError(f"cannot encode the composite as {fmt}", str(e)) from e
    if not ok:
        raise FatalError(f"cannot encode the composite as {fmt}")
    return buf.tobytes()
