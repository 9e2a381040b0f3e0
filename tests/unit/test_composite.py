"""Tests of the ``composite`` operation: additive colours, Lupton as astropy's
``make_lupton_rgb``, channels on other grids, output formats and refused inputs.

Expected values come from astropy (``make_lupton_rgb``, the stretches), from the colours the
test chose, or from the sky ``tests.astrodata`` drew.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import ManualInterval, SqrtStretch, make_lupton_rgb
from astropy.wcs import WCS

from contracts.astro import Channel, Composite, Grid, Lupton, Scaling
from contracts.settings import LimitsSettings
from tests.astrodata import make_channels, tan_wcs
from worker.errors import UsageError
from worker.ops.api import InputFile, LocalContext
from worker.ops.composite import composite, lupton, same_grid
from worker.ops.reproject import regrid

CENTRE = (150.1, 2.2)
LINEAR = Scaling(stretch="linear", limits="minmax")


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three filters of one synthetic field, 256 x 256, on one grid."""
    paths, _skies = make_channels(tmp_path_factory.mktemp("channels"), n=3, size=256)
    return paths


def _fits(path: Path, data: np.ndarray, wcs: WCS | None = None) -> InputFile:
    fits.PrimaryHDU(data, wcs.to_header() if wcs is not None else None).writeto(path)
    return InputFile(path=path, media_type="application/fits", name=path.stem)


def _items(paths: list[Path]) -> list[InputFile]:
    return [InputFile(path=p, media_type="application/fits", name=p.stem) for p in paths]


def _read(path: Path) -> np.ndarray:
    with fits.open(path) as hdul:
        return np.asarray(hdul[0].data, np.float32)


