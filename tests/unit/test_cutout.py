"""Tests of the ``cutout`` operation against astropy.

Expected pixels come from ``astropy.nddata.Cutout2D`` (or plain slicing of what astropy reads)
over a box the test derives itself: the bounds of the pixels whose centres a brute-force test
over every pixel puts inside the stencil (``SkyCoord.separation`` for circles, a winding-number
sum for polygons, ICRS coordinates compared with the bounds for ranges). Sky positions of the
output's pixels come from astropy reading the written file back.
"""

from __future__ import annotations

import gzip
import math
import tracemalloc
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, DistortionLookupTable, FITSFixedWarning

from contracts.astro import AnyStencil, Circle, Cutout, Polygon, Range, parse_stencil
from contracts.settings import LimitsSettings
from tests.astrodata import (
    acs_flt,
    compressed,
    cube_field,
    m1_dss,
    m1_ukidss,
    m13_plain,
    m13_variants,
    mef_field,
    pole_field,
    sip_file,
    tan_wcs,
    wrap_field,
)
from worker.errors import UsageError
from worker.ops.api import InputFile, LocalContext
from worker.ops.cutout import cutout

Box = tuple[int, int, int, int]  # xmin, xmax, ymin, ymax: 0-based, inclusive


def _item(path: Path, name: str = "src") -> InputFile:
    return InputFile(path=path, media_type="application/fits", name=name)


def _cut(ctx: LocalContext, path: Path, *stencils: AnyStencil | str, **options: object) -> Path:
    """Run a one-input, one-stencil cutout and return the written file."""
    parsed = [parse_stencil(s) if isinstance(s, str) else s for s in stencils]
    op = Cutout(stencils=parsed, **options)  # type: ignore[arg-type]
    (out,) = cutout(op, [_item(path)], ctx)
    return out.path


def _wcs(header: fits.Header, hdul: fits.HDUList | None = None) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, hdul)


def _source(path: Path, hdu: int) -> tuple[np.ndarray, WCS]:
    """The HDU's data as astropy reads it (scaled) and its WCS."""
    with fits.open(path) as hdul:
        return np.array(hdul[hdu].data), _wcs(hdul[hdu].header, hdul)


def _pixels(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return xs.ravel(), ys.ravel()


def _in_circle(circle: Circle) -> Callable[[SkyCoord], np.ndarray]:
    centre = SkyCoord(circle.ra, circle.dec, unit="deg", frame="icrs")
    return lambda sky: np.asarray(sky.separation(centre).deg <= circle.radius)


def _in_range(box: Range) -> Callable[[SkyCoord], np.ndarray]:
    ra1, ra2, dec1, dec2 = box.bounds()

    def inside(sky: SkyCoord) -> np.ndarray:
        ra, dec = sky.icrs.ra.deg, sky.icrs.dec.deg
        in_ra = (ra >= ra1) | (ra <= ra2) if ra1 > ra2 else (ra >= ra1) & (ra <= ra2)
        return np.asarray(in_ra & (dec >= dec1) & (dec <= dec2))

    return inside


def _in_polygon(polygon: Polygon) -> Callable[[SkyCoord], np.ndarray]:
    """Winding number: the angles the edges subtend at the point, summed (2 pi inside)."""
    vertices = SkyCoord(*np.array(polygon.vertices).T, unit="deg").cartesian.xyz.value.T

    def inside(sky: SkyCoord) -> np.ndarray:
        p = sky.icrs.cartesian.xyz.value.T
        total = np.zeros(len(p))
        for a, b in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
            total += np.arctan2(p @ np.cross(a, b), a @ b - (p @ a) * (p @ b))
        return np.asarray(np.abs(total) > math.pi)

    return inside


def _membership(wcs: WCS, shape: tuple[int, ...], stencil: AnyStencil) -> np.ndarray:
    """Brute force: which pixel centres of the image lie in ``stencil`` (bool, numpy order)."""
    test = (
        _in_circle(stencil)
        if isinstance(stencil, Circle)
        else _in_polygon(stencil)
        if isinstance(stencil, Polygon)
        else _in_range(stencil)
    )
    sky = wcs.celestial.pixel_to_world(*_pixels(shape[-2:]))
    return test(sky).reshape(shape[-2:])


def _bounds(members: np.ndarray) -> Box:
    ys, xs = np.nonzero(members)
    return int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())


