"""Properties of the stencil geometry (``worker.ops.sky``) on small random fields.

The reference is brute force over every pixel centre, written independently of the module:
astropy's ``SkyCoord.separation`` for circles, ICRS coordinates compared with the bounds for
ranges, and a winding-number sum of the angles the edges subtend for polygons. Fields are TAN
grids anywhere on the sky (across RA 0/360, on a pole), turned, in ICRS, FK5 or galactic
coordinates; stencils are drawn around them, from much smaller than a pixel to much larger
than the field.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from contracts.astro import AnyStencil, Circle, Polygon, Range
from tests.astrodata import from_tangent
from worker.errors import UsageError
from worker.ops.sky import PixelBox, SkyGrid, member_mask, pixel_box, region

PROPERTIES = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Field:
    wcs: WCS
    shape: tuple[int, int]  # (ny, nx)
    centre: tuple[float, float]  # ICRS degrees
    side: float  # degrees across, roughly

    def sky(self) -> SkyCoord:
        ys, xs = np.mgrid[0 : self.shape[0], 0 : self.shape[1]]
        return self.wcs.pixel_to_world(xs.ravel(), ys.ravel())


FRAMES = {
    "icrs": (("RA---TAN", "DEC--TAN"), "ICRS"),
    "icrs, latitude first": (("DEC--TAN", "RA---TAN"), "ICRS"),
    "fk5": (("RA---TAN", "DEC--TAN"), "FK5"),
    "galactic": (("GLON-TAN", "GLAT-TAN"), None),
}


@st.composite
def fields(draw: st.DrawFn) -> Field:
    ra = draw(st.one_of(st.floats(0, 360, exclude_max=True), st.sampled_from([0.0, 359.995])))
    dec = draw(st.one_of(st.floats(-89.5, 89.5), st.sampled_from([89.99, -89.98, 0.0])))
    nx, ny = draw(st.integers(6, 40)), draw(st.integers(6, 40))
    scale = draw(st.floats(0.5, 90.0))  # arcseconds
    rotation = draw(st.floats(-180, 180))
    ctype, radesys = FRAMES[draw(st.sampled_from(sorted(FRAMES)))]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = list(ctype)
    lat_first = ctype[0].startswith("DEC")
    wcs.wcs.crval = [dec, ra] if lat_first else [ra, dec]  # in the field's own frame
    wcs.wcs.crpix = [(nx + 1) / 2 + draw(st.floats(-3, 3)), (ny + 1) / 2]
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    wcs.wcs.pc = [[c, -s], [s, c]]
    if radesys:
        wcs.wcs.radesys = radesys
        wcs.wcs.equinox = 2000.0
    wcs.wcs.set()
    middle = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
    centre = (float(middle.ra.deg), float(middle.dec.deg))
    return Field(wcs, (ny, nx), centre, max(nx, ny) * scale / 3600)


def _near(draw: st.DrawFn, field: Field, reach: float) -> tuple[float, float]:
    """A position within ``reach`` field sides of the field's centre (tangent plane)."""
    dx = draw(st.floats(-reach, reach)) * field.side
    dy = draw(st.floats(-reach, reach)) * field.side
    ra, dec = from_tangent(field.centre, np.array(dx), np.array(dy))
    return float(ra) % 360.0, float(np.clip(dec, -90, 90))


@st.composite
def circles(draw: st.DrawFn, field: Field) -> Circle:
    ra, dec = _near(draw, field, 1.5)
    radius = field.side * draw(st.one_of(st.floats(0.01, 1.0), st.floats(1.0, 3.0)))
    return Circle(ra=ra, dec=dec, radius=min(radius, 180.0))


@st.composite
def ranges(draw: st.DrawFn, field: Field) -> Range:
    ra, dec = _near(draw, field, 1.0)
    cos_dec = max(math.cos(math.radians(dec)), 1e-3)
    half_ra = min(field.side * draw(st.floats(0.05, 2.0)) / cos_dec, 179.0)
    half_dec = field.side * draw(st.floats(0.05, 2.0))
    ra1, ra2 = (ra - half_ra) % 360.0, (ra + half_ra) % 360.0
    dec1, dec2 = max(dec - half_dec, -90.0), min(dec + half_dec, 90.0)
    open_ra = draw(st.booleans()) and draw(st.booleans())
    return Range(
        ra=(None, None) if open_ra else (ra1, ra2),
        dec=(None if draw(st.booleans()) and dec1 < -80 else dec1,
             None if draw(st.booleans()) and dec2 > 80 else dec2),
    )  # fmt: skip


