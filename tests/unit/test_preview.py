"""Tests of the display scaling (``worker.ops.stretch``), ``preview`` and ``header``.

Expected values come from astropy.visualization (limits and stretches), OpenCV (colour maps)
and astropy.io.fits / astropy.wcs reading the same files, or from the sky the test drew.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import (
    AsinhStretch,
    AsymmetricPercentileInterval,
    HistEqStretch,
    LinearStretch,
    LogStretch,
    ManualInterval,
    MinMaxInterval,
    SinhStretch,
    SqrtStretch,
    ZScaleInterval,
)
from astropy.wcs import WCS

from contracts.astro import Colormap, Header, Preview, Scaling
from contracts.settings import LimitsSettings
from tests.astrodata import (
    REAL_FITS,
    acs_flt,
    cube_field,
    fits_root,
    m13_plain,
    m13_variants,
    mef_field,
    sip_file,
    tan_wcs,
)
from worker.errors import UsageError
from worker.ops import stretch
from worker.ops.api import InputFile, LocalContext
from worker.ops.fitsinfo import wcs_summary
from worker.ops.header import HeaderDocument, header
from worker.ops.preview import preview, shrink

CENTRE = (150.1, 2.2)


def _field(seed: int = 1, shape: tuple[int, int] = (120, 160), nan: bool = False) -> np.ndarray:
    """Noise on a sky level with a few bright blobs (and a NaN block)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 5.0, shape).astype(np.float32)
    ys, xs = rng.integers(0, shape[0], 20), rng.integers(0, shape[1], 20)
    data[ys, xs] += rng.uniform(100, 5000, 20).astype(np.float32)
    data = cv2.GaussianBlur(data, (0, 0), 1.2)
    if nan:
        data[10:30, 40:70] = np.nan
        data[-1, -1] = np.nan
    return data


def _fits(path: Path, data: np.ndarray, wcs: WCS | None = None) -> InputFile:
    header = wcs.to_header() if wcs is not None else None
    fits.PrimaryHDU(data, header).writeto(path)
    return InputFile(path=path, media_type="application/fits", name=path.stem)