def _header_box(path: Path) -> Box:
    h = fits.getheader(path, 0)
    return h["XMIN"] - 1, h["XMAX"] - 1, h["YMIN"] - 1, h["YMAX"] - 1


def _cutout2d(data: np.ndarray, wcs: WCS, box: Box) -> Cutout2D:
    """Cutout2D of exactly ``box`` (checked on its bbox_original)."""
    xmin, xmax, ymin, ymax = box
    position = ((xmin + xmax) / 2, (ymin + ymax) / 2)
    cut = Cutout2D(data, position, (ymax - ymin + 1, xmax - xmin + 1), wcs=wcs, mode="trim")
    assert cut.bbox_original == ((ymin, ymax), (xmin, xmax))
    return cut


def _same_sky(out_wcs: WCS, src_wcs: WCS, shape: tuple[int, int], box: Box) -> None:
    """The corners and centre of the cutout sit where their source pixels do (1e-10 deg)."""
    h, w = shape
    xs = np.array([0.0, w - 1, 0, w - 1, (w - 1) / 2])
    ys = np.array([0.0, 0, h - 1, h - 1, (h - 1) / 2])
    got = np.array(out_wcs.celestial.all_pix2world(xs, ys, 0))
    want = np.array(src_wcs.celestial.all_pix2world(xs + box[0], ys + box[2], 0))
    assert np.abs(got - want).max() < 1e-10


def _field(tmp_path: Path, shape: tuple[int, int] = (160, 200), **cards: object) -> Path:
    """A float32 TAN field (turned 25 degrees) with seeded noise, no two pixels alike."""
    wcs = tan_wcs((150.1, 2.2), shape, 0.6, 25.0)
    header = wcs.to_header()
    header.update(cards)
    data = np.random.default_rng(3).normal(100, 10, shape).astype(np.float32)
    path = tmp_path / "field.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def _circle_at(wcs: WCS, x: float, y: float, pixels: float) -> Circle:
    """A circle centred on pixel (x, y), ``pixels`` pixel scales in radius."""
    centre = wcs.celestial.pixel_to_world(x, y).icrs
    scale = float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))))
    return Circle(ra=float(centre.ra.deg), dec=float(centre.dec.deg), radius=pixels * scale)


# -- against Cutout2D and brute force, on real and synthetic files ---------------------------

REAL = {
    "synthetic TAN": (None, 0),
    "ACS SCI (skewed CD)": (acs_flt, 1),
    "TAN-SIP, FK5, uint16": (sip_file, 0),
    "ZPN, int32 with BSCALE": (m1_ukidss, 1),
    "DSS plate solution": (m1_dss, 0),
}


@pytest.mark.parametrize("label", list(REAL))
def test_circle_equals_cutout2d_and_brute_force(
    label: str, tmp_path: Path, ctx: LocalContext
) -> None:
    maker, hdu = REAL[label]
    path = _field(tmp_path) if maker is None else maker()
    data, wcs = _source(path, hdu)
    circle = _circle_at(wcs, 0.4 * data.shape[1], 0.55 * data.shape[0], 9.3)
    members = _membership(wcs, data.shape, circle)
    box = _bounds(members)

    out = _cut(ctx, path, circle, mask=True)
    assert _header_box(out) == box
    reference = _cutout2d(data, wcs, box)
    with fits.open(out) as hdul:
        hdul.verify("exception")
        got = hdul[1].data
        out_wcs = _wcs(hdul[1].header)
    # Inside the circle the pixels are Cutout2D's; outside they are NaN (masked).
    inside = members[box[2] : box[3] + 1, box[0] : box[1] + 1]
    if got.dtype.kind == "f":
        assert np.array_equal(np.isfinite(got), inside & np.isfinite(reference.data))
    assert np.array_equal(got[inside], reference.data[inside])
    assert np.allclose(out_wcs.wcs.crpix, reference.wcs.wcs.crpix, rtol=0, atol=1e-12)
    _same_sky(out_wcs, wcs, got.shape, box)
    _same_sky(out_wcs, reference.wcs, got.shape, (0, 0, 0, 0))


