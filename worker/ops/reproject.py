"""Reprojection of celestial images from one WCS grid to another, fast and in bounded memory.

For each output tile the exact transform (output pixel -> sky -> input pixel: the ``all_*``
paths of astropy's WCS, so SIP and lookup-table distortions count, with a frame conversion when
the two frames differ) is evaluated on a coarse grid of nodes, every 32 output pixels. The grid
is refined (16, 8, 4) where interpolating it bilinearly would miss the exact transform by more
than 0.01 input pixel at a cell centre, and the exact transform is used per pixel where nodes
do not project or do not round-trip (as ``reproject`` does: more than one pixel off). The
interpolated maps (float32) drive OpenCV's ``remap``.

Results follow ``reproject.reproject_interp``: values are defined out to the outer edge of the
input's border pixels (half a pixel), NaN elsewhere; an input NaN makes NaN of every output
pixel whose interpolation kernel touches it (2 x 2 bilinear, 4 x 4 bicubic); the footprint is
1 where the output is finite. Bicubic is OpenCV's cubic convolution (a = -0.75), not scipy's
spline, so it differs from ``reproject_interp(order="bicubic")``.

Imports numpy, astropy and OpenCV (and ``contracts`` for ``Grid``); never the worker runtime.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, BaseCoordinateFrame, SkyCoord
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

from contracts.astro import Grid

Interpolation = Literal["bilinear", "bicubic"]
Converter = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

_CV2_FLAGS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
_STEPS = (32, 16, 8, 4)
"""Node spacings tried for a tile, coarse first; past the last, every pixel is exact."""
_TOLERANCE = 0.01
"""Largest error (input pixels) of the interpolated maps at a cell centre."""
_TILE = (256, 2048)
"""Output tile (rows, columns): multiples of every step; about 2 MiB per float32 map."""
_MARGIN = 3
"""Input pixels kept around a tile's footprint: the cubic kernel reaches two."""
_CV2_MAX_SIDE = 32_000
"""``cv2.remap`` takes sources under 32,767 pixels a side (SHRT_MAX)."""


class Box(NamedTuple):
    """A pixel box ``[x0, x1) x [y0, y1)`` of a grid (0-based, numpy's rows are y)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)``."""
        return (self.y1 - self.y0, self.x1 - self.x0)


