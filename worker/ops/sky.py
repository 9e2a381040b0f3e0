"""Sky geometry of SODA stencils (CIRCLE, POLYGON, RANGE) on an image's pixel grid.

A pixel belongs to a stencil when its centre does. The pixel box of a stencil is the bounding
box of its member pixels, found exactly without testing every pixel of the image: the member
pixel furthest in any direction is either on the image's edge at a corner or at the end of a
run of members along that edge, or it has a neighbour that is not a member. Either way it lies
within two pixels of the stencil's boundary or is a corner. So the boundary curves are
sampled finely (in pixels) wherever they pass near the image's footprint, every pixel within
two pixels of a sample and the four corners are tested, and the bounds of the members among
them are the bounds of all members. Poles, RA 0/360, stencils larger than the image and
images inside a stencil need no special case. Images where some pixels have no sky position
(all-sky projections) are tested pixel by pixel instead.

Positions are ICRS degrees; images in another celestial frame (FK5, galactic, ...) are
rotated into ICRS as astropy transforms them. numpy and astropy (wcs, coordinates) only: no
FITS reading, no litestar.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from astropy.coordinates import CartesianRepresentation, SkyCoord, angular_separation
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame
from numpy.typing import ArrayLike

from contracts.astro import AnyStencil, Circle, Polygon, Range
from worker.errors import UsageError

_WINDOW = 2  # pixels tested on each side of a boundary sample
_SPACING = 1.5  # largest gap, in pixels, between consecutive boundary samples (see _windows)
_DIRECT = 20_000  # boundary samples taken directly, without first finding the image
_MAX_SAMPLES = 4_000_000  # boundary samples per stencil before refining stops
_CHUNK = 1 << 20  # pixels tested at once when every pixel is tested
_MARK_LIMIT = 1 << 26  # largest box of boundary windows marked in one boolean array
_EXHAUSTIVE_LIMIT = 100_000_000  # pixels of an image tested one by one, at most


@dataclass(frozen=True)
class PixelBox:
    """Inclusive 0-based pixel bounds: columns ``xmin..xmax``, rows ``ymin..ymax``."""

    xmin: int
    xmax: int
    ymin: int
    ymax: int

    @property
    def width(self) -> int:
        return self.xmax - self.xmin + 1

    @property
    def height(self) -> int:
        return self.ymax - self.ymin + 1

    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` to index a numpy image with."""
        return slice(self.ymin, self.ymax + 1), slice(self.xmin, self.xmax + 1)


def unit(ra: ArrayLike, dec: ArrayLike) -> np.ndarray:
    """Unit vectors ``(..., 3)`` of positions in degrees."""
    a, d = np.radians(ra), np.radians(dec)
    c = np.cos(d)
    return np.stack([c * np.cos(a), c * np.sin(a), np.sin(d)], axis=-1)


def lonlat(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [0, 360) and latitude, degrees, of vectors ``(..., 3)``."""
    lon = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    lon[lon >= 360.0] = 0.0  # a tiny negative angle modulo 360
    lat = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    return lon, lat


def angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (radians) between vectors, accurate at every separation."""
    return np.asarray(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))


@dataclass(frozen=True)
class Curve:
    """A piece of a stencil's boundary: ``at(t)`` for t in [0, 1] gives unit vectors at a
    constant angular speed, ``length`` radians in all."""

    at: Callable[[np.ndarray], np.ndarray]
    length: float