def _rgb(out: InputFile) -> np.ndarray:
    """The output file decoded as RGB in FITS row order (bottom row first)."""
    pixels = cv2.imread(str(out.path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None and pixels.ndim == 3 and pixels.shape[2] == 3
    return pixels[::-1, :, ::-1]


def _astropy_lupton(data: list[np.ndarray], **kwargs: object) -> np.ndarray:
    # astropy divides by an intensity of 0 and leaves NaN to an undefined cast: it warns.
    with np.errstate(divide="ignore", invalid="ignore"):
        return make_lupton_rgb(*data, **kwargs)


# -- additive ----------------------------------------------------------------------------


def _two_spots(tmp_path: Path) -> list[InputFile]:
    """Channel a: a square at the lower left; b: one at the upper right; both overlap in the
    middle. Values 0 or 10 (minmax linear: 0 or 1)."""
    wcs = tan_wcs(CENTRE, (40, 60), 1.0)
    a = np.zeros((40, 60), np.float32)
    b = np.zeros((40, 60), np.float32)
    a[5:25, 5:35] = 10.0
    b[15:35, 25:55] = 10.0
    return [_fits(tmp_path / "a.fits", a, wcs), _fits(tmp_path / "b.fits", b, wcs)]


def test_additive_known_colours(tmp_path: Path, ctx: LocalContext) -> None:
    items = _two_spots(tmp_path)
    op = Composite(
        channels=[
            Channel(colour="#ff0000", scaling=LINEAR),
            Channel(colour="#0000ff", scaling=LINEAR, weight=0.5),
        ]
    )
    [out] = composite(op, items, ctx)
    assert out.path == ctx.workdir / "composite.png" and out.media_type == "image/png"
    assert out.name == "composite"
    rgb = _rgb(out)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[8, 8]) == (255, 0, 0)  # only a
    assert tuple(rgb[30, 50]) == (0, 0, 128)  # only b, half weight
    assert tuple(rgb[20, 30]) == (255, 0, 128)  # both
    assert tuple(rgb[38, 2]) == (0, 0, 0)  # neither
    # North up: FITS row 8 (near the bottom) is near the bottom of the picture.
    picture = cv2.imread(str(out.path))
    assert tuple(picture[40 - 1 - 8, 8]) == (0, 0, 255)  # BGR


def test_additive_equals_stretched_channels(ctx: LocalContext, channels: list[Path]) -> None:
    sqrt = Scaling(stretch="sqrt", limits="percentile", low=1, high=99)
    specs = [Channel(colour="#0000ff", scaling=sqrt), Channel(colour="#00ff00"),
             Channel(colour="#ff0000", scaling=LINEAR)]  # fmt: skip
    [out] = composite(Composite(channels=specs, bits=16), _items(channels), ctx)
    rgb = _rgb(out)
    assert rgb.dtype == np.uint16
    data = [_read(p) for p in channels]
    lo, hi = np.percentile(data[0], (1, 99))
    blue = SqrtStretch()(ManualInterval(lo, hi)(data[0]))
    np.testing.assert_allclose(rgb[:, :, 2] / 65535, blue, atol=0.6 / 65535 + 1e-6)
    red = ManualInterval(data[2].min(), data[2].max())(data[2])
    np.testing.assert_allclose(rgb[:, :, 0] / 65535, red, atol=0.6 / 65535 + 1e-6)
    events = [fraction for fraction, _ in ctx.events]
    assert events == sorted(events) and events[-1] == 1.0
    assert [m for _, m in ctx.events if m] == [f"channel {k} of 3" for k in (1, 2, 3)]


def test_additive_nan_adds_nothing(tmp_path: Path, ctx: LocalContext) -> None:
    items = _two_spots(tmp_path)
    with fits.open(items[0].path, mode="update") as hdul:
        hdul[0].data[0:10, 0:10] = np.nan
    op = Composite(channels=[Channel(colour="#ffffff", scaling=LINEAR)] * 2)
    rgb = _rgb(composite(op, items, ctx)[0])
    assert (rgb[0:10, 0:10] == 0).all()
    assert (rgb[8, 12] == 255).all()


# -- Lupton ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lupton",
    [
        Lupton(),
        Lupton(minimum=[100.0, 150.0, 200.0], stretch=400.0, Q=8.0),
        Lupton(minimum=120.0, stretch=50.0, Q=0.0),
        Lupton(minimum=[90.0], stretch=1000.0, Q=20.0),
    ],
)
def test_lupton_equals_make_lupton_rgb(
    ctx: LocalContext, channels: list[Path], lupton: Lupton
) -> None:
    [out] = composite(Composite(lupton=lupton), _items(channels), ctx)
    data = [_read(p) for p in channels]
    minimum = (
        lupton.minimum
        if not isinstance(lupton.minimum, list)
        else lupton.minimum * (3 // len(lupton.minimum))
    )
    expected = _astropy_lupton(data, minimum=minimum, stretch=lupton.stretch, Q=lupton.Q)
    ours = _rgb(out)
    assert 0 < ours.mean() < 250  # neither black nor white: the parameters show something
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("seed", [5, 6])
def test_lupton_equals_make_lupton_rgb_bit_for_bit_on_noise(seed: int) -> None:
    # Noise spreads values over every rounding case: a single float32 operation done
    # differently from astropy (a division as a multiplication, a float64 step in float32)
    # changes some levels here.
    rng = np.random.default_rng(seed)
    data = [
        rng.normal(100 + 20 * k, 10, (512, 512)).astype(np.float32)
        + (rng.exponential(5, (512, 512)) ** 2).astype(np.float32)
        for k in range(3)
    ]
    params = Lupton(minimum=[100.0, 120.0, 140.0], stretch=60.0, Q=8.0)
    expected = _astropy_lupton(data, minimum=params.minimum, stretch=params.stretch, Q=params.Q)
    pixels = np.empty((512, 512, 3), np.uint8)
    lupton([d.copy() for d in data], pixels, params, [100.0, 120.0, 140.0])
    np.testing.assert_array_equal(pixels[::-1, :, ::-1], expected)


def test_lupton_16_bit_is_the_same_image(ctx: LocalContext, channels: list[Path]) -> None:
    lupton = Lupton(minimum=100.0, stretch=400.0)
    eight = _rgb(composite(Composite(lupton=lupton), _items(channels), ctx)[0])
    sixteen = _rgb(composite(Composite(lupton=lupton, bits=16), _items(channels), ctx)[0])
    assert sixteen.dtype == np.uint16
    # 8 bits truncate (as astropy), 16 bits round: the same value v gives floor(255 v)
    # and round(65535 v).
    v = sixteen / 65535
    assert (np.floor(v * 255 + 1e-3) >= eight).all() and (v * 255 - 1e-3 < eight + 1).all()


def test_lupton_nan_is_black(tmp_path: Path, ctx: LocalContext, channels: list[Path]) -> None:
    holed = tmp_path / "holed.fits"
    with fits.open(channels[1]) as hdul:
        hdul[0].data[100:120, 30:60] = np.nan
        hdul.writeto(holed)
    items = _items([channels[0], holed, channels[2]])
    rgb = _rgb(composite(Composite(lupton=Lupton(minimum=100.0, stretch=400.0)), items, ctx)[0])
    assert (rgb[100:120, 30:60] == 0).all()
    assert rgb[90:100, 30:60].any()


# -- grids -------------------------------------------------------------------------------


def test_channel_on_another_grid_is_reprojected(tmp_path: Path, ctx: LocalContext) -> None:
    # Channel 1 has larger pixels, turned and moved: as the reference, channel 0 (finer,
    # smaller on the sky) leaves its corners uncovered.
    paths, skies = make_channels(tmp_path, n=2, size=200, regrid=1)
    op = Composite(channels=[Channel(colour="#ff0000", scaling=LINEAR),
                             Channel(colour="#00ff00", scaling=LINEAR)])  # fmt: skip
    rgb = _rgb(composite(op, _items([paths[1], paths[0]]), ctx)[0])
    with fits.open(paths[1]) as a, fits.open(paths[0]) as b:
        wcs_a, wcs_b = WCS(a[0].header), WCS(b[0].header)
        first = np.asarray(a[0].data, np.float32)
        second = np.asarray(b[0].data, np.float32)
    expected, footprint = regrid(second, wcs_b, wcs_a, first.shape)
    lo, hi = np.nanmin(expected), np.nanmax(expected)
    green = np.nan_to_num(ManualInterval(lo, hi)(expected))
    assert np.abs(rgb[:, :, 1] - np.round(green * 255)).max() <= 1
    assert (footprint == 0).sum() > 1000 and (rgb[:, :, 1][footprint == 0] == 0).all()
    # The same sky: the brightest source in view lands on the same pixel in both channels.
    sources = skies[0].sources
    x, y = wcs_a.world_to_pixel_values(sources.ra, sources.dec)
    inside = (x > 10) & (x < 190) & (y > 10) & (y < 190)
    column, row = (np.clip(np.rint(v), 0, 199).astype(int) for v in (x, y))
    inside &= footprint[row, column] > 0
    brightest = np.argmax(
        np.where(inside, np.minimum(skies[0].sources.flux, skies[1].sources.flux), 0)
    )
    sx, sy = round(float(x[brightest])), round(float(y[brightest]))
    for k in (0, 1):
        window = rgb[sy - 3 : sy + 4, sx - 3 : sx + 4, k].astype(int)
        peak = np.unravel_index(np.argmax(window), window.shape)
        assert abs(peak[0] - 3) <= 1 and abs(peak[1] - 3) <= 1


def test_output_grid(tmp_path: Path, ctx: LocalContext, channels: list[Path]) -> None:
    grid = Grid(ra=CENTRE[0], dec=CENTRE[1], width=120, height=80, scale=0.4, rotation=30)
    op = Composite(lupton=Lupton(minimum=100.0, stretch=400.0), grid=grid, format="tiff")
    [out] = composite(op, _items(channels), ctx)
    assert out.path.name == "composite.tif" and out.media_type == "image/tiff"
    rgb = _rgb(out)
    assert rgb.shape == (80, 120, 3)
    assert rgb.any()


def test_same_grid_is_cut_or_padded_not_resampled(tmp_path: Path, ctx: LocalContext) -> None:
    wcs = tan_wcs(CENTRE, (40, 60), 1.0)
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, (40, 60)).astype(np.float32)
    b = rng.uniform(0, 1, (50, 45)).astype(np.float32)  # same WCS, other NAXISn
    items = [_fits(tmp_path / "a.fits", a, wcs), _fits(tmp_path / "b.fits", b, wcs)]
    scaling = Scaling(stretch="linear", limits="minmax")
    op = Composite(channels=[Channel(colour="#ff0000", scaling=scaling),
                             Channel(colour="#0000ff", scaling=scaling)])  # fmt: skip
    rgb = _rgb(composite(op, items, ctx)[0])
    blue = (b[:40, :45] - b[:40].min()) / (b[:40].max() - b[:40].min())
    assert np.abs(rgb[:, :45, 2] - np.round(blue * 255)).max() <= 1
    assert (rgb[:, 45:, 2] == 0).all()