def _decode(out: InputFile) -> np.ndarray:
    pixels = cv2.imread(str(out.path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None
    return pixels


# -- limits ------------------------------------------------------------------------------


ASTROPY_INTERVALS = {
    "minmax": lambda s: MinMaxInterval(),
    "percentile": lambda s: AsymmetricPercentileInterval(s.low, s.high),
    "zscale": lambda s: ZScaleInterval(),
}


@pytest.mark.parametrize("kind", ["minmax", "percentile", "zscale"])
@pytest.mark.parametrize("nan", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_limits_equal_astropy(kind: str, nan: bool, dtype: type) -> None:
    # 1500 x 900 pixels: zscale's stride is over 1, so which values it samples matters.
    data = _field(2, (900, 1500), nan).astype(dtype)
    if nan:
        data[500, :700] = np.inf
    scaling = Scaling(limits=kind, low=2.0, high=97.0)  # type: ignore[arg-type]
    expected = ASTROPY_INTERVALS[kind](scaling).get_limits(data)
    assert stretch.limits(data, scaling) == tuple(float(v) for v in expected)


def test_limits_of_an_image_without_finite_values() -> None:
    data = np.full((4, 5), np.nan, np.float32)
    for kind in ("minmax", "percentile", "zscale"):
        assert stretch.limits(data, Scaling(limits=kind)) == (0.0, 0.0)
    values = stretch.scale(data, Scaling())
    assert np.isnan(values).all()


def test_limits_do_not_change_the_data() -> None:
    data = _field(3, nan=True)
    before = data.copy()
    for kind in ("minmax", "percentile", "zscale"):
        stretch.limits(data, Scaling(limits=kind))
    np.testing.assert_array_equal(data, before)


# -- stretches ---------------------------------------------------------------------------


STRETCHES = [
    ("linear", None, lambda a: LinearStretch()),
    ("sqrt", None, lambda a: SqrtStretch()),
    ("log", None, lambda a: LogStretch()),
    ("log", 10.0, lambda a: LogStretch(a)),
    ("asinh", None, lambda a: AsinhStretch()),
    ("asinh", 0.02, lambda a: AsinhStretch(a)),
    ("sinh", None, lambda a: SinhStretch()),
    ("sinh", 0.8, lambda a: SinhStretch(a)),
]
FLOAT32_ULP_AT_1 = 2.0**-23


@pytest.mark.parametrize(("name", "a", "make"), STRETCHES)
@pytest.mark.parametrize("kind", ["minmax", "percentile", "zscale"])
def test_stretch_equals_astropy(name: str, a: float | None, make: object, kind: str) -> None:
    data = _field(4, nan=True)
    scaling = Scaling(stretch=name, limits=kind, a=a)  # type: ignore[arg-type]
    vmin, vmax = stretch.limits(data, scaling)
    ours = stretch.apply(data, scaling, vmin, vmax)
    expected = make(a)(ManualInterval(vmin, vmax)(data))  # type: ignore[operator]
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(data))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2 * FLOAT32_ULP_AT_1)
    assert np.nanmin(ours) >= 0 and np.nanmax(ours) <= 1


@pytest.mark.parametrize(("name", "a", "make"), STRETCHES)
def test_stretch_in_place_of_float64_data(name: str, a: float | None, make: object) -> None:
    data = _field(5).astype(np.float64)
    scaling = Scaling(stretch=name, limits="percentile", a=a)  # type: ignore[arg-type]
    vmin, vmax = stretch.limits(data, scaling)
    expected = make(a)(ManualInterval(vmin, vmax)(data))  # type: ignore[operator]
    out = np.empty(data.shape, np.float32)
    assert stretch.apply(data, scaling, vmin, vmax, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=0, atol=2 * FLOAT32_ULP_AT_1)
    same = data.astype(np.float32)
    expected = make(a)(ManualInterval(vmin, vmax)(same))  # type: ignore[operator]
    assert stretch.apply(same, scaling, vmin, vmax, out=same) is same
    np.testing.assert_allclose(same, expected, rtol=0, atol=2 * FLOAT32_ULP_AT_1)


@pytest.mark.parametrize("limits", ["zscale", "percentile", "wider"])
@pytest.mark.parametrize("integers", [False, True])
def test_histeq_equals_astropy(limits: str, integers: bool) -> None:
    data = _field(6, nan=True)
    if integers:  # many equal values: ties must rank as np.interp ranks them
        data = np.round(data / 7)
    if limits == "wider":  # the limits reach past the data: astropy rescales its table
        vmin, vmax = float(np.nanmin(data)) - 3, float(np.nanmax(data)) + 5
    else:
        vmin, vmax = stretch.limits(data, Scaling(limits=limits))  # type: ignore[arg-type]
    normalised = ManualInterval(vmin, vmax)(data)
    expected = HistEqStretch(normalised)(normalised)
    ours = stretch.apply(data, Scaling(stretch="histeq"), vmin, vmax)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(data))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2 * FLOAT32_ULP_AT_1)


def test_histeq_in_place_of_a_strided_view() -> None:
    data = _field(8, nan=True)
    wide = np.full((data.shape[0], 2 * data.shape[1]), -1.0, np.float32)
    view = wide[:, ::2]
    view[...] = data
    vmin, vmax = stretch.limits(data, Scaling())
    normalised = ManualInterval(vmin, vmax)(data)
    assert stretch.apply(view, Scaling(stretch="histeq"), vmin, vmax, out=view) is view
    np.testing.assert_allclose(
        wide[:, ::2], HistEqStretch(normalised)(normalised), rtol=0, atol=2 * FLOAT32_ULP_AT_1
    )
    assert (wide[:, 1::2] == -1.0).all()


def test_histeq_spreads_levels_evenly() -> None:
    data = np.random.default_rng(7).exponential(1.0, (200, 300)).astype(np.float32)
    values = stretch.scale(data, Scaling(stretch="histeq", limits="minmax"))
    counts = np.histogram(values, bins=10, range=(0, 1))[0]
    assert counts.min() > 0.9 * data.size / 10


def test_constant_image_is_black() -> None:
    data = np.full((8, 8), 3.0, np.float32)
    for name in ("linear", "asinh", "histeq"):
        values = stretch.scale(data, Scaling(stretch=name, limits="minmax"))
        np.testing.assert_array_equal(values, 0.0)


def test_levels_and_colour_maps() -> None:
    values = np.array([[0.0, 0.5, 1.0, np.nan, 0.25 / 255]], np.float32)
    levels = stretch.levels(values)
    np.testing.assert_array_equal(levels, [[0, 128, 255, 0, 0]])
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert stretch.colormap(ramp, "gray") is ramp
    for name, code in stretch.COLORMAPS.items():
        np.testing.assert_array_equal(
            stretch.colormap(ramp, name),  # type: ignore[arg-type]
            cv2.applyColorMap(ramp, code),
        )
    assert stretch.rgba("#10ff2080") == (16, 255, 32, 128)
    assert stretch.rgba("#10ff20") == (16, 255, 32, 255)