@pytest.mark.parametrize("label", list(REAL))
def test_unmasked_cutout_is_cutout2d(label: str, tmp_path: Path, ctx: LocalContext) -> None:
    maker, hdu = REAL[label]
    path = _field(tmp_path) if maker is None else maker()
    data, wcs = _source(path, hdu)
    circle = _circle_at(wcs, 0.7 * data.shape[1], 0.3 * data.shape[0], 6.1)
    box = _bounds(_membership(wcs, data.shape, circle))
    out = _cut(ctx, path, circle)
    got = fits.getdata(out, 1)
    assert np.array_equal(got, _cutout2d(data, wcs, box).data, equal_nan=True)
    assert got.dtype == data.dtype


def test_sip_is_kept(ctx: LocalContext) -> None:
    _, wcs = _source(sip_file(), 0)
    circle = _circle_at(wcs, 20, 10, 25)
    out = _cut(ctx, sip_file(), circle)
    with fits.open(out) as hdul:
        header = hdul[1].header
        out_wcs = _wcs(header)
    for key in ("A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER", "A_0_2", "BP_2_0"):
        assert header[key] == fits.getheader(sip_file())[key]
    assert header["CTYPE1"] == "RA---TAN-SIP"
    assert out_wcs.sip is not None
    box = _header_box(out)
    assert box[0] == 0 and box[2] == 0  # clipped at the image's first column and row
    # Every pixel, not just corners: the whole grid maps to the same sky.
    xs, ys = _pixels(fits.getdata(out, 1).shape)
    got = np.array(out_wcs.all_pix2world(xs, ys, 0))
    want = np.array(wcs.all_pix2world(xs + box[0], ys + box[2], 0))
    assert np.abs(got - want).max() < 1e-10


def test_lookup_table_distortions_travel_with_the_cutout(tmp_path: Path, ctx: LocalContext) -> None:
    """HST style: CPDIS and D2IM tables in WCSDVARR and D2IMARR extensions."""
    rng = np.random.default_rng(5)
    wcs = tan_wcs((10.0, 20.0), (80, 100), 0.36)

    def table(shape: tuple[int, int], step: float) -> DistortionLookupTable:
        values = rng.normal(0, 0.3, shape).astype(np.float32)
        return DistortionLookupTable(values, (1.0, 1.0), (1.0, 1.0), (step, step))

    wcs.cpdis1, wcs.cpdis2, wcs.det2im1 = (
        table((9, 11), 10.0),
        table((9, 11), 10.0),
        table((1, 101), 1.0),
    )
    hdul = wcs.to_fits()
    hdul[0].data = rng.normal(0, 1, (80, 100)).astype(np.float32)
    hdul.append(fits.ImageHDU(np.abs(hdul[0].data), name="ERR"))  # no WCS of its own
    path = tmp_path / "distorted.fits"
    hdul.writeto(path)
    with fits.open(path) as source:
        src_wcs = _wcs(source[0].header, source)
    circle = _circle_at(src_wcs, 60, 30, 9)
    out = _cut(ctx, path, circle, hdus="all")
    box = _header_box(out)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul][1:] == ["", "ERR", "WCSDVARR", "D2IMARR", "WCSDVARR"]
        for hdu in hdul[1:3]:
            out_wcs = _wcs(hdu.header, hdul)
            assert out_wcs.cpdis1 is not None and out_wcs.det2im1 is not None
            xs, ys = _pixels(hdu.data.shape)
            got = np.array(out_wcs.all_pix2world(xs, ys, 0))
            want = np.array(src_wcs.all_pix2world(xs + box[0], ys + box[2], 0))
            assert np.abs(got - want).max() < 1e-10
    linear = np.array(src_wcs.wcs_pix2world(xs + box[0], ys + box[2], 0))
    assert np.abs(linear - want).max() > 1e-6  # the tables matter


# -- membership across RA 0/360 and around the pole -------------------------------------------

WRAP_STENCILS = [
    "CIRCLE 0.0 10.0 0.02",
    "CIRCLE 359.99 10.01 0.004",
    "POLYGON 359.98 9.97 0.04 9.98 0.03 10.03 359.99 10.02",
    "POLYGON 359.99 10.02 0.03 10.03 0.04 9.98 359.98 9.97",  # the same, other winding
    "POLYGON 359.975 9.975 0.05 9.99 359.99 10.0 0.0 10.04",  # concave
]
POLE_STENCILS = [
    "CIRCLE 200.0 89.98 0.04",  # holds the pole
    "CIRCLE 45.0 89.9 0.03",
    "POLYGON 0 89.93 90 89.93 180 89.93 270 89.93",  # around the pole
    "POLYGON 300 89.92 10 89.95 100 89.97",
]