def test_same_grid() -> None:
    wcs = tan_wcs(CENTRE, (100, 100), 0.2)
    assert same_grid(wcs.deepcopy(), wcs, (100, 100))
    moved = wcs.deepcopy()
    moved.wcs.crval = [CENTRE[0], CENTRE[1] + 1e-8]
    assert not same_grid(moved, wcs, (100, 100))
    moved.wcs.crval = [CENTRE[0], CENTRE[1] + 1e-11]
    assert same_grid(moved, wcs, (100, 100))
    turned = tan_wcs(CENTRE, (100, 100), 0.2, rotation_deg=0.01)
    assert not same_grid(turned, wcs, (100, 100))
    fk5 = wcs.deepcopy()
    fk5.wcs.radesys = "FK5"
    assert not same_grid(fk5, wcs, (100, 100))


# -- formats and refusals ----------------------------------------------------------------


def test_jpeg(tmp_path: Path, ctx: LocalContext) -> None:
    op = Composite(channels=[Channel(colour="#ff0000", scaling=LINEAR)] * 2, format="jpeg",
                   name="pic")  # fmt: skip
    [out] = composite(op, _two_spots(tmp_path), ctx)
    assert out.path.name == "pic.jpg" and out.media_type == "image/jpeg" and out.name == "pic"
    assert _rgb(out).shape == (40, 60, 3)