# -- preview -----------------------------------------------------------------------------


def _expected_levels(data: np.ndarray, scaling: Scaling) -> np.ndarray:
    """8-bit levels by astropy's interval and stretch, flipped (north up)."""
    interval = ASTROPY_INTERVALS[scaling.limits](scaling)
    values = {"linear": LinearStretch(), "asinh": AsinhStretch(), "sqrt": SqrtStretch()}[
        scaling.stretch
    ](interval(data))
    return np.round(np.nan_to_num(values[::-1]) * 255).astype(np.uint8)


def _close_levels(ours: np.ndarray, expected: np.ndarray) -> None:
    """Equal but for a level at the odd rounding boundary (float32 vs float64)."""
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.001


def test_preview_brightest_source_is_brightest_pixel_north_up(
    tmp_path: Path, ctx: LocalContext
) -> None:
    shape = (150, 200)
    wcs = tan_wcs(CENTRE, shape, 0.5)
    data = np.random.default_rng(8).normal(10.0, 1.0, shape).astype(np.float32)
    # A bright source 20" north of the centre, a fainter one 20" east: where does each land?
    north = wcs.world_to_pixel_values(CENTRE[0], CENTRE[1] + 20 / 3600)
    east = wcs.world_to_pixel_values(CENTRE[0] + 20 / 3600 / np.cos(np.radians(2.2)), CENTRE[1])
    for (x, y), flux in ((north, 1000.0), (east, 500.0)):
        data[round(float(y)), round(float(x))] += flux
    item = _fits(tmp_path / "field.fits", data, wcs)
    op = Preview(scaling=Scaling(stretch="linear", limits="minmax"))
    out = preview(op, item, ctx)
    assert out.path == ctx.workdir / "field.png" and out.media_type == "image/png"
    pixels = _decode(out)
    assert pixels.shape == shape and pixels.dtype == np.uint8
    row, col = np.unravel_index(np.argmax(pixels), shape)
    assert (row, col) == (shape[0] - 1 - round(float(north[1])), round(float(north[0])))
    centre_row, centre_col = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    assert row < centre_row - 30  # north is up
    masked = pixels.copy()
    masked[row, col] = 0
    row_e, col_e = np.unravel_index(np.argmax(masked), shape)
    assert col_e < centre_col - 30 and abs(row_e - centre_row) <= 1  # east is left
    _close_levels(pixels, _expected_levels(data, op.scaling))
    assert ctx.events[-1][0] <= 1.0


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_preview_nan_is_transparent(tmp_path: Path, ctx: LocalContext, fmt: str) -> None:
    data = _field(9, nan=True)
    item = _fits(tmp_path / "holes.fits", data)
    op = Preview(format=fmt, scaling=Scaling(limits="zscale", stretch="asinh"))  # type: ignore[arg-type]
    pixels = _decode(preview(op, item, ctx))
    assert pixels.shape == (*data.shape, 4)
    nan = np.isnan(data)[::-1]
    np.testing.assert_array_equal(pixels[:, :, 3] == 0, nan)
    assert (pixels[:, :, 3][~nan] == 255).all()
    if fmt == "png":  # lossless: gray levels in every colour channel
        expected = _expected_levels(data, op.scaling)
        _close_levels(pixels[:, :, 0][~nan], expected[~nan])
        np.testing.assert_array_equal(pixels[:, :, 0], pixels[:, :, 2])


def test_preview_without_nan_has_no_alpha(tmp_path: Path, ctx: LocalContext) -> None:
    item = _fits(tmp_path / "full.fits", _field(10))
    assert _decode(preview(Preview(), item, ctx)).shape == (120, 160)


@pytest.mark.parametrize(
    ("fmt", "colour", "expected"),
    [
        ("png", "#ff8000", (0, 128, 255)),
        ("png", "#ff800080", (0, 128, 255, 128)),
        ("jpeg", "transparent", (0,)),  # gray stays gray; black as JPEG has no alpha
        ("jpeg", "#0000ff", (255, 0, 0)),
    ],
)
def test_preview_nan_colour(
    tmp_path: Path, ctx: LocalContext, fmt: str, colour: str, expected: tuple[int, ...]
) -> None:
    data = _field(11, nan=True)
    item = _fits(tmp_path / "holes.fits", data)
    out = preview(Preview(format=fmt, nan_colour=colour), item, ctx)  # type: ignore[arg-type]
    pixels = _decode(out).reshape(*data.shape, -1)
    assert pixels.shape == (*data.shape, len(expected))
    block = pixels[-30 + 2 : -10 - 2, 40 + 2 : 70 - 2]  # inside the NaN block (flipped rows)
    if fmt == "png":
        assert (block == expected).all()
    else:  # JPEG rings at the block's edges: its median is the colour
        assert np.abs(np.median(block, axis=(0, 1)) - expected).max() <= 3
    if fmt == "jpeg":
        assert out.path.suffix == ".jpg" and out.media_type == "image/jpeg"