@st.composite
def polygons(draw: st.DrawFn, field: Field) -> Polygon:
    """Convex or not: vertices at increasing angles around a centre, at random distances."""
    ra, dec = _near(draw, field, 1.0)
    n = draw(st.integers(3, 8))
    angles = np.sort(draw(st.lists(st.floats(0, 2 * math.pi), min_size=n, max_size=n, unique=True)))
    size = field.side * draw(st.floats(0.05, 1.5))
    radii = [size * draw(st.floats(0.3, 1.0)) for _ in range(n)]
    xs, ys = np.cos(angles) * radii, np.sin(angles) * radii
    vra, vdec = from_tangent((ra, dec), xs, ys)
    vertices = [(float(a) % 360.0, float(d)) for a, d in zip(vra, vdec, strict=True)]
    try:
        return Polygon(vertices=vertices)
    except ValueError:  # two neighbours the same: draw again
        assume(False)
        raise


TIE = 1e-9
"""Relative distance to a circle's edge within which a pixel centre is on it: membership there
depends on the last bits of two different separation formulas, and either answer is right."""


def _brute(field: Field, stencil: AnyStencil) -> tuple[np.ndarray, np.ndarray]:
    """(members, pixels on the edge) by testing every pixel centre."""
    sky = field.sky()
    on_edge = np.zeros(field.shape, dtype=bool)
    if isinstance(stencil, Circle):
        centre = SkyCoord(stencil.ra, stencil.dec, unit="deg", frame="icrs")
        separation = sky.separation(centre).deg
        inside = separation <= stencil.radius
        on_edge = (np.abs(separation - stencil.radius) <= TIE * stencil.radius).reshape(field.shape)
    elif isinstance(stencil, Range):
        ra1, ra2, dec1, dec2 = stencil.bounds()
        icrs = sky.icrs
        ra, dec = icrs.ra.deg, icrs.dec.deg
        if ra2 - ra1 >= 360:
            in_ra = np.ones(ra.shape, dtype=bool)
        elif ra1 > ra2:
            in_ra = (ra >= ra1) | (ra <= ra2)
        else:
            in_ra = (ra >= ra1) & (ra <= ra2)
        inside = in_ra & (dec >= dec1) & (dec <= dec2)
    else:
        vertices = SkyCoord(*np.array(stencil.vertices).T, unit="deg").cartesian.xyz.value.T
        p = sky.icrs.cartesian.xyz.value.T
        total = np.zeros(len(p))
        for a, b in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
            total += np.arctan2(p @ np.cross(a, b), a @ b - (p @ a) * (p @ b))
        inside = np.abs(total) > math.pi
    return np.asarray(inside).reshape(field.shape), on_edge


def _box(members: np.ndarray) -> PixelBox | None:
    if not members.any():
        return None
    ys, xs = np.nonzero(members)
    return PixelBox(int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max()))