@pytest.mark.parametrize("text", WRAP_STENCILS + POLE_STENCILS)
def test_masked_pixels_are_the_brute_force_members(
    text: str, tmp_path: Path, ctx: LocalContext
) -> None:
    maker = wrap_field if text in WRAP_STENCILS else pole_field
    path, _ = maker(tmp_path, size=256)
    data, wcs = _source(path, 0)
    stencil = parse_stencil(text)
    members = _membership(wcs, data.shape, stencil)
    assert members.any() and not members.all()

    out = _cut(ctx, path, stencil, mask=True)
    box = _header_box(out)
    assert box == _bounds(members)
    got = fits.getdata(out, 1)
    inside = members[box[2] : box[3] + 1, box[0] : box[1] + 1]
    assert np.array_equal(np.isfinite(got), inside)
    assert np.array_equal(got[inside], data[box[2] : box[3] + 1, box[0] : box[1] + 1][inside])


@pytest.mark.parametrize(
    ("maker", "text"),
    [
        (wrap_field, "RANGE 359.99 0.03 9.98 10.03"),  # wraps through RA 0
        (wrap_field, "RANGE 350 360 9.99 10.01"),  # RA 360 is RA 0
        (wrap_field, "RANGE 0 0.01 -Inf +Inf"),
        (pole_field, "RANGE 10 80 89.93 +Inf"),  # dec2 open, near the pole
        (pole_field, "RANGE 330 30 89.95 +Inf"),
        (pole_field, "RANGE -Inf +Inf 89.97 +Inf"),  # a cap on the pole
        (pole_field, "RANGE 100 101 89.9 89.96"),
    ],
)
def test_range_box_is_the_brute_force_bounds(
    maker: Callable[..., tuple[Path, object]], text: str, tmp_path: Path, ctx: LocalContext
) -> None:
    path, _ = maker(tmp_path, size=256)
    data, wcs = _source(path, 0)
    stencil = parse_stencil(text)
    members = _membership(wcs, data.shape, stencil)
    box = _bounds(members)
    out = _cut(ctx, path, stencil)
    assert _header_box(out) == box
    assert np.array_equal(fits.getdata(out, 1), _cutout2d(data, wcs, box).data)


def test_galactic_image_is_cut_in_icrs(tmp_path: Path, ctx: LocalContext) -> None:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["GLON-TAN", "GLAT-TAN"]
    wcs.wcs.crval = [120.0, 30.0]
    wcs.wcs.crpix = [60.5, 50.5]
    wcs.wcs.cdelt = [-2e-4, 2e-4]
    data = np.arange(120 * 100, dtype=np.float32).reshape(100, 120)
    path = tmp_path / "galactic.fits"
    fits.PrimaryHDU(data, wcs.to_header()).writeto(path)
    centre = wcs.pixel_to_world(40, 60).icrs
    circle = Circle(ra=float(centre.ra.deg), dec=float(centre.dec.deg), radius=0.003)
    members = _membership(wcs, data.shape, circle)
    out = _cut(ctx, path, circle, mask=True)
    box = _header_box(out)
    assert box == _bounds(members)
    assert np.array_equal(
        np.isfinite(fits.getdata(out, 1)), members[box[2] : box[3] + 1, box[0] : box[1] + 1]
    )


# -- edges, errors, several inputs ------------------------------------------------------------


