"""Tests of ``tests.astrodata``: the fetched FITS files hold what its table says, and the
synthetic fields have the geometry and values their docstrings promise."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_area, proj_plane_pixel_scales
from scipy.ndimage import map_coordinates

from tests.astrodata import (
    DQ_BAD_COLUMN,
    DQ_COSMIC_RAY,
    REAL_FITS,
    Sources,
    acs_flt,
    big_field,
    compressed,
    cube_field,
    fits_root,
    m1_dss,
    m1_ukidss,
    m13_plain,
    m13_variants,
    make_channels,
    make_tiles,
    mef_field,
    pole_field,
    sip_file,
    wrap_field,
)
from tests.fetch_images import FITS_PINS, ArchiveContentError, Pin, _check_listing, sha256_file


def _wcs(header: fits.Header) -> WCS:
    # astropy fixes the two M1 headers with a FITSFixedWarning; the table test checks that.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _world_grid(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with fits.open(path) as hdul:
        wcs, (ny, nx) = WCS(hdul[0].header), hdul[0].data.shape
    return wcs.pixel_to_world_values(*np.meshgrid(np.arange(nx), np.arange(ny)))


# Real files


@pytest.mark.parametrize(
    ("rel", "digest"),
    sorted(
        (f"{pin.package}/{name}", digest) for pin in FITS_PINS for name, digest in pin.files.items()
    ),
)
def test_every_pinned_fits_file_is_there_with_its_digest(rel: str, digest: str) -> None:
    assert sha256_file(fits_root() / rel) == digest


@pytest.mark.parametrize("rel", sorted(REAL_FITS))
def test_real_files_hold_what_the_table_says(rel: str) -> None:
    info = REAL_FITS[rel]
    with fits.open(fits_root() / rel) as hdul:
        hdu = hdul[info.hdu]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wcs = WCS(hdu.header, hdul)
        assert hdu.data.shape == info.shape
        assert hdu.data.dtype == np.dtype(info.dtype)
    assert any(issubclass(w.category, FITSFixedWarning) for w in caught) == info.wcs_warns
    assert tuple(wcs.wcs.ctype) == info.ctype
    scales = proj_plane_pixel_scales(wcs) * 3600
    np.testing.assert_allclose(scales, info.scale_arcsec, rtol=0.005)
    ny, nx = info.shape
    centre = wcs.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
    np.testing.assert_allclose(centre, info.centre, atol=1e-4)


def test_acs_frame_has_sci_err_dq_planes() -> None:
    with fits.open(acs_flt()) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ"]
        assert hdul[0].data is None
        for name, kind in (("SCI", np.float32), ("ERR", np.float32), ("DQ", np.int16)):
            assert hdul[name].data.shape == (1024, 1024)
            assert hdul[name].data.dtype.name == np.dtype(kind).name
        assert np.count_nonzero(hdul["DQ"].data) == 28979


def test_m13_variants_are_compressed_copies_of_the_plain_file() -> None:
    plain = fits.getdata(m13_plain())
    variants = m13_variants()
    assert sorted(variants) == ["GZIP_1", "HCOMPRESS_1", "PLIO_1", "RICE_1"]
    for kind, path in variants.items():
        with fits.open(path) as hdul:
            assert isinstance(hdul[1], fits.CompImageHDU)
            assert hdul[1].compression_type == kind
            np.testing.assert_array_equal(hdul[1].data, plain)


def test_sip_file_has_a_sip_distortion() -> None:
    with fits.open(sip_file()) as hdul:
        wcs = WCS(hdul[0].header)
    assert wcs.sip is not None
    assert (wcs.sip.a_order, wcs.sip.b_order) == (2, 2)


def test_the_two_m1_images_overlap_at_different_projections_and_scales() -> None:
    with fits.open(m1_dss()) as dss, fits.open(m1_ukidss()) as ukidss:
        dss_wcs, dss_shape = _wcs(dss[0].header), dss[0].data.shape
        uk_wcs = _wcs(ukidss[1].header)
    # Every corner of the UKIDSS stamp lands inside the DSS image: the footprints intersect.
    ra, dec = uk_wcs.calc_footprint().T
    x, y = dss_wcs.world_to_pixel_values(ra, dec)
    assert np.all((x > -0.5) & (x < dss_shape[1] - 0.5) & (y > -0.5) & (y < dss_shape[0] - 0.5))
    assert dss_wcs.wcs.ctype[0] == "RA---TAN" and uk_wcs.wcs.ctype[0] == "RA---ZPN"
    ratio = proj_plane_pixel_scales(dss_wcs)[0] / proj_plane_pixel_scales(uk_wcs)[0]
    assert 8 < ratio < 9


def _pin(members: list[str], complete: tuple[str, ...]) -> Pin:
    return Pin(
        package="p",
        requirement="p==1",
        archive="p.whl",
        sha256="0" * 64,
        pip_options=(),
        member_dir="p/",
        complete=complete,
        members=dict.fromkeys(members, "0" * 64),
    )


def test_a_listing_missing_a_member_or_holding_an_unlisted_one_is_refused() -> None:
    names = ["p/data/m13.fits", "p/data/m13_rice.fits", "p/data/other.fits", "p/data/sub/m13.fits"]
    _check_listing(_pin(["data/m13.fits", "data/m13_rice.fits"], ("p/data/m13",)), names)
    with pytest.raises(ArchiveContentError, match="m13_rice"):
        _check_listing(_pin(["data/m13.fits"], ("p/data/m13",)), names)
    with pytest.raises(ArchiveContentError, match="gone"):
        _check_listing(_pin(["data/gone.fits"], ()), names)


# Synthetic fields


def test_tiles_overlap_and_agree_where_they_overlap(tmp_path: Path) -> None:
    paths, sky = make_tiles(tmp_path, n=4, size=256)
    tiles = [fits.getdata(p).astype(np.float64) for p in paths]
    grids = [WCS(fits.getheader(p)) for p in paths]
    yy, xx = np.mgrid[0:256, 0:256]
    for a, b, share in ((0, 1, 0.2), (0, 2, 0.2), (2, 3, 0.2), (0, 3, 0.04)):
        bx, by = grids[b].world_to_pixel_values(*grids[a].pixel_to_world_values(xx, yy))
        # Away from B's edges, where its cubic spline needs no padding.
        inside = (bx > 3) & (bx < 252) & (by > 3) & (by < 252)
        assert share * 0.6 < inside.mean() < share * 1.4
        seen_by_b = map_coordinates(tiles[b], [by[inside], bx[inside]], order=3)
        np.testing.assert_allclose(seen_by_b, tiles[a][inside], rtol=0.02)
    assert fits.getdata(paths[0]).dtype == np.dtype(">f4")
    assert len(sky.sources) > 20


def test_a_rendered_source_sums_to_its_flux(tmp_path: Path) -> None:
    paths, sky = make_tiles(tmp_path, n=1, size=256)
    image = fits.getdata(paths[0]).astype(np.float64)
    wcs = WCS(fits.getheader(paths[0]))
    x, y = wcs.world_to_pixel_values(sky.sources.ra, sky.sources.dec)
    away = (x > 20) & (x < 235) & (y > 20) & (y < 235)
    i = int(np.argmax(np.where(away, sky.sources.flux, 0)))
    xi, yi = round(float(x[i])), round(float(y[i]))
    box = np.s_[yi - 15 : yi + 16, xi - 15 : xi + 16]  # 7 sigma each way
    # Everything else in the box (background, neighbours) from the exact model.
    others = np.arange(len(sky.sources)) != i
    rest = replace(
        sky,
        sources=Sources(sky.sources.ra[others], sky.sources.dec[others], sky.sources.flux[others]),
    )
    gy, gx = np.mgrid[box]
    area = proj_plane_pixel_area(wcs) * 3600**2
    rest_sum = (rest.at(*wcs.pixel_to_world_values(gx.ravel(), gy.ravel())) * area).sum()
    assert image[box].sum() - rest_sum == pytest.approx(sky.sources.flux[i], rel=1e-3)


def test_channels_share_sources_and_one_can_have_its_own_grid(tmp_path: Path) -> None:
    paths, skies = make_channels(tmp_path, n=3, size=128, regrid=2)
    headers = [fits.getheader(p) for p in paths]
    assert [h["FILTER"] for h in headers] == ["g", "r", "i"]
    assert WCS(headers[0]).wcs.compare(WCS(headers[1]).wcs)
    assert not WCS(headers[0]).wcs.compare(WCS(headers[2]).wcs)
    np.testing.assert_array_equal(skies[0].sources.ra, skies[2].sources.ra)
    assert not np.allclose(skies[0].sources.flux, skies[2].sources.flux)


def test_wrap_field_holds_ra_on_both_sides_of_zero(tmp_path: Path) -> None:
    path, _ = wrap_field(tmp_path, size=128)
    ra, _ = _world_grid(path)
    assert (ra < 1).any() and (ra > 359).any()


def test_pole_field_holds_the_pole(tmp_path: Path) -> None:
    path, _ = pole_field(tmp_path, size=128)
    _, dec = _world_grid(path)
    assert dec.max() > 89.99
    x, y = WCS(fits.getheader(path)).world_to_pixel_values(0.0, 90.0)
    assert 0 <= x < 128 and 0 <= y < 128


def test_cubes_have_wave_and_stokes_axes(tmp_path: Path) -> None:
    cube_path, stokes_path, skies = cube_field(tmp_path, size=32, n_wave=3)
    with fits.open(cube_path) as hdul:
        cube, header = hdul[0].data, hdul[0].header
    assert cube.shape == (3, 32, 32) and cube.dtype == np.dtype(">f4")
    assert (header["CTYPE3"], header["CUNIT3"]) == ("WAVE", "m")
    stokes = fits.getdata(stokes_path)
    assert stokes.shape == (4, 3, 32, 32)
    assert fits.getheader(stokes_path)["CTYPE4"] == "STOKES"
    np.testing.assert_allclose(stokes[1], 0.1 * stokes[0], rtol=1e-6)
    assert len(skies) == 3


def test_mef_files_share_one_wcs_and_flag_what_they_say(tmp_path: Path) -> None:
    float_path, int_path, _ = mef_field(tmp_path, size=64)
    with fits.open(float_path) as f:
        assert [h.name for h in f] == ["PRIMARY", "SCI", "ERR", "DQ"]
        assert f[0].data is None
        assert [f[n].data.dtype.name for n in ("SCI", "ERR", "DQ")] == ["float32"] * 2 + ["int16"]
        assert WCS(f["SCI"].header).wcs.compare(WCS(f["DQ"].header).wcs)
        sci, dq = f["SCI"].data, f["DQ"].data
    assert (dq[:, 64 // 3] & DQ_BAD_COLUMN).all()
    assert (dq[15:18, 15:18] & DQ_COSMIC_RAY).all()
    assert np.count_nonzero(dq) == 64 + 9
    with fits.open(int_path) as i:
        assert [h.name for h in i] == ["PRIMARY", "SCI", "ERR", "DQ"]
        header = i["SCI"].header.copy()  # astropy drops BSCALE and BZERO once it scales
        scaled = i["SCI"].data
    assert (header["BITPIX"], header["BLANK"]) == (16, -32768)
    assert np.isnan(scaled[:, 64 // 3]).all()
    good = ~np.isnan(scaled)
    assert good.sum() == 64 * 63
    np.testing.assert_allclose(scaled[good], sci[good], atol=header["BSCALE"] * 0.51, rtol=0)


def test_compressed_copies_use_each_codec(tmp_path: Path) -> None:
    paths, _ = make_tiles(tmp_path, n=1, size=64)
    original = fits.getdata(paths[0])
    copies = compressed(paths[0], tmp_path)
    assert list(copies) == ["RICE_1", "GZIP_1", "GZIP_2", "HCOMPRESS_1", "PLIO_1"]
    for kind, path in copies.items():
        with fits.open(path) as hdul:
            hdu = hdul[1]
            assert isinstance(hdu, fits.CompImageHDU) and hdu.compression_type == kind
            data = hdu.data
        if kind.startswith("GZIP"):
            np.testing.assert_array_equal(data, original)
        elif kind == "PLIO_1":
            assert data.dtype.kind == "i"
            np.testing.assert_array_equal(data, np.rint(original))
        else:
            # Within half the 0.01 step, give or take float32 rounding.
            np.testing.assert_allclose(data, original, atol=0.00501, rtol=0)


def test_big_field_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "big.fits"
    assert big_field(path, size=64) == path
    written = path.stat().st_mtime_ns
    big_field(path, size=64)
    assert path.stat().st_mtime_ns == written
    big_field(path, size=64, seed=3)  # another sky: written again
    assert fits.getheader(path)["PIXSYNTH"].endswith("seed 3")