def _check(field: Field, stencil: AnyStencil) -> None:
    """The box is the brute-force members' bounds; the mask is the members within it (a
    pixel centre on a circle's edge may count either way)."""
    members, on_edge = _brute(field, stencil)
    grid = SkyGrid(field.wcs, field.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        box = pixel_box(stencil, grid)
    if not on_edge.any():
        assert box == _box(members)
    else:
        _assert_between(box, _box(members & ~on_edge), _box(members | on_edge))
    if box is not None:
        rows, cols = box.slices()
        mask = member_mask(stencil, grid, box)
        sure = ~on_edge[rows, cols]
        assert np.array_equal(mask[sure], members[rows, cols][sure])


def _assert_between(box: PixelBox | None, inner: PixelBox | None, outer: PixelBox | None) -> None:
    """``inner`` ⊆ ``box`` ⊆ ``outer`` (None: empty)."""
    if inner is not None:
        assert box is not None
        assert box.xmin <= inner.xmin and box.ymin <= inner.ymin
        assert box.xmax >= inner.xmax and box.ymax >= inner.ymax
    if box is not None:
        assert outer is not None
        assert outer.xmin <= box.xmin and outer.ymin <= box.ymin
        assert outer.xmax >= box.xmax and outer.ymax >= box.ymax


@PROPERTIES
@given(st.data())
def test_circle_box_and_mask_are_the_brute_force_ones(data: st.DataObject) -> None:
    field = data.draw(fields())
    _check(field, data.draw(circles(field)))


@PROPERTIES
@given(st.data())
def test_range_box_and_mask_are_the_brute_force_ones(data: st.DataObject) -> None:
    field = data.draw(fields())
    _check(field, data.draw(ranges(field)))


@PROPERTIES
@given(st.data())
def test_polygon_box_and_mask_do_not_depend_on_winding(data: st.DataObject) -> None:
    field = data.draw(fields())
    polygon = data.draw(polygons(field))
    _check(field, polygon)
    reverse = Polygon(vertices=polygon.vertices[::-1])
    grid = SkyGrid(field.wcs, field.shape)
    box = pixel_box(polygon, grid)
    assert pixel_box(reverse, grid) == box
    if box is not None:
        assert np.array_equal(member_mask(reverse, grid, box), member_mask(polygon, grid, box))


@PROPERTIES
@given(st.data())
def test_a_wrapping_range_is_the_union_of_its_two_parts(data: st.DataObject) -> None:
    field = data.draw(fields())
    ra1 = data.draw(st.floats(180, 360))
    ra2 = data.draw(st.floats(0, 180))
    dec1 = data.draw(st.floats(-90, 90))
    dec = (dec1, data.draw(st.floats(dec1, 90)))
    ra, declination = field.sky().icrs.ra.deg, field.sky().icrs.dec.deg
    shape = region(Range(ra=(ra1, ra2), dec=dec))
    east = region(Range(ra=(ra1, 360.0), dec=dec))
    west = region(Range(ra=(0.0, ra2), dec=dec))
    assert np.array_equal(
        shape.contains(ra, declination),
        east.contains(ra, declination) | west.contains(ra, declination),
    )


def test_ra_360_is_ra_0() -> None:
    shape = region(Range(ra=(350.0, 360.0), dec=(None, None)))
    assert shape.contains(np.array([0.0, 355.0, 10.0]), np.zeros(3)).tolist() == [
        True,
        True,
        False,
    ]


def test_open_sides_reach_the_poles() -> None:
    shape = region(Range(ra=(None, None), dec=(80.0, None)))
    assert shape.contains(np.array([0.0, 123.0, 5.0]), np.array([90.0, 85.0, 79.0])).tolist() == [
        True,
        True,
        False,
    ]


def test_a_polygon_wider_than_a_hemisphere_is_refused() -> None:
    with pytest.raises(UsageError, match=r"POLYGON 0\.0 0\.0 120\.0 0\.0 240\.0 0\.0"):
        region(Polygon(vertices=[(0, 0), (120, 0), (240, 0)]))


def test_every_pixel_of_an_image_inside_the_stencil() -> None:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [200.0, -30.0]
    wcs.wcs.crpix = [10, 10]
    wcs.wcs.cdelt = [-1e-3, 1e-3]
    grid = SkyGrid(wcs, (20, 20))
    assert pixel_box(Circle(ra=200.0, dec=-30.0, radius=1.0), grid) == PixelBox(0, 19, 0, 19)
    assert pixel_box(Circle(ra=20.0, dec=30.0, radius=1.0), grid) is None


def test_an_all_sky_image_with_pixels_off_the_sky() -> None:
    """An Aitoff map: its corners have no sky position, so every pixel is tested."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---AIT", "DEC--AIT"]
    wcs.wcs.crval = [0.0, 0.0]
    wcs.wcs.crpix = [90.5, 45.5]
    wcs.wcs.cdelt = [-2.0, 2.0]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    field = Field(wcs, (90, 180), (0.0, 0.0), 360.0)
    grid = SkyGrid(wcs, field.shape)
    assert grid.footprint is None
    for stencil in (
        Range(ra=(None, None), dec=(None, None)),
        Circle(ra=100.0, dec=-60.0, radius=25.0),
        Range(ra=(300.0, 20.0), dec=(10.0, None)),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # astropy on the NaN corners
            _check(field, stencil)


@pytest.mark.parametrize("projection", ["CAR", "ZEA", "SIN", "STG", "ARC"])
def test_wide_fields_whose_scale_varies(projection: str) -> None:
    """60 x 40 degree maps at high latitude, where a pixel spans very different angles across
    the image; stencils at seeded positions over it."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [f"RA---{projection}", f"DEC--{projection}"]
    wcs.wcs.crval = [40.0, 0.0 if projection == "CAR" else 70.0]
    wcs.wcs.crpix = [60.5, -80.0 if projection == "CAR" else 40.5]
    wcs.wcs.cdelt = [-0.5, 0.5]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    field = Field(wcs, (80, 120), (40.0, 70.0), 60.0)
    rng = np.random.default_rng(7)
    xs, ys = rng.uniform(0, 119, 12), rng.uniform(0, 79, 12)
    for ra, dec in zip(*wcs.all_pix2world(xs, ys, 0), strict=True):
        ra, dec = float(ra) % 360.0, float(dec)
        _check(field, Circle(ra=ra, dec=dec, radius=float(rng.uniform(0.3, 20))))
        ra2 = (ra + rng.uniform(1, 60)) % 360.0
        _check(field, Range(ra=(ra, ra2), dec=(dec, min(90.0, dec + rng.uniform(0.5, 15)))))
        top = min(dec + 6, 89.9)
        _check(
            field, Polygon(vertices=[(ra, dec), ((ra + 10) % 360, dec - 3), ((ra + 5) % 360, top)])
        )