def regrid(
    data: np.ndarray,
    wcs_in: WCS,
    wcs_out: WCS,
    shape_out: tuple[int, int],
    interpolation: Interpolation = "bilinear",
    *,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the 2-D ``data`` (on ``wcs_in``) onto ``wcs_out`` with ``shape_out`` pixels.

    Returns ``(image, footprint)``, both float32 of ``shape_out``: the image is NaN where the
    input does not reach; the footprint is 1 where the image is finite, 0 elsewhere.
    ``progress`` gets the fraction done after each tile.

    Raises:
        ValueError: ``data`` is not 2-D, or the frames of the two WCS cannot be related.
    """
    if data.ndim != 2:
        raise ValueError(f"regrid takes a 2-D image, not {data.ndim}-D")
    mapping = _Mapping(wcs_in, wcs_out)
    ny, nx = shape_out
    image = np.full((ny, nx), np.nan, np.float32)
    tiles = [
        (y, min(y + _TILE[0], ny), x, min(x + _TILE[1], nx))
        for y in range(0, ny, _TILE[0])
        for x in range(0, nx, _TILE[1])
    ]
    for done, (y0, y1, x0, x1) in enumerate(tiles, 1):
        maps = _tile_maps(mapping, data.shape, y0, y1, x0, x1)
        if maps is not None:
            image[y0:y1, x0:x1] = _sample(data, *maps, _CV2_FLAGS[interpolation])
        if progress is not None:
            progress(done / len(tiles))
    return image, np.isfinite(image).astype(np.float32)


def grid_wcs(grid: Grid) -> tuple[WCS, tuple[int, int]]:
    """The ICRS WCS of ``grid`` and its shape ``(rows, columns)``.

    The reference pixel is the grid's centre; ``rotation`` turns the grid so that its up
    direction (+y) points ``rotation`` degrees east of north (east stays left of up).
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [f"RA---{grid.projection}", f"DEC--{grid.projection}"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.crval = [grid.ra, grid.dec]
    wcs.wcs.crpix = [(grid.width + 1) / 2, (grid.height + 1) / 2]
    scale = grid.scale / 3600
    wcs.wcs.cdelt = [-scale, scale]
    theta = math.radians(grid.rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    wcs.wcs.pc = [[cos, -sin], [sin, cos]]
    wcs.wcs.set()
    return wcs, (grid.height, grid.width)


def covering_grid(
    inputs: Sequence[tuple[WCS, tuple[int, int]]], scale: float | None = None
) -> tuple[WCS, tuple[int, int]]:
    """A north-up ICRS TAN grid that covers every ``(celestial WCS, (rows, columns))`` input.

    The pixel scale is ``scale`` (arcseconds) or the finest input's; the tangent point is the
    centre of the inputs' combined footprint (their edges, sampled), which the grid is centred
    on.

    Raises:
        ValueError: no inputs, an input edge without sky coordinates, or inputs spread over
            more of the sky than a TAN projection shows.
    """
    if not inputs:
        raise ValueError("no inputs")
    lon, lat = [], []
    for wcs, shape in inputs:
        x, y = edge_points(shape)
        ra, dec = _to_icrs(wcs)(*wcs.all_pix2world(x, y, 0))
        if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
            raise ValueError("an input's edge has no sky coordinates")
        lon.append(ra)
        lat.append(dec)
    ra, dec = np.concatenate(lon), np.concatenate(lat)
    if scale is None:
        scale = min(pixel_scale(wcs) for wcs, _ in inputs)
    centre = _mean_direction(ra, dec)
    for _ in range(3):  # recentre on the projected box: it settles in one or two rounds
        wcs, x, y = _tangent_plane(centre, scale, ra, dec)
        mid = wcs.all_pix2world((x.min() + x.max()) / 2, (y.min() + y.max()) / 2, 0)
        centre = (float(mid[0]) % 360, float(mid[1]))
    _, x, y = _tangent_plane(centre, scale, ra, dec)
    # Pixel 0 is the tangent point, which becomes the centre: edges at +-width/2 from it.
    width = max(1, math.ceil(2 * max(-x.min(), x.max())))
    height = max(1, math.ceil(2 * max(-y.min(), y.max())))
    return grid_wcs(Grid(ra=centre[0], dec=centre[1], width=width, height=height, scale=scale))


def _tangent_plane(
    centre: tuple[float, float], scale: float, ra: np.ndarray, dec: np.ndarray
) -> tuple[WCS, np.ndarray, np.ndarray]:
    """A TAN grid with its tangent point at ``centre`` and pixel 0; the points on it."""
    wcs, _ = grid_wcs(Grid(ra=centre[0], dec=centre[1], width=1, height=1, scale=scale))
    with np.errstate(invalid="ignore"):
        x, y = wcs.all_world2pix(ra, dec, 0, quiet=True)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("the inputs spread over too much of the sky for one TAN grid")
    return wcs, x, y


def overlap_box(
    wcs_in: WCS, shape_in: tuple[int, int], wcs_out: WCS, shape_out: tuple[int, int]
) -> Box | None:
    """The smallest pixel box of the output grid that holds every output pixel the input
    reaches (with a pixel to spare), or None when the two do not overlap.

    The input's edges (65 points a side) and a grid of its interior go forward onto the
    output; a grid of output pixels goes back into the input, for an output grid that lies
    inside the input or an input that reaches past the output projection's domain. An
    overlap narrower than 1/64 of the input's side can be missed.

    Raises:
        ValueError: the frames of the two WCS cannot be related.
    """
    ny, nx = shape_out
    x, y = edge_points(shape_in)
    gy, gx = (
        g.ravel()
        for g in np.meshgrid(
            np.linspace(-0.5, shape_in[0] - 0.5, 17), np.linspace(-0.5, shape_in[1] - 0.5, 17)
        )
    )
    fx, fy = _Mapping(wcs_out, wcs_in)(np.concatenate([x, gx]), np.concatenate([y, gy]))
    projects = bool(np.isfinite(fx).all() and np.isfinite(fy).all())
    with np.errstate(invalid="ignore"):
        hits = bool(((fx >= -0.5) & (fx <= nx - 0.5) & (fy >= -0.5) & (fy <= ny - 0.5)).any())
    step = max(1, max(ny, nx) // 64)
    oy, ox = (g.ravel().astype(float) for g in np.mgrid[0 : ny + step : step, 0 : nx + step : step])
    bx, by = _Mapping(wcs_in, wcs_out)(ox, oy)
    with np.errstate(invalid="ignore"):
        inside = (bx >= -0.5) & (bx <= shape_in[1] - 0.5) & (by >= -0.5) & (by <= shape_in[0] - 0.5)
    if not hits and not inside.any():
        return None
    boxes = []
    if np.isfinite(fx).any():
        boxes.append((np.nanmin(fx), np.nanmin(fy), np.nanmax(fx), np.nanmax(fy)))
    if not projects and inside.any():
        # Each output node inside the input: the cells around it may hold input pixels.
        boxes.append((ox[inside].min() - step, oy[inside].min() - step,
                      ox[inside].max() + step, oy[inside].max() + step))  # fmt: skip
    lo_x, lo_y = min(b[0] for b in boxes), min(b[1] for b in boxes)
    hi_x, hi_y = max(b[2] for b in boxes), max(b[3] for b in boxes)
    x0, x1 = max(0, math.floor(lo_x) - 1), min(nx, math.ceil(hi_x) + 2)
    y0, y1 = max(0, math.floor(lo_y) - 1), min(ny, math.ceil(hi_y) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return Box(x0, y0, x1, y1)


def edge_points(shape: tuple[int, int], n: int = 65) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(x, y)`` along the outer edges of a ``(rows, columns)`` image
    (border pixels' outer halves included), ``n`` per side."""
    ny, nx = shape
    sx = np.linspace(-0.5, nx - 0.5, n)
    sy = np.linspace(-0.5, ny - 0.5, n)
    x = np.concatenate([sx, sx, np.full(n, -0.5), np.full(n, nx - 0.5)])
    y = np.concatenate([np.full(n, -0.5), np.full(n, ny - 0.5), sy, sy])
    return x, y


def pixel_scale(wcs: WCS) -> float:
    """The finer of a celestial WCS's two pixel scales at its reference point, arcseconds."""
    return float(np.min(proj_plane_pixel_scales(wcs))) * 3600


# -- the transform ----------------------------------------------------------------------------


class _Mapping:
    """Output pixel -> input pixel, exact; NaN where a point does not project or round-trip."""

    def __init__(self, wcs_in: WCS, wcs_out: WCS) -> None:
        if wcs_in.pixel_n_dim != 2 or wcs_out.pixel_n_dim != 2:
            raise ValueError("regrid takes 2-D celestial WCS")
        self.wcs_in, self.wcs_out = wcs_in, wcs_out
        self.forward = _converter(wcs_out, wcs_in)
        self.back = _converter(wcs_in, wcs_out)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xi, yi = self.once(x, y)
        with np.errstate(invalid="ignore"):
            lon, lat = self.wcs_in.all_pix2world(xi, yi, 0)
            if self.back is not None:
                lon, lat = self.back(lon, lat)
            x2, y2 = self.wcs_out.all_world2pix(lon, lat, 0, quiet=True)
            ok = (np.abs(x2 - x) <= 1) & (np.abs(y2 - y) <= 1)
        return np.where(ok, xi, np.nan), np.where(ok, yi, np.nan)

    def once(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The transform without the round-trip check."""
        with np.errstate(invalid="ignore"):
            lon, lat = self.wcs_out.all_pix2world(x, y, 0)
            if self.forward is not None:
                lon, lat = self.forward(lon, lat)
            xi, yi = self.wcs_in.all_world2pix(lon, lat, 0, quiet=True)
        return np.asarray(xi, np.float64), np.asarray(yi, np.float64)


def _frame(wcs: WCS) -> BaseCoordinateFrame | None:
    try:
        return wcs_to_celestial_frame(wcs)
    except ValueError:
        return None


def _converter(src: WCS, dst: WCS) -> Converter | None:
    """Sky coordinates of ``src``'s frame into ``dst``'s, or None when they are the same."""
    a, b = _frame(src), _frame(dst)
    if a is None or b is None:
        if [c[:4] for c in src.wcs.ctype] == [c[:4] for c in dst.wcs.ctype]:
            return None  # unknown frames with the same axes: take them as one frame
        raise ValueError(
            f"cannot relate the sky frames of {list(src.wcs.ctype)} and {list(dst.wcs.ctype)}"
        )
    if a.is_equivalent_frame(b):
        return None
    return lambda lon, lat: _transform(lon, lat, a, b)


def _to_icrs(wcs: WCS) -> Converter:
    frame = _frame(wcs)
    if frame is None:
        raise ValueError(f"unknown sky frame of {list(wcs.wcs.ctype)}")
    if frame.is_equivalent_frame(ICRS()):
        return lambda lon, lat: (np.asarray(lon), np.asarray(lat))
    return lambda lon, lat: _transform(lon, lat, frame, ICRS())


def _transform(
    lon: np.ndarray, lat: np.ndarray, src: BaseCoordinateFrame, dst: BaseCoordinateFrame
) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # e.g. ERFA's "dubious year"
        sky = SkyCoord(lon, lat, unit=u.deg, frame=src).transform_to(dst)
    sph = sky.spherical
    return np.asarray(sph.lon.deg, np.float64), np.asarray(sph.lat.deg, np.float64)


def _mean_direction(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    r, d = np.radians(ra), np.radians(dec)
    v = np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]).mean(axis=1)
    if np.linalg.norm(v) < 1e-6:
        raise ValueError("the inputs spread over too much of the sky for one TAN grid")
    lon = math.degrees(math.atan2(v[1], v[0])) % 360
    lat = math.degrees(math.atan2(v[2], math.hypot(v[0], v[1])))
    return lon, lat


# -- one tile ---------------------------------------------------------------------------------


Maps = tuple[np.ndarray, np.ndarray, int, int, int, int]
"""``(map_x, map_y, x0, y0, x1, y1)``: float32 maps relative to the input box they need."""


def _tile_maps(
    mapping: _Mapping, shape_in: tuple[int, ...], y0: int, y1: int, x0: int, x1: int
) -> Maps | None:
    """The input coordinates of the tile's pixels, or None when it misses the input."""
    for step in _STEPS:
        gx = x0 + step * np.arange((x1 - x0 - 1) // step + 2)
        gy = y0 + step * np.arange((y1 - y0 - 1) // step + 2)
        nx_, ny_ = (a.astype(np.float64) for a in np.meshgrid(gx, gy))
        node_x, node_y = mapping(nx_, ny_)
        if not np.isfinite(node_x).any():
            return None
        if _accurate(mapping, node_x, node_y, nx_, ny_, step, shape_in):
            return _interpolated(mapping, node_x, node_y, step, shape_in, y0, y1, x0, x1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    mx, my = mapping(xs, ys)
    if not np.isfinite(mx).any():
        return None
    return _relative(mx, my, shape_in)


def _accurate(
    mapping: _Mapping,
    node_x: np.ndarray,
    node_y: np.ndarray,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    step: int,
    shape_in: tuple[int, ...],
) -> bool:
    """Whether bilinear interpolation of the nodes meets the exact transform at the centres
    of the cells within (or near) the input."""
    ix = (node_x[:-1, :-1] + node_x[:-1, 1:] + node_x[1:, :-1] + node_x[1:, 1:]) / 4
    iy = (node_y[:-1, :-1] + node_y[:-1, 1:] + node_y[1:, :-1] + node_y[1:, 1:]) / 4
    ex, ey = mapping.once(grid_x[:-1, :-1] + step / 2, grid_y[:-1, :-1] + step / 2)
    ny, nx = shape_in
    with np.errstate(invalid="ignore"):
        near = (ex > -2) & (ex < nx + 1) & (ey > -2) & (ey < ny + 1) & np.isfinite(ix + iy)
        error = np.hypot(ix - ex, iy - ey)[near]
    return bool(error.size == 0 or error.max() <= _TOLERANCE)


def _interpolated(
    mapping: _Mapping,
    node_x: np.ndarray,
    node_y: np.ndarray,
    step: int,
    shape_in: tuple[int, ...],
    y0: int,
    y1: int,
    x0: int,
    x1: int,
) -> Maps | None:
    box = _input_box(node_x, node_y, shape_in)
    cols, rows = np.arange(x1 - x0), np.arange(y1 - y0)
    if np.isfinite(node_x).all():
        if box is None:
            return None
        # Relative to the input box, float32 keeps 1e-4 pixel over thousands of pixels.
        mx = _bilinear((node_x - box.x0).astype(np.float32), cols, rows, step)
        my = _bilinear((node_y - box.y0).astype(np.float32), cols, rows, step)
        return (mx, my, *box)
    bx, by = (box.x0, box.y0) if box is not None else (0, 0)
    mx = _bilinear((node_x - bx).astype(np.float32), cols, rows, step)
    my = _bilinear((node_y - by).astype(np.float32), cols, rows, step)
    # Cells with a node that does not project: exact per pixel, where any of their nodes did.
    known = np.isfinite(node_x)
    some = known[:-1, :-1] | known[:-1, 1:] | known[1:, :-1] | known[1:, 1:]
    r, c = np.nonzero(np.isnan(mx) & some[(rows // step)[:, None], (cols // step)[None, :]])
    ex, ey = mapping(c + float(x0), r + float(y0))
    wider = _union(box, _input_box(ex, ey, shape_in))
    if wider is None:
        return None
    mx += np.float32(bx - wider.x0)
    my += np.float32(by - wider.y0)
    mx[r, c] = ex - wider.x0
    my[r, c] = ey - wider.y0
    return (mx, my, *wider)


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return a or b
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))


def _bilinear(nodes: np.ndarray, cols: np.ndarray, rows: np.ndarray, step: int) -> np.ndarray:
    """Nodes (every ``step`` pixels from 0) interpolated to pixels ``rows`` x ``cols``."""
    jx, tx = cols // step, ((cols % step) / step).astype(np.float32)
    jy, ty = rows // step, ((rows % step) / step).astype(np.float32)[:, None]
    across = nodes[:, jx] * (1 - tx) + nodes[:, jx + 1] * tx
    out: np.ndarray = across[jy] * (1 - ty) + across[jy + 1] * ty
    return out


def _input_box(map_x: np.ndarray, map_y: np.ndarray, shape_in: tuple[int, ...]) -> Box | None:
    """The input pixels a set of coordinates reaches, with the kernel's margin; None if none."""
    ny, nx = shape_in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN
        lo_x, hi_x = np.nanmin(map_x), np.nanmax(map_x)
        lo_y, hi_y = np.nanmin(map_y), np.nanmax(map_y)
    if not np.isfinite(lo_x) or hi_x < -0.5 or lo_x > nx - 0.5 or hi_y < -0.5 or lo_y > ny - 0.5:
        return None
    return Box(
        max(0, math.floor(lo_x) - _MARGIN),
        max(0, math.floor(lo_y) - _MARGIN),
        min(nx, math.ceil(hi_x) + _MARGIN + 1),
        min(ny, math.ceil(hi_y) + _MARGIN + 1),
    )


def _relative(mx: np.ndarray, my: np.ndarray, shape_in: tuple[int, ...]) -> Maps | None:
    box = _input_box(mx, my, shape_in)
    if box is None:
        return None
    return (
        (mx - box.x0).astype(np.float32),
        (my - box.y0).astype(np.float32),
        *box,
    )


def _sample(
    data: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    flag: int,
) -> np.ndarray:
    """The input box ``data[y0:y1, x0:x1]`` at the (box-relative) maps; NaN past the input's
    outer half pixel, as ``reproject``'s map_coordinates."""
    ny, nx = data.shape
    src = data[y0:y1, x0:x1]
    if src.dtype != np.float32 or not src.dtype.isnative:
        src = src.astype(np.float32)
    if src.shape[0] < _CV2_MAX_SIDE and src.shape[1] < _CV2_MAX_SIDE:
        out = cv2.remap(src, mx, my, flag, borderMode=cv2.BORDER_REPLICATE)
    else:  # a tile that samples a very wide input (strong downsampling): scipy, bilinear
        out = _map_coordinates(src, mx, my)
    with np.errstate(invalid="ignore"):
        valid = (
            (mx >= -0.5 - x0) & (mx <= nx - 0.5 - x0) & (my >= -0.5 - y0) & (my <= ny - 0.5 - y0)
        )
    out[~valid] = np.nan
    return out


def _map_coordinates(src: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    coords: Any = np.stack([np.nan_to_num(my, nan=-10.0), np.nan_to_num(mx, nan=-10.0)])
    out: np.ndarray = map_coordinates(src, coords, order=1, mode="nearest")
    return out.astype(np.float32)