@pytest.mark.parametrize("name", ["viridis", "magma", "hot", "twilight"])
def test_preview_colour_map(tmp_path: Path, ctx: LocalContext, name: Colormap) -> None:
    data = _field(12)
    item = _fits(tmp_path / "field.fits", data)
    scaling = Scaling(stretch="sqrt", limits="percentile")
    pixels = _decode(preview(Preview(colormap=name, scaling=scaling), item, ctx))
    expected = cv2.applyColorMap(_expected_levels(data, scaling), stretch.COLORMAPS[name])
    assert pixels.shape == expected.shape
    differs = np.any(pixels != expected, axis=2)
    assert differs.mean() < 0.001


def test_preview_size_bounds_the_longer_side(tmp_path: Path, ctx: LocalContext) -> None:
    data = _field(13, (300, 200), nan=True)
    data[:, :100] = np.nan  # the left half: NaN must not bleed into the right half
    item = _fits(tmp_path / "tall.fits", data)
    pixels = _decode(preview(Preview(size=100, scaling=Scaling(limits="minmax")), item, ctx))
    assert pixels.shape == (100, 67, 4)
    alpha = pixels[:, :, 3]
    assert (alpha[:, :33] == 0).all() and (alpha[:, 34:] == 255).all()
    assert _decode(preview(Preview(size=1000), item, ctx)).shape[:2] == (300, 200)


def test_shrink_averages_finite_pixels() -> None:
    data = np.arange(16, dtype=np.float32).reshape(4, 4)
    data[0, 0] = np.nan
    data[2:, 2:] = np.nan
    small = shrink(data, (2, 2))
    np.testing.assert_allclose(small[0, 0], np.mean([1.0, 4.0, 5.0]))
    np.testing.assert_allclose(small[0, 1], np.mean([2.0, 3.0, 6.0, 7.0]))
    assert np.isnan(small[1, 1])


def test_preview_cube_planes_and_hdus(tmp_path: Path, ctx: LocalContext) -> None:
    cube, _stokes, _skies = cube_field(tmp_path, size=64, n_wave=3)
    item = InputFile(path=cube, media_type="application/fits", name="cube")
    with fits.open(cube) as hdul:
        planes = np.asarray(hdul[0].data, np.float32)
    op = Preview(scaling=Scaling(stretch="linear", limits="minmax"))
    for k in range(3):
        pixels = _decode(preview(msgspec.structs.replace(op, plane=k), item, ctx))
        _close_levels(pixels, _expected_levels(planes[k], op.scaling))
    with pytest.raises(UsageError, match="plane 3"):
        preview(msgspec.structs.replace(op, plane=3), item, ctx)
    mef, _int16, _sky = mef_field(tmp_path, size=64)
    item = InputFile(path=mef, media_type="application/fits", name="mef")
    with fits.open(mef) as hdul:
        err = np.asarray(hdul["ERR"].data, np.float32)
    pixels = _decode(preview(msgspec.structs.replace(op, hdu="err"), item, ctx))
    _close_levels(pixels, _expected_levels(err, op.scaling))
    with pytest.raises(UsageError, match="no image HDU 'nope'"):
        preview(msgspec.structs.replace(op, hdu="nope"), item, ctx)


def test_preview_of_compressed_files_equals_the_plain_one(ctx: LocalContext) -> None:
    def render(path: Path) -> np.ndarray:
        item = InputFile(path=path, media_type="application/fits", name=path.stem)
        return _decode(preview(Preview(), item, ctx))

    plain = render(m13_plain())
    assert plain.shape == REAL_FITS["astropy/m13.fits"].shape
    for kind, path in m13_variants().items():
        np.testing.assert_array_equal(render(path), plain, err_msg=kind)