class Region(Protocol):
    """A stencil's membership test and boundary."""

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Which ICRS positions (degrees) are members; NaN positions are not."""
        ...

    def curves(self) -> list[Curve]:
        """The boundary, as curves that together hold every boundary point."""
        ...


class _Cap:
    """CIRCLE: within ``radius`` (great-circle distance, as astropy's ``separation``)."""

    def __init__(self, circle: Circle) -> None:
        self.ra, self.dec = math.radians(circle.ra), math.radians(circle.dec)
        self.radius = math.radians(circle.radius)
        self.centre = unit(np.float64(circle.ra), np.float64(circle.dec))

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            sep = angular_separation(np.radians(ra), np.radians(dec), self.ra, self.dec)
            return np.asarray(sep <= self.radius)

    def curves(self) -> list[Curve]:
        c = self.centre
        e1 = np.cross([0.0, 0.0, 1.0] if abs(c[2]) < 0.9 else [1.0, 0.0, 0.0], c)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(c, e1)
        cos_r, sin_r = math.cos(self.radius), math.sin(self.radius)

        def at(t: np.ndarray) -> np.ndarray:
            phi = 2 * math.pi * np.asarray(t)[..., None]
            return np.asarray(cos_r * c + sin_r * (np.cos(phi) * e1 + np.sin(phi) * e2))

        return [Curve(at, 2 * math.pi * sin_r)]


class _Polygon:
    """POLYGON: great-circle edges, even-odd rule on the gnomonic plane at the vertices' mean
    direction (where great circles are straight lines); that plane holds only the smaller of
    the two regions, whatever the winding."""

    def __init__(self, polygon: Polygon) -> None:
        ra, dec = np.array(polygon.vertices, dtype=np.float64).T
        self.vertices = unit(ra, dec)
        mean = self.vertices.sum(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm < 1e-9 or float(np.min(self.vertices @ (mean / norm))) < 1e-9:
            raise UsageError(f"{polygon.soda()} is wider than a hemisphere")
        self.centre = mean / norm
        e1 = np.cross([0.0, 0.0, 1.0] if abs(self.centre[2]) < 0.9 else [1.0, 0.0, 0.0], mean)
        self.e1 = e1 / np.linalg.norm(e1)
        self.e2 = np.cross(self.centre, self.e1)
        self.gx, self.gy = self._plane(self.vertices)

    def _plane(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = v @ self.centre
        with np.errstate(divide="ignore", invalid="ignore"):
            return (v @ self.e1) / w, (v @ self.e2) / w

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        v = unit(np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64))
        x, y = self._plane(v)
        inside = np.zeros(x.shape, dtype=bool)
        gx, gy = self.gx, self.gy
        with np.errstate(divide="ignore", invalid="ignore"):
            for i in range(len(gx)):
                x1, y1, x2, y2 = gx[i - 1], gy[i - 1], gx[i], gy[i]
                if y1 == y2:
                    continue  # a horizontal edge never straddles a point's row
                straddles = (y1 > y) != (y2 > y)
                cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
                inside ^= straddles & (x < cross)
        with np.errstate(invalid="ignore"):
            return np.asarray(inside & (v @ self.centre > 0))

    def curves(self) -> list[Curve]:
        out = []
        for a, b in zip(self.vertices, np.roll(self.vertices, -1, axis=0), strict=True):
            out.append(_great_arc(a, b))
        return out


def _great_arc(a: np.ndarray, b: np.ndarray) -> Curve:
    theta = float(angle(a, b))
    u = b - float(a @ b) * a
    norm = float(np.linalg.norm(u))
    u = u / norm if norm > 0 else u

    def at(t: np.ndarray) -> np.ndarray:
        s = theta * np.asarray(t)[..., None]
        return np.asarray(np.cos(s) * a + np.sin(s) * u)

    return Curve(at, theta)


class _Range:
    """RANGE: ``ra1 <= ra <= ra2`` (``ra >= ra1 or ra <= ra2`` when ra1 > ra2), and
    ``dec1 <= dec <= dec2``."""

    def __init__(self, box: Range) -> None:
        self.ra1, self.ra2, self.dec1, self.dec2 = box.bounds()
        self.full = self.ra2 - self.ra1 >= 360.0
        self.wraps = self.ra1 > self.ra2
        self.span = 360.0 if self.full else (self.ra2 - self.ra1) % 360.0

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ra, dec = np.asarray(ra), np.asarray(dec)
        with np.errstate(invalid="ignore"):
            in_dec = (dec >= self.dec1) & (dec <= self.dec2)
            if self.full:
                return np.asarray(in_dec & np.isfinite(ra))
            if self.wraps:
                in_ra = (ra >= self.ra1) | (ra <= self.ra2)
            else:  # RA 0 is also RA 360
                in_ra = ((ra >= self.ra1) & (ra <= self.ra2)) | ((ra == 0) & (self.ra2 == 360))
            return in_dec & in_ra

    def curves(self) -> list[Curve]:
        out = []
        dec1, dec2 = self.dec1, self.dec2
        if not self.full and dec2 > dec1:
            for ra in (self.ra1, self.ra2):
                out.append(_meridian(ra, dec1, dec2))
        if self.span > 0:
            for dec in (dec1, dec2):
                if -90.0 < dec < 90.0:
                    out.append(_parallel(dec, self.ra1, self.span))
        return out


def _meridian(ra: float, dec1: float, dec2: float) -> Curve:
    def at(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        return unit(np.full(t.shape, ra), dec1 + (dec2 - dec1) * t)

    return Curve(at, math.radians(dec2 - dec1))


def _parallel(dec: float, ra1: float, span: float) -> Curve:
    def at(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        return unit(ra1 + span * t, np.full(t.shape, dec))

    return Curve(at, math.radians(span) * math.cos(math.radians(dec)))


def region(stencil: AnyStencil) -> Region:
    """The geometry of a stencil.

    Raises:
        UsageError: a polygon wider than a hemisphere (its smaller region is not supported).
    """
    if isinstance(stencil, Circle):
        return _Cap(stencil)
    if isinstance(stencil, Polygon):
        return _Polygon(stencil)
    return _Range(stencil)


@dataclass(frozen=True)
class Footprint:
    """A cap holding the sky position of every pixel centre of an image."""

    centre: np.ndarray
    radius: float
    """Radians; pi when the cap is the whole sky."""


class SkyGrid:
    """An image's celestial pixel grid: pixel centres to ICRS and back, and its footprint.

    ``wcs`` is the 2-D celestial WCS (SIP and other distortions are used); pixel coordinates
    are 0-based, ``x`` along its first axis. Build it once per image: it caches the frame
    rotation and the footprint.
    """

    def __init__(self, wcs: WCS, shape: tuple[int, int]) -> None:
        """Raises:
        UsageError: the WCS has no known celestial frame or a degenerate pixel scale.
        """
        self.wcs = wcs
        self.height, self.width = shape
        self._lat_first = wcs.wcs.lng == 1
        try:
            frame = wcs_to_celestial_frame(wcs)
        except ValueError as e:
            raise UsageError(f"the celestial frame of the WCS is not known: {e}") from e
        self._frame = None if frame.name == "icrs" else frame
        self._rotation = None if self._frame is None else _rotation_to_icrs(frame)
        scales = proj_plane_pixel_scales(wcs)
        self.scale = math.radians(float(np.min(scales)))
        """Radians per pixel (the smaller axis)."""
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise UsageError("the WCS has a degenerate pixel scale")

    def world(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS (ra, dec) in degrees of 0-based pixel positions; NaN where there is none."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.size == 0:
            return np.empty(x.shape), np.empty(x.shape)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a, b = self.wcs.all_pix2world(x, y, 0)
        lon, lat = (b, a) if self._lat_first else (a, b)
        if self._rotation is not None:
            return lonlat(unit(lon, lat) @ self._rotation.T)
        if self._frame is not None:  # not a rotation (FK4): astropy, point by point
            icrs = SkyCoord(lon, lat, unit="deg", frame=self._frame).icrs
            lon, lat = icrs.ra.deg, icrs.dec.deg
        lon = lon % 360.0
        lon[lon >= 360.0] = 0.0
        return lon, lat

    def pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel positions of ICRS positions (degrees); NaN where there is none."""
        ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
        if ra.size == 0:
            return np.empty(ra.shape), np.empty(ra.shape)
        if self._rotation is not None:
            ra, dec = lonlat(unit(ra, dec) @ self._rotation)
        elif self._frame is not None:
            native = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(self._frame)
            ra, dec = native.spherical.lon.deg, native.spherical.lat.deg
        a, b = (dec, ra) if self._lat_first else (ra, dec)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x, y = self.wcs.all_world2pix(a, b, 0, quiet=True)
        return np.asarray(x), np.asarray(y)

    def corners(self) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.width - 1, self.height - 1
        return np.array([0, w, 0, w]), np.array([0, 0, h, h])

    @cached_property
    def footprint(self) -> Footprint | None:
        """The cap around the image centre holding every pixel centre, or None when some
        pixels (sampled on the edges and a coarse grid) have no sky position."""
        n = 32
        xs = np.linspace(0.0, self.width - 1.0, n + 1)
        ys = np.linspace(0.0, self.height - 1.0, n + 1)
        one_x, one_y = np.ones_like(xs), np.ones_like(ys)
        # The edges walked in order, so neighbours in the array are neighbours on the image.
        bx = np.concatenate([xs, one_y * xs[-1], xs[::-1], one_y * xs[0]])
        by = np.concatenate([one_x * ys[0], ys, one_x * ys[-1], ys[::-1]])
        gx, gy = np.meshgrid(xs[::4], ys[::4])
        cx, cy = (self.width - 1) / 2, (self.height - 1) / 2
        ra, dec = self.world(
            np.concatenate([[cx], bx, gx.ravel()]), np.concatenate([[cy], by, gy.ravel()])
        )
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            return None
        v = unit(ra, dec)
        centre, edge = v[0], v[1 : 1 + bx.size]
        step = float(np.max(angle(edge[1:], edge[:-1])))
        radius = float(np.max(angle(edge, centre))) + step / 2 + 4 * self.scale
        # Past a quarter turn the farthest pixel may lie inside the image: take the whole sky.
        return Footprint(centre, radius if radius < math.pi / 2 else math.pi)


def _rotation_to_icrs(frame: object) -> np.ndarray | None:
    """The rotation taking unit vectors of ``frame`` to ICRS as astropy transforms them, or
    None when the transformation is not a rotation (FK4's E-terms of aberration).

    Raises:
        UsageError: astropy cannot transform the frame to ICRS.
    """
    probe = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, -0.48, 0.64], [0, 0.6, -0.8]])
    try:
        moved = SkyCoord(CartesianRepresentation(probe.T), frame=frame).icrs
    except Exception as e:  # the transform graph raises many kinds
        raise UsageError(f"cannot transform the image's frame to ICRS: {e}") from e
    out = moved.cartesian.xyz.value.T
    out /= np.linalg.norm(out, axis=1)[:, None]
    rotation = out[:3].T
    if not np.allclose(probe[3:] @ rotation.T, out[3:], rtol=0, atol=1e-14):
        return None
    return np.asarray(rotation)


def pixel_box(stencil: AnyStencil, grid: SkyGrid) -> PixelBox | None:
    """The bounds of the pixels whose centres lie in ``stencil``, or None when there are none.

    Raises:
        UsageError: the stencil's geometry is not supported (see :func:`region`), or the
            image has pixels off the sky and is too large to test pixel by pixel.
    """
    shape = region(stencil)
    footprint = grid.footprint
    if footprint is None:
        if grid.width * grid.height > _EXHAUSTIVE_LIMIT:
            raise UsageError(
                f"the image has pixels with no sky position and more than "
                f"{_EXHAUSTIVE_LIMIT} pixels: too large to test pixel by pixel"
            )
        return _exhaustive_box(shape, grid)
    xs, ys = [grid.corners()[0]], [grid.corners()[1]]
    for curve in shape.curves():
        x, y = _boundary(curve, footprint, grid)
        cx, cy = _windows(x, y, grid)
        xs.append(cx)
        ys.append(cy)
    x, y = np.concatenate(xs), np.concatenate(ys)
    inside = shape.contains(*grid.world(x, y))
    if not inside.any():
        return None
    x, y = x[inside], y[inside]
    return PixelBox(int(x.min()), int(x.max()), int(y.min()), int(y.max()))


def member_mask(stencil: AnyStencil, grid: SkyGrid, box: PixelBox) -> np.ndarray:
    """Which pixels of ``box`` have their centre in ``stencil``: bool ``(height, width)``."""
    shape = region(stencil)
    mask = np.empty((box.height, box.width), dtype=bool)
    rows = max(1, _CHUNK // box.width)  # a bounded number of positions in memory at once
    for top in range(0, box.height, rows):
        y0 = box.ymin + top
        ys, xs = np.mgrid[y0 : min(y0 + rows, box.ymax + 1), box.xmin : box.xmax + 1]
        inside = shape.contains(*grid.world(xs.ravel(), ys.ravel()))
        mask[top : top + ys.shape[0]] = inside.reshape(xs.shape)
    return mask


def _exhaustive_box(shape: Region, grid: SkyGrid) -> PixelBox | None:
    lo_x, hi_x, lo_y, hi_y = grid.width, -1, grid.height, -1
    rows = max(1, _CHUNK // grid.width)
    for y0 in range(0, grid.height, rows):
        ys, xs = np.mgrid[y0 : min(y0 + rows, grid.height), 0 : grid.width]
        inside = shape.contains(*grid.world(xs.ravel(), ys.ravel())).reshape(xs.shape)
        if inside.any():
            cols = np.flatnonzero(inside.any(axis=0))
            hit = np.flatnonzero(inside.any(axis=1)) + y0
            lo_x, hi_x = min(lo_x, int(cols[0])), max(hi_x, int(cols[-1]))
            lo_y, hi_y = min(lo_y, int(hit[0])), max(hi_y, int(hit[-1]))
    return None if hi_x < 0 else PixelBox(lo_x, hi_x, lo_y, hi_y)


def _boundary(curve: Curve, footprint: Footprint, grid: SkyGrid) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions along ``curve`` where it may pass over the image, consecutive samples
    at most ``_SPACING`` pixels apart (NaN where a position has no pixel)."""
    step = 0.8 * _SPACING * grid.scale
    if curve.length <= 0:
        return grid.pixel(*lonlat(curve.at(np.zeros(1))))
    n = math.ceil(curve.length / step)
    if n <= _DIRECT:  # short enough to sample whole
        t = np.arange(n + 1) / n
        x, y = grid.pixel(*lonlat(curve.at(t)))
        return _refine(curve, t, x, y, 1.0 / n, grid)
    # Segments [i, i + 1] / n of the curve, subdivided while they may reach the footprint.
    n, starts = 64, np.arange(64, dtype=np.int64)
    while True:
        seg = curve.length / n
        if footprint.radius < math.pi:
            a, b = curve.at(starts / n), curve.at((starts + 1) / n)
            reach = footprint.radius + seg / 2
            near = np.minimum(angle(a, footprint.centre), angle(b, footprint.centre)) <= reach
            starts = starts[near]
        if seg <= step or starts.size == 0 or starts.size * 8 > _MAX_SAMPLES:
            break
        k = min(8, math.ceil(seg / step))
        starts = (starts[:, None] * k + np.arange(k)).ravel()
        n *= k
    if starts.size == 0:
        return np.empty(0), np.empty(0)
    t = np.union1d(starts, starts + 1) / n
    x, y = grid.pixel(*lonlat(curve.at(t)))
    return _refine(curve, t, x, y, 1.0 / n, grid)


def _refine(
    curve: Curve, t: np.ndarray, x: np.ndarray, y: np.ndarray, dt: float, grid: SkyGrid
) -> tuple[np.ndarray, np.ndarray]:
    """Add samples between neighbours more than ``_SPACING`` pixels apart near the image
    (distortion, or a scale that varies across the image)."""
    for _ in range(6):
        with np.errstate(invalid="ignore"):
            # Neighbours whose span (with the windows' margin) reaches the image.
            x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
            near = (np.minimum(x0, x1) < grid.width + 3) & (np.maximum(x0, x1) > -4)
            near &= (np.minimum(y0, y1) < grid.height + 3) & (np.maximum(y0, y1) > -4)
            gap = np.hypot(x1 - x0, y1 - y0)
            wide = (np.diff(t) <= dt * (1 + 1e-9)) & (gap > _SPACING) & near
        index = np.flatnonzero(wide)
        if index.size == 0 or t.size > _MAX_SAMPLES:
            break
        parts = np.minimum(np.ceil(gap[index] / (0.5 * _SPACING)), 1024).astype(np.int64)
        owner = np.repeat(index, parts - 1)
        within = np.arange(owner.size) - np.repeat(np.cumsum(parts - 1) - (parts - 1), parts - 1)
        fraction = (within + 1) / np.repeat(parts, parts - 1)
        extra = t[owner] + (t[owner + 1] - t[owner]) * fraction
        ex, ey = grid.pixel(*lonlat(curve.at(extra)))
        order = np.argsort(np.concatenate([t, extra]), kind="stable")
        t = np.concatenate([t, extra])[order]
        x = np.concatenate([x, ex])[order]
        y = np.concatenate([y, ey])[order]
    return x, y


def _windows(x: np.ndarray, y: np.ndarray, grid: SkyGrid) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of the image within ``_WINDOW`` pixels (per axis) of a sample.

    Enough: an extreme member pixel p has a non-member neighbour, so the boundary crosses
    within 1 pixel of p; a sample lies within half a gap (``_SPACING / 2``, a little more
    along a curve) of the crossing, and rounding the sample moves it by at most 0.5: 1 + 0.75
    + 0.5 < 3, so p is within 2 whole pixels of the rounded sample.
    """
    with np.errstate(invalid="ignore"):
        ok = (x > -_WINDOW - 1) & (x < grid.width + _WINDOW) & (y > -_WINDOW - 1)
        ok &= y < grid.height + _WINDOW
    if not ok.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    ix, iy = np.rint(x[ok]).astype(np.int64), np.rint(y[ok]).astype(np.int64)
    x0, x1 = max(int(ix.min()) - _WINDOW, 0), min(int(ix.max()) + _WINDOW, grid.width - 1)
    y0, y1 = max(int(iy.min()) - _WINDOW, 0), min(int(iy.max()) + _WINDOW, grid.height - 1)
    offsets = np.arange(-_WINDOW, _WINDOW + 1)
    px = (ix[:, None, None] + offsets[None, None, :]).repeat(offsets.size, axis=1).ravel()
    py = (iy[:, None, None] + offsets[None, :, None]).repeat(offsets.size, axis=2).ravel()
    keep = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
    px, py = px[keep], py[keep]
    if (x1 - x0 + 1) * (y1 - y0 + 1) <= _MARK_LIMIT:
        marked = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
        marked[py - y0, px - x0] = True
        my, mx = np.nonzero(marked)
        return mx + x0, my + y0
    flat = np.unique(py * grid.width + px)
    return flat % grid.width, flat // grid.width
