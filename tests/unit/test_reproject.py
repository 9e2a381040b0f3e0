"""Tests of ``worker.ops.reproject``: the resampling core of ``mosaic`` (and ``composite``).

The reference is ``reproject.reproject_interp`` (bilinear) on the same data and grids: on the
pixels both cover the values agree to a median relative difference of 1e-3 or better, and the
covered pixels are the same ones except on the footprint's one-pixel border. Real files come
from ``tests.astrodata`` (read here with astropy directly); synthetic skies from its renderer.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning, Sip
from reproject import reproject_interp
from reproject.mosaicking import find_optimal_celestial_wcs

from contracts.astro import Grid
from tests import astrodata
from worker.ops import reproject as rp
from worker.ops.reproject import covering_grid, edge_points, grid_wcs, overlap_box, regrid

MEDIAN_RELATIVE = 1e-3


def _read(path: Path, hdu: int) -> tuple[np.ndarray, WCS]:
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # DSS and UKIDSS headers are old
        return hdul[hdu].data.astype(np.float32), WCS(hdul[hdu].header, hdul).celestial


def _field(
    centre: tuple[float, float],
    shape: tuple[int, int],
    scale: float,
    rotation: float = 0.0,
    seed: int = 1,
) -> tuple[np.ndarray, WCS]:
    wcs = astrodata.tan_wcs(centre, shape, scale, rotation)
    side = max(shape) * scale / 3600 * 1.5
    sky = astrodata.make_sky(centre, side, seed=seed, fwhm_arcsec=3 * scale)
    return sky.render(wcs, shape), wcs


def _ring(mask: np.ndarray) -> np.ndarray:
    """The pixels within one pixel of the mask's edge (inside or outside)."""
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, kernel) != cv2.erode(m, kernel, borderValue=0)).astype(bool)