def test_clipped_at_the_image_edge(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    data, wcs = _source(path, 0)
    circle = _circle_at(wcs, data.shape[1] - 1, 0, 12)  # on the last column's first pixel
    members = _membership(wcs, data.shape, circle)
    out = _cut(ctx, path, circle)
    box = _header_box(out)
    assert box == _bounds(members)
    assert box[1] == data.shape[1] - 1 and box[2] == 0
    assert np.array_equal(fits.getdata(out, 1), _cutout2d(data, wcs, box).data)


def test_whole_image_inside_the_stencil(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    data, _ = _source(path, 0)
    out = _cut(ctx, path, "CIRCLE 150.1 2.2 1.0")
    assert _header_box(out) == (0, data.shape[1] - 1, 0, data.shape[0] - 1)
    assert np.array_equal(fits.getdata(out, 1), data)


def test_no_overlap_names_the_stencil(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    op = Cutout(
        stencils=[parse_stencil("CIRCLE 150.1 2.2 0.01"), Circle(ra=10, dec=20, radius=0.01)]
    )
    with pytest.raises(UsageError) as e:
        cutout(op, [_item(path, "x")], ctx)
    assert e.value.message == "CIRCLE 10.0 20.0 0.01 does not overlap input 'x'"


def test_a_circle_between_pixel_centres_holds_no_pixel(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    _, wcs = _source(path, 0)
    circle = _circle_at(wcs, 50.5, 60.5, 0.3)  # the centres around it are 0.71 pixels away
    with pytest.raises(UsageError, match="does not overlap"):
        _cut(ctx, path, circle)


def test_several_inputs_and_stencils(tmp_path: Path, ctx: LocalContext) -> None:
    first = _field(tmp_path)
    second = tmp_path / "copy.fits"
    second.write_bytes(first.read_bytes())
    stencils = [
        parse_stencil("CIRCLE 150.1 2.2 0.002"),
        parse_stencil("RANGE 150.09 150.11 2.19 2.21"),
        parse_stencil("POLYGON 150.09 2.19 150.11 2.19 150.1 2.21"),
    ]
    op = Cutout(stencils=stencils)
    outs = cutout(op, [_item(first, "a"), _item(second, "b")], ctx)
    assert [o.path.name for o in outs] == [f"{n}.{k}.fits" for n in "ab" for k in (1, 2, 3)]
    assert [o.name for o in outs] == [f"{n}.{k}" for n in "ab" for k in (1, 2, 3)]
    assert all(o.media_type == "application/fits" for o in outs)
    for out, stencil in zip(outs, stencils * 2, strict=True):
        header = fits.getheader(out.path, 0)
        assert header["STENCIL"] == stencil.soda()
        assert header["SRCNAME"] == out.name.split(".")[0]
    assert [round(f, 6) for f, _ in ctx.events] == [round(k / 6, 6) for k in range(1, 7)]
    single = cutout(Cutout(stencils=stencils[:1]), [_item(first, "a")], ctx)
    assert single[0].path.name == "a.cutout.fits" and single[0].name == "a.cutout"


def test_provenance(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    # A dataset: its id names the source, its file-safe stem the output.
    item = InputFile(path=path, media_type="application/fits", name="hst_x", source="hst/x")
    polygon = Polygon(vertices=[(150.1 + 0.001 * k, 2.2 + 0.0003 * (k % 3)) for k in range(12)])
    (out,) = cutout(Cutout(stencils=[polygon]), [item], ctx)
    with fits.open(out.path) as hdul:
        hdul.verify("exception")
        primary = hdul[0].header
        assert len(hdul) == 2 and primary["NAXIS"] == 0 and primary["NEXTEND"] == 1
    assert out.path.name == "hst_x.cutout.fits" and out.name == "hst_x.cutout"
    assert primary["SRCNAME"] == "hst/x"
    assert primary["SRCHDU"] == 0
    assert primary["STENCIL"] == polygon.soda() and len(polygon.soda()) > 68  # CONTINUE cards
    assert primary["ORIGIN"] == "pixfleet" and primary["CREATOR"].startswith("pixfleet ")
    assert abs((datetime.now() - datetime.fromisoformat(primary["DATE"])).days) <= 1
    assert "1-based" in primary.comments["XMIN"]
    assert primary["MASKED"] is False


def test_over_the_output_limit(tmp_path: Path) -> None:
    ctx = LocalContext(workdir=tmp_path, limits=LimitsSettings(max_output_pixels=100))
    path = _field(tmp_path)
    with pytest.raises(UsageError, match="over the limit"):
        _cut(ctx, path, "CIRCLE 150.1 2.2 0.01")


def test_polygon_wider_than_a_hemisphere_is_refused(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    with pytest.raises(UsageError, match="wider than a hemisphere"):
        _cut(ctx, path, "POLYGON 0 0 120 0 240 0")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a FITS file at all" * 200,
        b"SIMPLE  =                    T" + b" " * 50 + b"BITPIX  = banana",
    ],
)
def test_malformed_fits_is_a_usage_error(content: bytes, tmp_path: Path, ctx: LocalContext) -> None:
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="'src'"):
        _cut(ctx, path, "CIRCLE 150.1 2.2 0.01")


def test_truncated_fits_is_a_usage_error(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    path.write_bytes(path.read_bytes()[: 2880 * 5])
    with pytest.raises(UsageError, match="'src'"):
        _cut(ctx, path, "CIRCLE 150.1 2.2 0.01")


def test_image_without_wcs_is_a_usage_error(tmp_path: Path, ctx: LocalContext) -> None:
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(path)
    with pytest.raises(UsageError, match="no celestial WCS"):
        _cut(ctx, path, "CIRCLE 150.1 2.2 0.01")


# -- HDUs, compression, cubes, integer data ---------------------------------------------------


def test_all_hdus_of_an_acs_frame(ctx: LocalContext) -> None:
    with fits.open(acs_flt()) as hdul:
        planes = {name: np.array(hdul[name].data) for name in ("SCI", "ERR", "DQ")}
        wcs = _wcs(hdul["SCI"].header, hdul)
    ys, xs = np.nonzero(planes["DQ"][200:-200, 200:-200])  # flagged pixels
    circle = _circle_at(wcs, xs[0] + 200, ys[0] + 200, 20)
    box = _bounds(_membership(wcs, planes["SCI"].shape, circle))
    out = _cut(ctx, acs_flt(), circle, hdus="all")
    assert _header_box(out) == box
    with fits.open(out) as hdul:
        hdul.verify("exception")
        assert [h.name for h in hdul[1:]] == ["SCI", "ERR", "DQ"]
        for hdu in hdul[1:]:
            assert np.array_equal(hdu.data, _cutout2d(planes[hdu.name], wcs, box).data)
            _same_sky(_wcs(hdu.header), wcs, hdu.data.shape, box)
        assert hdul["DQ"].header["BITPIX"] == 16 and hdul["DQ"].data.dtype.kind == "i"
        assert np.count_nonzero(hdul["DQ"].data)
        assert hdul[0].header["SRCEXT"] == "SCI" and hdul[0].header["SRCHDU"] == 1
        assert hdul[0].header["TELESCOP"] == "HST"  # the source primary's cards are kept


def test_planes_without_a_wcs_get_the_science_one(tmp_path: Path, ctx: LocalContext) -> None:
    wcs = tan_wcs((40.0, -30.0), (64, 80), 0.5, 10.0)
    sci = np.random.default_rng(1).normal(0, 1, (64, 80)).astype(np.float32)
    path = tmp_path / "mef.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(sci, wcs.to_header(), name="SCI"),
            fits.ImageHDU(np.abs(sci), name="ERR"),  # no WCS
            fits.ImageHDU(np.zeros((10, 10), np.int16), name="OTHER"),  # another grid: left out
        ]
    ).writeto(path)
    circle = _circle_at(wcs, 30, 20, 8)
    out = _cut(ctx, path, circle, hdus="all")
    box = _header_box(out)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul[1:]] == ["SCI", "ERR"]
        err = hdul["ERR"]
        _same_sky(_wcs(err.header), wcs, err.data.shape, box)
        assert np.array_equal(err.data, np.abs(sci)[box[2] : box[3] + 1, box[0] : box[1] + 1])


def test_only_the_science_plane_by_default(ctx: LocalContext) -> None:
    with fits.open(acs_flt()) as hdul:
        wcs = _wcs(hdul["SCI"].header, hdul)
    out = _cut(ctx, acs_flt(), _circle_at(wcs, 500, 500, 5))
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI"]


@pytest.mark.parametrize("kind", sorted(m13_variants()))
def test_m13_compressed_variants_equal_the_plain_cut(kind: str, ctx: LocalContext) -> None:
    data, wcs = _source(m13_plain(), 0)
    circle = _circle_at(wcs, 140, 170, 25)
    box = _bounds(_membership(wcs, data.shape, circle))
    out = _cut(ctx, m13_variants()[kind], circle)
    with fits.open(out) as hdul:
        assert type(hdul[1]) is fits.ImageHDU  # written plain
        assert np.array_equal(hdul[1].data, _cutout2d(data, wcs, box).data)
        _same_sky(_wcs(hdul[1].header), wcs, hdul[1].data.shape, box)


@pytest.mark.parametrize("kind", ["RICE_1", "GZIP_1", "GZIP_2", "HCOMPRESS_1", "PLIO_1"])
def test_synthetic_compressed_equal_the_decompressed_cut(
    kind: str, tmp_path: Path, ctx: LocalContext
) -> None:
    source = _field(tmp_path, (150, 170))
    path = compressed(source, tmp_path, [kind])[kind]
    data, wcs = _source(path, 1)  # astropy decompresses the whole image
    circle = _circle_at(wcs, 60, 100, 14)
    box = _bounds(_membership(wcs, data.shape, circle))
    out = _cut(ctx, path, circle)
    with fits.open(out) as hdul:
        assert type(hdul[1]) is fits.ImageHDU
        assert hdul[1].data.dtype.str[1:] == data.dtype.str[1:]
        assert np.array_equal(hdul[1].data, _cutout2d(data, wcs, box).data, equal_nan=True)


def test_compressed_unsigned_keeps_bzero(tmp_path: Path, ctx: LocalContext) -> None:
    wcs = tan_wcs((300.0, -20.0), (90, 70), 1.0)
    data = np.random.default_rng(2).integers(0, 65535, (90, 70)).astype(np.uint16)
    path = tmp_path / "unsigned.fits"
    comp = fits.CompImageHDU(data, wcs.to_header(), compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path)
    circle = _circle_at(wcs, 20, 70, 12)
    box = _bounds(_membership(wcs, data.shape, circle))
    out = _cut(ctx, path, circle)
    with fits.open(out) as hdul:
        assert hdul[1].header["BITPIX"] == 16 and hdul[1].header["BZERO"] == 32768
        assert np.array_equal(hdul[1].data, _cutout2d(data, wcs, box).data)


def test_gzipped_file_equals_the_plain_cut(tmp_path: Path, ctx: LocalContext) -> None:
    plain = _field(tmp_path)
    packed = tmp_path / "field.fits.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = fits.getdata(_cut(ctx, plain, "CIRCLE 150.1 2.2 0.005"), 1)
    b = fits.getdata(_cut(ctx, packed, "CIRCLE 150.1 2.2 0.005"), 1)
    assert a.shape[0] > 10 and np.array_equal(a, b)


def test_cube_band_keeps_the_planes_within(tmp_path: Path, ctx: LocalContext) -> None:
    cube, _, _ = cube_field(tmp_path, size=64)
    with fits.open(cube) as hdul:
        data, wcs = np.array(hdul[0].data), _wcs(hdul[0].header)
    circle = _circle_at(wcs, 30, 25, 6)
    box = _bounds(_membership(wcs, data.shape, circle))
    out = _cut(ctx, cube, circle, band=(5.4e-7, 6.1e-7))  # planes 1 (5.5e-7) and 2 (6.0e-7)
    with fits.open(out) as hdul:
        got, out_wcs = hdul[1].data, _wcs(hdul[1].header)
        primary = hdul[0].header
    assert got.shape == (2, box[3] - box[2] + 1, box[1] - box[0] + 1)
    assert np.array_equal(got, data[1:3, box[2] : box[3] + 1, box[0] : box[1] + 1])
    assert (primary["ZMIN"], primary["ZMAX"]) == (2, 3)
    assert (primary["BANDLO"], primary["BANDHI"]) == (5.4e-7, 6.1e-7)
    waves = out_wcs.sub(["spectral"]).all_pix2world([0, 1], 0)[0]
    assert np.allclose(waves, [5.5e-7, 6.0e-7], rtol=1e-12)
    _same_sky(out_wcs, wcs, got.shape[1:], box)


def test_cube_without_band_keeps_every_plane(tmp_path: Path, ctx: LocalContext) -> None:
    cube, _, _ = cube_field(tmp_path, size=64)
    data = fits.getdata(cube)
    out = _cut(ctx, cube, "CIRCLE 83.63 22.01 0.001")
    box = _header_box(out)
    assert np.array_equal(fits.getdata(out, 1), data[:, box[2] : box[3] + 1, box[0] : box[1] + 1])


def test_stokes_axis_is_kept_whole(tmp_path: Path, ctx: LocalContext) -> None:
    _, stokes, _ = cube_field(tmp_path, size=64)
    data = fits.getdata(stokes)
    out = _cut(ctx, stokes, "CIRCLE 83.63 22.01 0.001", band=(5.9e-7, 7e-7))
    box = _header_box(out)
    got = fits.getdata(out, 1)
    assert got.shape[:2] == (4, 3)  # every Stokes parameter, planes 2..4
    assert np.array_equal(got, data[:, 2:5, box[2] : box[3] + 1, box[0] : box[1] + 1])


def test_band_errors(tmp_path: Path, ctx: LocalContext) -> None:
    cube, _, _ = cube_field(tmp_path, size=64)
    with pytest.raises(UsageError, match="holds no plane"):
        _cut(ctx, cube, "CIRCLE 83.63 22.01 0.001", band=(1e-6, 2e-6))
    with pytest.raises(UsageError, match="no spectral axis"):
        _cut(ctx, _field(tmp_path), "CIRCLE 150.1 2.2 0.01", band=(1e-6, 2e-6))


def test_scaled_integers_keep_bscale_bzero_and_blank(tmp_path: Path, ctx: LocalContext) -> None:
    _, path, _ = mef_field(tmp_path, size=128)
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        raw, header = np.array(hdul["SCI"].data), hdul["SCI"].header.copy()
    data, wcs = _source(path, 1)
    circle = _circle_at(wcs, 128 // 3, 60, 10)  # over the BLANK column
    box = _bounds(_membership(wcs, data.shape, circle))
    out = _cut(ctx, path, circle)
    with fits.open(out, do_not_scale_image_data=True) as hdul:
        cut = hdul[1]
        assert cut.header["BITPIX"] == 16
        for key in ("BSCALE", "BZERO", "BLANK"):
            assert cut.header[key] == header[key]
        assert np.array_equal(cut.data, raw[box[2] : box[3] + 1, box[0] : box[1] + 1])
    scaled = fits.getdata(out, 1)
    assert np.isnan(scaled).any()
    assert np.array_equal(scaled, _cutout2d(data, wcs, box).data, equal_nan=True)


def test_masked_integers_get_blank(ctx: LocalContext) -> None:
    data, wcs = _source(m13_plain(), 0)
    circle = _circle_at(wcs, 150, 150, 20)
    members = _membership(wcs, data.shape, circle)
    box = _bounds(members)
    out = _cut(ctx, m13_plain(), circle, mask=True)
    with fits.open(out, do_not_scale_image_data=True) as hdul:
        cut = hdul[1]
        assert "BLANK" not in fits.getheader(m13_plain())
        assert cut.header["BLANK"] == -32768 and cut.data.dtype.kind == "i"
        inside = members[box[2] : box[3] + 1, box[0] : box[1] + 1]
        assert np.array_equal(cut.data != -32768, inside)
        assert np.array_equal(
            cut.data[inside], data[box[2] : box[3] + 1, box[0] : box[1] + 1][inside]
        )


def test_mask_spares_ranges(tmp_path: Path, ctx: LocalContext) -> None:
    path = _field(tmp_path)
    stencils = [
        parse_stencil("RANGE 150.09 150.11 2.19 2.21"),
        parse_stencil("CIRCLE 150.1 2.2 0.005"),
    ]
    ranged, circled = cutout(Cutout(stencils=stencils, mask=True), [_item(path)], ctx)
    assert np.isfinite(fits.getdata(ranged.path, 1)).all()
    assert not np.isfinite(fits.getdata(circled.path, 1)).all()
    assert fits.getheader(ranged.path)["MASKED"] is False
    assert fits.getheader(circled.path)["MASKED"] is True


def test_a_small_cutout_reads_only_its_box(tmp_path: Path, ctx: LocalContext) -> None:
    size = 2048  # 16 MB of float32
    wcs = tan_wcs((10.0, 40.0), (size, size), 0.2)
    path = tmp_path / "big.fits"
    fits.PrimaryHDU(np.ones((size, size), np.float32), wcs.to_header()).writeto(path)
    tracemalloc.start()
    try:
        out = _cut(ctx, path, "CIRCLE 10.0 40.0 0.002")  # about 72 x 72 pixels
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fits.getdata(out, 1).shape == (72, 72)
    assert peak < 4_000_000