def test_preview_of_a_real_frame(ctx: LocalContext) -> None:
    item = InputFile(path=acs_flt(), media_type="application/fits", name="acs")
    pixels = _decode(preview(Preview(size=512, format="jpeg"), item, ctx))
    assert pixels.shape == (512, 512)
    assert 20 < pixels.mean() < 235  # zscale + asinh shows the sky, not black or white


def test_preview_refuses_bad_inputs(tmp_path: Path, ctx: LocalContext) -> None:
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), np.zeros((8, 8), np.uint8))
    with pytest.raises(UsageError, match="not FITS"):
        preview(Preview(), InputFile(path=png, media_type="application/fits", name="png"), ctx)
    table = tmp_path / "table.fits"
    columns = [fits.Column(name="flux", format="E", array=np.arange(5, dtype=np.float32))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)]).writeto(table)
    with pytest.raises(UsageError, match="holds no image HDU"):
        preview(Preview(), InputFile(path=table, media_type="application/fits", name="t"), ctx)
    text = tmp_path / "notes.fits"
    text.write_bytes(b"SIMPLE  = nonsense" + b" " * 100)
    with pytest.raises(UsageError):
        preview(Preview(), InputFile(path=text, media_type="application/fits", name="n"), ctx)


def test_preview_refuses_an_output_over_the_limit(tmp_path: Path) -> None:
    workdir = tmp_path / "out"
    workdir.mkdir()
    small = LocalContext(workdir=workdir, limits=LimitsSettings(max_output_pixels=10_000))
    item = _fits(tmp_path / "field.fits", _field(14))
    with pytest.raises(UsageError, match="more than 10,000"):
        preview(Preview(), item, small)
    assert _decode(preview(Preview(size=100), item, small)).shape == (75, 100)


# -- header ------------------------------------------------------------------------------


def _header_doc(out: InputFile) -> HeaderDocument:
    assert out.media_type == "application/json"
    return msgspec.json.decode(out.path.read_bytes(), type=HeaderDocument)


def test_header_lists_cards_and_sip(ctx: LocalContext) -> None:
    path = sip_file()
    item = InputFile(path=path, media_type="application/fits", name="sip")
    out = header(Header(), item, ctx)
    assert out.path == ctx.workdir / "sip.header.json" and out.name == "sip"
    doc = _header_doc(out)
    with fits.open(path) as hdul:
        assert len(doc.hdus) == len(hdul)
        cards = doc.hdus[0].cards
        assert cards is not None
        assert [c[0] for c in cards] == [c.keyword for c in hdul[0].header.cards]
        values = {k: v for k, v, _ in cards}
        assert values["CTYPE1"] == "RA---TAN-SIP" and values["A_ORDER"] == hdul[0].header["A_ORDER"]
        expected = wcs_summary(0, hdul[0], [])
    assert doc.wcs is not None and len(doc.wcs) == 1
    assert doc.wcs[0].sip is True
    assert msgspec.to_builtins(doc.wcs[0]) == msgspec.to_builtins(expected)


def test_header_of_one_hdu(tmp_path: Path, ctx: LocalContext) -> None:
    mef, _int16, _sky = mef_field(tmp_path, size=32)
    item = InputFile(path=mef, media_type="application/fits", name="mef")
    full = _header_doc(header(Header(), item, ctx))
    assert [h.name for h in full.hdus] == ["PRIMARY", "SCI", "ERR", "DQ"]
    assert full.wcs is not None and [w.hdu for w in full.wcs] == [1, 2, 3]
    for wanted, index in (("dq", 3), (2, 2), (0, 0)):
        doc = _header_doc(header(Header(hdu=wanted), item, ctx))
        assert [h.index for h in doc.hdus] == [index]
        assert doc.hdus[0] == full.hdus[index]
    with pytest.raises(UsageError, match="no HDU 7"):
        header(Header(hdu=7), item, ctx)


def test_header_of_a_real_distorted_plate(ctx: LocalContext) -> None:
    path = fits_root() / "astroquery" / "query_images.fits"
    doc = _header_doc(header(Header(), InputFile(path, "application/fits", "dss"), ctx))
    assert doc.wcs is not None and doc.wcs[0].hdu == 0
    assert doc.wcs[0].centre == pytest.approx(
        REAL_FITS["astroquery/query_images.fits"].centre, abs=1e-3
    )


def test_header_refuses_non_fits(tmp_path: Path, ctx: LocalContext) -> None:
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), np.zeros((8, 8), np.uint8))
    with pytest.raises(UsageError, match="not FITS"):
        header(Header(), InputFile(path=png, media_type="image/png", name="png"), ctx)