def assert_matches(ours: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Median relative difference on common pixels within bounds, footprints equal but for
    the border ring; returns both numbers (for the record)."""
    both = np.isfinite(ours) & np.isfinite(ref) & (ref != 0)
    assert both.sum() > 0.5 * np.isfinite(ref).sum()
    rel = np.abs(ours[both] - ref[both]) / np.abs(ref[both])
    median = float(np.median(rel))
    assert median <= MEDIAN_RELATIVE, median
    differ = np.isfinite(ours) != np.isfinite(ref)
    assert not (differ & ~_ring(np.isfinite(ref))).any(), "footprints differ off the border"
    # On the border, at most a few percent of the ring may differ (sub-pixel rounding).
    assert differ.sum() <= 0.05 * _ring(np.isfinite(ref)).sum() + 2
    return median, int(differ.sum())


def _reference(data: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape: tuple[int, int]) -> np.ndarray:
    ref, _ = reproject_interp((data, wcs_in), wcs_out, shape_out=shape, order="bilinear")
    return ref.astype(np.float32)


# -- regrid against reproject_interp ------------------------------------------------------------


def test_rotated_tan_onto_another_scale_and_rotation() -> None:
    data, wcs_in = _field((150.1, 2.2), (512, 512), 0.2, rotation=20)
    centre = (150.1 + 0.004, 2.2 - 0.003)
    wcs_out = astrodata.tan_wcs(centre, (560, 600), 0.23, -35)
    ours, footprint = regrid(data, wcs_in, wcs_out, (560, 600))
    assert ours.dtype == np.float32 and footprint.dtype == np.float32
    assert np.array_equal(footprint, np.isfinite(ours).astype(np.float32))
    ref = _reference(data, wcs_in, wcs_out, (560, 600))
    median, differ = assert_matches(ours, ref)
    assert median < 1e-5 and differ <= 4  # in fact: ~3e-7 and 0 to 1 pixel


def test_sip_file_in_fk5_onto_an_icrs_grid() -> None:
    data, wcs_in = _read(astrodata.sip_file(), 0)
    assert wcs_in.sip is not None and wcs_in.wcs.radesys == "FK5"
    wcs_out, shape = covering_grid([(wcs_in, data.shape)], 0.3)
    ours, _ = regrid(data, wcs_in, wcs_out, shape)
    assert_matches(ours, _reference(data, wcs_in, wcs_out, shape))


@pytest.mark.parametrize("direction", ["dss-to-ukidss", "ukidss-to-dss"])
def test_m1_between_dss_and_ukidss(direction: str) -> None:
    """Different projections (TAN with a plate polynomial, ZPN) and scales (1.7", 0.2")."""
    dss, ukidss = _read(astrodata.m1_dss(), 0), _read(astrodata.m1_ukidss(), 1)
    (data, wcs_in), (target, wcs_out) = (
        (dss, ukidss) if direction == "dss-to-ukidss" else (ukidss, dss)
    )
    ours, _ = regrid(data, wcs_in, wcs_out, target.shape)
    assert_matches(ours, _reference(data, wcs_in, wcs_out, target.shape))


def test_field_across_ra_zero(tmp_path: Path) -> None:
    path, _ = astrodata.wrap_field(tmp_path)
    data, wcs_in = _read(path, 0)
    wcs_out = astrodata.tan_wcs((359.995, 10.01), (500, 520), 0.8, 12)
    ours, _ = regrid(data, wcs_in, wcs_out, (500, 520))
    ref = _reference(data, wcs_in, wcs_out, (500, 520))
    assert_matches(ours, ref)
    rows, cols = np.nonzero(np.isfinite(ours))
    ra, _ = wcs_out.all_pix2world(cols, rows, 0)
    assert (ra > 359.95).sum() > 10_000 and (ra < 0.05).sum() > 10_000  # both sides of 0


def test_field_on_the_pole(tmp_path: Path) -> None:
    path, _ = astrodata.pole_field(tmp_path)
    data, wcs_in = _read(path, 0)
    grid = Grid(ra=200.0, dec=90.0, width=480, height=460, scale=1.6, rotation=70, projection="ZEA")
    wcs_out, shape = grid_wcs(grid)
    ours, _ = regrid(data, wcs_in, wcs_out, shape)
    assert_matches(ours, _reference(data, wcs_in, wcs_out, shape))


def test_input_nans_blank_what_reproject_blanks() -> None:
    data, wcs_in = _field((10.0, -30.0), (300, 300), 0.5, 5)
    data[100:110, 40:43] = np.nan
    rng = np.random.default_rng(3)
    data[rng.integers(0, 300, 50), rng.integers(0, 300, 50)] = np.nan
    wcs_out = astrodata.tan_wcs((10.0, -30.0), (330, 310), 0.45, -8)
    ours, footprint = regrid(data, wcs_in, wcs_out, (330, 310))
    ref = _reference(data, wcs_in, wcs_out, (330, 310))
    inner = ~_ring(np.isfinite(_reference(np.ones_like(data), wcs_in, wcs_out, (330, 310))))
    assert np.array_equal(np.isnan(ours) & inner, np.isnan(ref) & inner)
    assert (footprint[np.isnan(ours)] == 0).all()
    assert_matches(ours, ref)


def test_bicubic_follows_the_sky() -> None:
    """Bicubic is OpenCV's cubic convolution, not reproject's spline: compare both
    interpolations with the sky rendered directly on the output grid (same pixel area)."""
    centre = (83.6, 22.0)
    wcs_in = astrodata.tan_wcs(centre, (400, 400), 0.5, 0.0)
    wcs_out = astrodata.tan_wcs((83.601, 22.001), (380, 380), 0.5, 33.0)
    sky = astrodata.make_sky(centre, 0.1, seed=4, fwhm_arcsec=3.0)
    data, truth = sky.render(wcs_in, (400, 400)), sky.render(wcs_out, (380, 380))
    for interpolation in ("bilinear", "bicubic"):
        ours, _ = regrid(data, wcs_in, wcs_out, (380, 380), interpolation)
        inner = np.isfinite(ours) & ~_ring(np.isfinite(ours))
        rel = np.abs(ours[inner] - truth[inner]) / truth[inner]
        assert np.median(rel) <= MEDIAN_RELATIVE, (interpolation, np.median(rel))


def _all_sky(scale: float) -> tuple[WCS, tuple[int, int]]:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    wcs.wcs.crval = [0.0, 0.0]
    wcs.wcs.crpix = [180 / scale + 0.5, 90 / scale + 0.5]
    wcs.wcs.cdelt = [-scale, scale]
    wcs.wcs.set()
    return wcs, (round(180 / scale), round(360 / scale))


def _smooth(projection: str, size: int, scale: float) -> tuple[np.ndarray, WCS]:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [f"RA---{projection}", f"DEC--{projection}"]
    wcs.wcs.crval = [30.0, 20.0]
    wcs.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    wcs.wcs.cdelt = [-scale, scale]
    wcs.wcs.set()
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    lon, lat = wcs.all_pix2world(xs, ys, 0)
    data = 100 + 30 * np.cos(np.radians(lat)) * np.sin(np.radians(lon))
    return data.astype(np.float32), wcs


def test_hemisphere_onto_an_all_sky_grid() -> None:
    """A SIN input holds a hemisphere: near its limb no coarse grid is accurate, and those
    tiles take the exact transform for every pixel."""
    data, wcs_in = _smooth("SIN", 181, 0.63)
    wcs_out, shape = _all_sky(1.0)
    ours, _ = regrid(data, wcs_in, wcs_out, shape)
    assert_matches(ours, _reference(data, wcs_in, wcs_out, shape))


def test_wide_tan_onto_an_all_sky_grid() -> None:
    """Output nodes more than 90 degrees from a TAN input's centre do not project: the cells
    they touch take the exact transform, the others are interpolated."""
    data, wcs_in = _smooth("TAN", 400, 0.1)
    wcs_out, shape = _all_sky(0.5)
    ours, _ = regrid(data, wcs_in, wcs_out, shape)
    assert_matches(ours, _reference(data, wcs_in, wcs_out, shape))


# -- the coordinate maps ------------------------------------------------------------------------


def _distorted() -> WCS:
    wcs = astrodata.tan_wcs((210.0, 54.0), (1024, 1024), 0.5, 10.0)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    a, b = np.zeros((4, 4)), np.zeros((4, 4))
    a[2, 0], a[0, 2], b[1, 1], b[0, 3] = 1e-4, -6e-5, 8e-5, 2e-8
    wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs


def test_maps_are_refined_to_a_hundredth_of_a_pixel() -> None:
    wcs_in = _distorted()
    wcs_out = astrodata.tan_wcs((210.0, 54.0), (1024, 1024), 0.5, 0.0)
    mapping = rp._Mapping(wcs_in, wcs_out)
    y0, y1, x0, x1 = 256, 512, 0, 1024
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    exact_x, exact_y = mapping(xs, ys)
    # The coarsest grid alone would miss by more than the tolerance...
    step = rp._STEPS[0]
    gy, gx = (
        a.astype(float)
        for a in np.meshgrid(
            np.arange(y0, y1 + step, step), np.arange(x0, x1 + step, step), indexing="ij"
        )
    )
    nx_, _ = mapping(gx, gy)
    coarse = rp._bilinear(nx_.astype(np.float32), np.arange(x1 - x0), np.arange(y1 - y0), step)
    assert np.abs(coarse - exact_x).max() > 2 * rp._TOLERANCE
    # ... the refined maps do not.
    maps = rp._tile_maps(mapping, (1024, 1024), y0, y1, x0, x1)
    assert maps is not None
    mx, my, bx0, by0, _, _ = maps
    inside = (exact_x > 0) & (exact_x < 1023) & (exact_y > 0) & (exact_y < 1023)
    error = np.hypot(mx + bx0 - exact_x, my + by0 - exact_y)[inside]
    assert error.max() <= rp._TOLERANCE + 1e-3


def test_strong_distortion_still_matches_reproject() -> None:
    wcs_in = _distorted()
    sky = astrodata.make_sky((210.0, 54.0), 0.25, seed=7, fwhm_arcsec=2.0)
    data = sky.render(wcs_in, (1024, 1024))
    wcs_out = astrodata.tan_wcs((210.0, 54.0), (900, 900), 0.6, -15.0)
    ours, _ = regrid(data, wcs_in, wcs_out, (900, 900))
    assert_matches(ours, _reference(data, wcs_in, wcs_out, (900, 900)))


# -- grids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", ["TAN", "SIN", "ARC", "ZEA", "STG", "CAR"])
@pytest.mark.parametrize("rotation", [0.0, 30.0, -120.0])
def test_grid_wcs_places_pixels(projection: str, rotation: float) -> None:
    grid = Grid(
        ra=359.9, dec=-41.0, width=801, height=600, scale=2.0, rotation=rotation,
        projection=projection,  # type: ignore[arg-type]
    )  # fmt: skip
    wcs, shape = grid_wcs(grid)
    assert shape == (600, 801)
    assert wcs.wcs.radesys == "ICRS"
    cx, cy = (801 - 1) / 2, (600 - 1) / 2
    centre, up, right = (
        SkyCoord(*wcs.all_pix2world(x, y, 0), unit="deg", frame="icrs")
        for x, y in ((cx, cy), (cx, cy + 100), (cx + 100, cy))
    )
    assert centre.separation(SkyCoord(359.9, -41.0, unit="deg")).arcsec < 1e-6
    assert up.separation(centre).arcsec == pytest.approx(200.0, rel=1e-4)
    assert right.separation(centre).arcsec == pytest.approx(200.0, rel=1e-4)
    # Up is ``rotation`` east of north; right is 90 degrees further west (east stays left).
    assert _angle(centre.position_angle(up).deg - rotation) < 0.01
    assert _angle(centre.position_angle(right).deg - (rotation - 90)) < 0.01


def _angle(degrees: float) -> float:
    return abs((degrees + 180) % 360 - 180)


def _tiles() -> list[tuple[WCS, tuple[int, int]]]:
    out = []
    for k, (dx, dy, rot) in enumerate([(0, 0, 1.0), (0.02, 0.0, -1.2), (0.0, 0.02, 0.4)]):
        centre = astrodata.from_tangent((150.1, 2.2), np.array(dx), np.array(dy))
        shape = (400 + 10 * k, 420)
        out.append(
            (
                astrodata.tan_wcs((float(centre[0]), float(centre[1])), shape, 0.2 + k * 0.05, rot),
                shape,
            )
        )
    return out


def test_covering_grid_covers_every_input_like_find_optimal() -> None:
    inputs = _tiles()
    wcs, shape = covering_grid(inputs)
    assert wcs.wcs.ctype[0] == "RA---TAN" and wcs.wcs.radesys == "ICRS"
    assert np.allclose(wcs.wcs.get_pc(), np.eye(2)) and wcs.wcs.cdelt[0] < 0  # north up
    assert -wcs.wcs.cdelt[0] * 3600 == pytest.approx(0.2)  # the finest input
    assert tuple(wcs.wcs.crpix) == ((shape[1] + 1) / 2, (shape[0] + 1) / 2)
    ref_wcs, ref_shape = find_optimal_celestial_wcs(
        [(s, w) for w, s in inputs], frame="icrs", negative_lon_cdelt=True
    )
    for wcs_in, shape_in in inputs:
        x, y = wcs.all_world2pix(*wcs_in.all_pix2world(*edge_points(shape_in), 0), 0)
        assert (x >= -0.5).all() and (x <= shape[1] - 0.5).all()
        assert (y >= -0.5).all() and (y <= shape[0] - 0.5).all()
        # reproject's grid goes through the corners only: curved edges stick out a little.
        x, y = ref_wcs.all_world2pix(*wcs_in.all_pix2world(*edge_points(shape_in), 0), 0)
        assert (x >= -0.51).all() and (x <= ref_shape[1] - 0.49).all()
        assert (y >= -0.51).all() and (y <= ref_shape[0] - 0.49).all()
    # The same coverage: as large as reproject's within a couple of pixels a side.
    assert abs(shape[0] - ref_shape[0]) <= 3 and abs(shape[1] - ref_shape[1]) <= 3


def test_covering_grid_at_a_given_scale() -> None:
    inputs = _tiles()
    wcs, shape = covering_grid(inputs, 1.0)
    _, fine_shape = covering_grid(inputs)
    assert -wcs.wcs.cdelt[0] * 3600 == pytest.approx(1.0)
    assert shape[1] == pytest.approx(fine_shape[1] / 5, abs=2)


def test_covering_grid_refuses_half_the_sky() -> None:
    a = astrodata.tan_wcs((0.0, 0.0), (100, 100), 1.0)
    b = astrodata.tan_wcs((120.0, 0.0), (100, 100), 1.0)
    c = astrodata.tan_wcs((240.0, 0.0), (100, 100), 1.0)
    with pytest.raises(ValueError, match="sky"):
        covering_grid([(a, (100, 100)), (b, (100, 100)), (c, (100, 100))])


def test_overlap_box_holds_every_pixel_the_input_reaches() -> None:
    grid, shape = covering_grid(_tiles())
    for wcs_in, shape_in in _tiles():
        box = overlap_box(wcs_in, shape_in, grid, shape)
        assert box is not None
        reached = np.isfinite(regrid(np.ones(shape_in, np.float32), wcs_in, grid, shape)[0])
        rows, cols = np.nonzero(reached)
        assert box.x0 <= cols.min() and cols.max() < box.x1
        assert box.y0 <= rows.min() and rows.max() < box.y1
        assert box.x1 - box.x0 <= cols.max() - cols.min() + 1 + 6  # a few pixels to spare


def test_overlap_box_of_a_grid_inside_a_large_input_and_of_a_distant_one() -> None:
    wcs_in = astrodata.tan_wcs((40.0, 10.0), (4000, 4000), 1.0)
    inside = astrodata.tan_wcs((40.01, 10.01), (50, 60), 0.5, 45.0)
    assert overlap_box(wcs_in, (4000, 4000), inside, (50, 60)) == rp.Box(0, 0, 60, 50)
    far = astrodata.tan_wcs((60.0, 10.0), (50, 60), 0.5)
    assert overlap_box(wcs_in, (4000, 4000), far, (50, 60)) is None


def test_small_input_inside_one_cell_of_a_coarse_grid() -> None:
    data, wcs_in = _field((80.0, -5.0), (20, 20), 0.2, seed=5)
    grid, shape = grid_wcs(Grid(ra=80.0, dec=-5.0, width=300, height=300, scale=0.2, rotation=3))
    box = overlap_box(wcs_in, (20, 20), grid, shape)
    assert box is not None and box.shape[0] <= 40 and box.shape[1] <= 40
    ours, _ = regrid(data, wcs_in, grid, shape)
    assert_matches(ours, _reference(data, wcs_in, grid, shape))


def test_regrid_takes_2d_images_only() -> None:
    wcs = astrodata.tan_wcs((1.0, 1.0), (10, 10), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        regrid(np.zeros((2, 10, 10), np.float32), wcs, wcs, (10, 10))


def test_frames_that_cannot_be_related() -> None:
    wcs = astrodata.tan_wcs((1.0, 1.0), (10, 10), 1.0)
    planet = WCS(naxis=2)
    planet.wcs.ctype = ["PLLN-TAN", "PLLT-TAN"]
    planet.wcs.cdelt = [1e-3, 1e-3]
    planet.wcs.set()
    with pytest.raises(ValueError, match="frame"):
        regrid(np.zeros((10, 10), np.float32), planet, wcs, (10, 10))


def test_progress_reaches_one() -> None:
    data, wcs = _field((5.0, 5.0), (300, 300), 1.0)
    seen: list[float] = []
    regrid(data, wcs, wcs, (600, 2100), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 1
    assert math.isclose(seen[0], 1 / len(seen))