def test_tiff_16_bit(tmp_path: Path, ctx: LocalContext) -> None:
    op = Composite(channels=[Channel(colour="#00ff00", scaling=LINEAR)] * 2, format="tiff", bits=16)
    rgb = _rgb(composite(op, _two_spots(tmp_path), ctx)[0])
    assert rgb.dtype == np.uint16
    assert tuple(rgb[20, 30]) == (0, 65535, 0)  # 1 + 1, clipped
    assert tuple(rgb[8, 8]) == (0, 65535, 0)


def test_refuses_bad_inputs(tmp_path: Path, ctx: LocalContext) -> None:
    items = _two_spots(tmp_path)
    two = Composite(channels=[Channel(colour="#ff0000")] * 2)
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), np.zeros((8, 8), np.uint8))
    with pytest.raises(UsageError, match="not FITS"):
        composite(two, [items[0], InputFile(png, "image/png", "png")], ctx)
    table = tmp_path / "table.fits"
    columns = [fits.Column(name="flux", format="E", array=np.arange(5, dtype=np.float32))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)]).writeto(table)
    with pytest.raises(UsageError, match="holds no image HDU"):
        composite(two, [items[0], InputFile(table, "application/fits", "t")], ctx)
    with pytest.raises(UsageError, match="lupton takes three inputs"):
        composite(Composite(lupton=Lupton()), items, ctx)
    with pytest.raises(UsageError, match="2 channels for 3 inputs"):
        composite(two, [*items, items[0]], ctx)
    with pytest.raises(msgspec.ValidationError, match="one value or three"):  # 422 at the edge
        msgspec.convert({"minimum": [1.0, 2.0]}, Lupton)
    bare = _fits(tmp_path / "bare.fits", np.zeros((30, 30), np.float32))
    with pytest.raises(UsageError, match="no celestial WCS"):
        composite(two, [items[0], bare], ctx)
    grid = Grid(ra=CENTRE[0], dec=CENTRE[1], width=10, height=10, scale=1.0)
    with pytest.raises(UsageError, match="no celestial WCS"):
        composite(msgspec.structs.replace(two, grid=grid), [bare, bare], ctx)


def test_inputs_without_wcs_combine_pixel_by_pixel(tmp_path: Path, ctx: LocalContext) -> None:
    a = np.zeros((30, 20), np.float32)
    a[:, :10] = 1.0
    items = [_fits(tmp_path / "a.fits", a), _fits(tmp_path / "b.fits", a[::-1].copy())]
    op = Composite(channels=[Channel(colour="#ff0000", scaling=LINEAR),
                             Channel(colour="#00ff00", scaling=LINEAR)])  # fmt: skip
    rgb = _rgb(composite(op, items, ctx)[0])
    assert tuple(rgb[5, 5]) == (255, 255, 0) and tuple(rgb[5, 15]) == (0, 0, 0)


def test_refuses_an_output_over_the_limit(tmp_path: Path) -> None:
    workdir = tmp_path / "out"
    workdir.mkdir()
    small = LocalContext(workdir=workdir, limits=LimitsSettings(max_output_pixels=1000))
    op = Composite(channels=[Channel(colour="#ff0000")] * 2)
    with pytest.raises(UsageError, match="more than 1,000"):
        composite(op, _two_spots(tmp_path), small)
    grid = Grid(ra=CENTRE[0], dec=CENTRE[1], width=40, height=30, scale=1.0)
    (tmp_path / "grid").mkdir()
    with pytest.raises(UsageError, match="40 x 30 pixels"):
        composite(msgspec.structs.replace(op, grid=grid), _two_spots(tmp_path / "grid"), small)
