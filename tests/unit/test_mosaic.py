"""Tests of the ``mosaic`` operation: plan, one task per input, combine, called in-process as
the fan-out runtime calls them (only bytes and files pass between the steps).

The reference is ``reproject.reproject_interp`` of every input onto the mosaic's grid,
combined with numpy: by coverage for ``mean``, ``np.nanmedian`` and ``np.nansum`` otherwise.
Values agree to a median relative difference of 1e-3 or better on the pixels both cover, and
the covered pixels are the same but for the footprint's one-pixel border.
"""

from __future__ import annotations

import shutil
import warnings
from datetime import datetime
from importlib import metadata
from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from reproject import reproject_interp

from contracts.astro import Grid, Mosaic, Scaling
from contracts.settings import LimitsSettings
from tests import astrodata
from worker.errors import UsageError
from worker.ops import mosaic, stretch
from worker.ops.api import InputFile, LocalContext, OutputFile

MEDIAN_RELATIVE = 1e-3
TILE = 384


def _ring(mask: np.ndarray) -> np.ndarray:
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, kernel) != cv2.erode(m, kernel, borderValue=0)).astype(bool)


def _context(directory: Path, **limits: int) -> LocalContext:
    directory.mkdir(parents=True)
    return LocalContext(workdir=directory, limits=LimitsSettings(**limits))


def _files(paths: list[Path]) -> list[InputFile]:
    return [
        InputFile(path=p, media_type="application/fits", name=p.stem, source=f"upload-{p.stem}")
        for p in paths
    ]


def run(op: Mosaic, files: list[InputFile], tmp: Path) -> list[OutputFile]:
    """Plan, tasks and combine in separate work directories; the parts are copied to where
    ``combine`` finds them, as the runtime fetches them from the store."""
    plan = mosaic.plan(op, files, _context(tmp / "plan"))
    shared = bytes(plan.shared)
    parts = []
    for k, task in enumerate(plan.tasks):
        mine = [files[i] for i in task.inputs]
        made = mosaic.reproject_input(
            op, shared, bytes(task.payload), mine, _context(tmp / f"t{k}")
        )
        fetched = tmp / "fetched" / str(k)
        fetched.mkdir(parents=True)
        parts.append(
            [
                InputFile(
                    path=Path(shutil.copy(f.path, fetched)), media_type=f.media_type, name=f.name
                )
                for f in made
            ]
        )
    return mosaic.combine(op, shared, parts, _context(tmp / "combine"))


def _grid(path: Path) -> tuple[WCS, tuple[int, int]]:
    header = fits.getheader(path)
    return WCS(header), (header["NAXIS2"], header["NAXIS1"])


def _read(path: Path, hdu: int) -> tuple[np.ndarray, WCS]:
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return hdul[hdu].data.astype(np.float32), WCS(hdul[hdu].header, hdul).celestial


def _stack(inputs: list[tuple[np.ndarray, WCS]], wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Every input reprojected by ``reproject_interp`` onto the grid: (n, rows, columns)."""
    return np.stack(
        [reproject_interp((d, w), wcs, shape_out=shape, order="bilinear")[0] for d, w in inputs]
    ).astype(np.float32)


def assert_matches(ours: np.ndarray, ref: np.ndarray) -> float:
    both = np.isfinite(ours) & np.isfinite(ref) & (ref != 0)
    assert both.sum() > 0.5 * np.isfinite(ref).sum()
    median = float(np.median(np.abs(ours[both] - ref[both]) / np.abs(ref[both])))
    assert median <= MEDIAN_RELATIVE, median
    differ = np.isfinite(ours) != np.isfinite(ref)
    assert not (differ & ~_ring(np.isfinite(ref))).any(), "footprints differ off the border"
    return median


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    paths, _ = astrodata.make_tiles(tmp_path_factory.mktemp("tiles"), n=4, size=TILE)
    return paths


@pytest.fixture(scope="module")
def mean_mosaic(
    tiles: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[OutputFile], np.ndarray]:
    """The default mosaic of the tiles and the reference stack on its grid."""
    out = run(Mosaic(), _files(tiles), tmp_path_factory.mktemp("mean"))
    wcs, shape = _grid(out[0].path)
    return out, _stack([_read(p, 0) for p in tiles], wcs, shape)


# -- results ------------------------------------------------------------------------------------


def test_mean_matches_reproject_weighted_by_coverage(
    mean_mosaic: tuple[list[OutputFile], np.ndarray],
) -> None:
    out, stack = mean_mosaic
    assert [f.path.name for f in out] == ["mosaic.fits", "mosaic.coverage.fits", "mosaic.png"]
    assert [f.name for f in out] == ["mosaic", "mosaic.coverage", "mosaic"]
    assert [f.media_type for f in out] == ["application/fits"] * 2 + ["image/png"]
    image, coverage = fits.getdata(out[0].path), fits.getdata(out[1].path)
    assert fits.getheader(out[0].path)["BITPIX"] == fits.getheader(out[1].path)["BITPIX"] == -32
    weight = np.isfinite(stack).sum(axis=0).astype(np.float32)
    with np.errstate(invalid="ignore"):
        expected = np.nansum(stack, axis=0) / weight
    expected[weight == 0] = np.nan
    assert_matches(image, expected)
    inner = ~_ring(weight > 0)
    assert np.array_equal(coverage[inner], weight[inner])
    assert coverage.max() == 4  # the centre lies on every tile
    assert np.array_equal(np.isnan(image), coverage == 0)


@pytest.mark.parametrize("how", ["median", "sum"])
def test_median_and_sum_match_numpy(how: str, tiles: list[Path], tmp_path: Path) -> None:
    out = run(Mosaic(combine=how), _files(tiles), tmp_path)  # type: ignore[arg-type]
    wcs, shape = _grid(out[0].path)
    stack = _stack([_read(p, 0) for p in tiles], wcs, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        expected = np.nanmedian(stack, axis=0) if how == "median" else np.nansum(stack, axis=0)
    expected[~np.isfinite(stack).any(axis=0)] = np.nan
    image = fits.getdata(out[0].path)
    assert_matches(image, expected)
    assert fits.getheader(out[0].path)["COMBINE"] == how
    if how == "sum":  # where two tiles overlap the sum is about twice the background
        coverage = fits.getdata(out[1].path)
        one, two = np.nanmedian(image[coverage == 1]), np.nanmedian(image[coverage == 2])
        assert 1.6 < two / one < 2.4


def test_nanmedian0_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(5, 40, 50)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.4] = np.nan
    stack[:, 0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(stack, axis=0)
    assert np.allclose(mosaic.nanmedian0(stack), expected, equal_nan=True, rtol=0, atol=1e-6)


def test_each_task_reprojects_only_its_box(tiles: list[Path], tmp_path: Path) -> None:
    files = _files(tiles)
    plan = mosaic.plan(Mosaic(), files, _context(tmp_path / "plan"))
    doc = msgspec.json.decode(plan.shared, type=mosaic.Shared)
    assert [t.inputs for t in plan.tasks] == [(0,), (1,), (2,), (3,)]
    assert [t.label for t in plan.tasks] == [f.name for f in files]
    area = doc.shape[0] * doc.shape[1]
    for k, task in enumerate(plan.tasks):
        x0, y0, x1, y1 = msgspec.json.decode(task.payload, type=mosaic.Task).box
        assert (x1 - x0) * (y1 - y0) < 0.45 * area  # a tile covers about a third
        [part] = mosaic.reproject_input(
            Mosaic(), plan.shared, task.payload, [files[k]], _context(tmp_path / f"t{k}")
        )
        with fits.open(part.path) as hdul:
            assert hdul[0].data.shape == (y1 - y0, x1 - x0)
            assert (hdul[0].header["MOSX0"], hdul[0].header["MOSY0"]) == (x0, y0)
            assert hdul["FOOTPRINT"].data.shape == (y1 - y0, x1 - x0)


def test_m1_dss_and_ukidss_make_one_sane_mosaic(tmp_path: Path) -> None:
    """Two real images of M1: DSS (1.7", TAN with a plate polynomial) and UKIDSS K (0.2", ZPN,
    int32 scaled by BSCALE), the second inside the first."""
    paths = [astrodata.m1_dss(), astrodata.m1_ukidss()]
    out = run(Mosaic(), _files(paths), tmp_path)
    image, coverage = fits.getdata(out[0].path), fits.getdata(out[1].path)
    wcs, shape = _grid(out[0].path)
    assert wcs.wcs.ctype[0] == "RA---TAN" and np.allclose(wcs.wcs.get_pc(), np.eye(2))
    assert wcs.wcs.cdelt[0] < 0 < wcs.wcs.cdelt[1]  # north up, east left
    assert -wcs.wcs.cdelt[0] * 3600 == pytest.approx(0.2006, abs=1e-4)  # the finer input
    assert np.array_equal(np.isfinite(image), coverage > 0)
    dss, ukidss = _stack([_read(paths[0], 0), _read(paths[1], 1)], wcs, shape)
    inner = ~_ring(np.isfinite(ukidss)) & ~_ring(np.isfinite(dss))
    assert np.array_equal((coverage == 2)[inner], np.isfinite(ukidss)[inner])
    assert np.array_equal((coverage == 1)[inner], (np.isfinite(dss) & np.isnan(ukidss))[inner])
    assert (coverage == 2).sum() > 80_000  # UKIDSS's 300 x 300 pixels
    # Both contribute: the mean of the two in the overlap, DSS alone around it.
    overlap, dss_only = (coverage == 2) & inner, (coverage == 1) & inner
    assert_matches(np.where(overlap, image, np.nan), np.where(overlap, (dss + ukidss) / 2, np.nan))
    assert_matches(np.where(dss_only, image, np.nan), np.where(dss_only, dss, np.nan))


def test_provenance(mean_mosaic: tuple[list[OutputFile], np.ndarray]) -> None:
    out, _ = mean_mosaic
    for path in (out[0].path, out[1].path):
        header = fits.getheader(path)
        assert header["NINPUTS"] == 4
        assert [header[f"INPUT{k:03d}"] for k in range(1, 5)] == [
            f"upload-tile_{k}" for k in range(4)
        ]
        assert header["COMBINE"] == "mean" and header["INTERP"] == "bilinear"
        assert header["ORIGIN"] == "pixfleet"
        assert header["CREATOR"] == f"pixfleet {metadata.version('pixfleet')}"
        datetime.strptime(header["DATE"], "%Y-%m-%dT%H:%M:%S")
        assert WCS(header).wcs.ctype[0] == "RA---TAN"
    assert "BUNIT" not in fits.getheader(out[0].path)  # the tiles declare none


def test_common_bunit_is_kept(tiles: list[Path], tmp_path: Path) -> None:
    copies = []
    for path in tiles[:2]:
        with fits.open(path) as hdul:
            hdul[0].header["BUNIT"] = "MJy/sr"
            copies.append(tmp_path / path.name)
            hdul.writeto(copies[-1])
    out = run(Mosaic(), _files(copies), tmp_path / "run")
    assert fits.getheader(out[0].path)["BUNIT"] == "MJy/sr"


def test_png_preview_is_the_stretched_mosaic_north_up(
    mean_mosaic: tuple[list[OutputFile], np.ndarray],
) -> None:
    out, _ = mean_mosaic
    image = fits.getdata(out[0].path).astype(np.float32)
    png = cv2.imread(str(out[2].path), cv2.IMREAD_UNCHANGED)
    assert png.shape == (*image.shape, 4)
    flipped = image[::-1]  # FITS row 0 is the bottom (south)
    assert np.array_equal(png[..., 3] == 0, np.isnan(flipped))
    scaling = Scaling()
    levels = stretch.levels(stretch.apply(flipped, scaling, *stretch.limits(image, scaling)))
    finite = np.isfinite(flipped)
    assert np.array_equal(png[..., 0][finite], levels[finite])


def test_given_grid_with_rotation(tiles: list[Path], tmp_path: Path) -> None:
    with fits.open(tiles[0]) as hdul:
        ra, dec = WCS(hdul[0].header).all_pix2world(TILE * 0.9, TILE * 0.9, 0)
    grid = Grid(ra=float(ra), dec=float(dec), width=300, height=260, scale=0.27, rotation=25)
    out = run(Mosaic(grid=grid, interpolation="bicubic"), _files(tiles), tmp_path)
    wcs, shape = _grid(out[0].path)
    assert shape == (260, 300)
    assert np.allclose(wcs.all_pix2world(149.5, 129.5, 0), (ra, dec), atol=1e-9)
    assert fits.getheader(out[0].path)["INTERP"] == "bicubic"
    stack = _stack([_read(p, 0) for p in tiles], wcs, shape)
    weight = np.isfinite(stack).sum(axis=0)
    with np.errstate(invalid="ignore"):
        expected = np.nansum(stack, axis=0) / weight
    expected[weight == 0] = np.nan
    # Bicubic against reproject's bilinear: agrees closely on this smooth, well-sampled sky.
    assert_matches(fits.getdata(out[0].path), expected)


def test_progress_is_reported(tiles: list[Path], tmp_path: Path) -> None:
    files = _files(tiles[:2])
    ctx = _context(tmp_path / "plan")
    plan = mosaic.plan(Mosaic(), files, ctx)
    task_ctx = _context(tmp_path / "task")
    mosaic.reproject_input(Mosaic(), plan.shared, plan.tasks[0].payload, files[:1], task_ctx)
    for events in (ctx.events, task_ctx.events):
        fractions = [f for f, _ in events]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0


# -- errors -------------------------------------------------------------------------------------


def test_input_off_the_given_grid_is_named(tiles: list[Path], tmp_path: Path) -> None:
    with fits.open(tiles[0]) as hdul:  # tile 0's south-east corner: no other tile reaches it
        ra, dec = WCS(hdul[0].header).all_pix2world(30, 30, 0)
    grid = Grid(ra=float(ra), dec=float(dec), width=40, height=40, scale=0.2)
    with pytest.raises(UsageError, match="'tile_1' does not overlap"):
        mosaic.plan(Mosaic(grid=grid), _files(tiles), _context(tmp_path / "plan"))


def test_output_over_the_limit(tiles: list[Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"mosaic would be \d+ x \d+ pixels, more than 100,000"):
        mosaic.plan(Mosaic(), _files(tiles), _context(tmp_path / "plan", max_output_pixels=100_000))
    grid = Grid(ra=150.1, dec=2.2, width=20_000, height=20_000, scale=0.01)
    with pytest.raises(UsageError, match="20000 x 20000"):
        mosaic.plan(Mosaic(grid=grid), _files(tiles), _context(tmp_path / "grid"))


def test_non_fits_input_is_named(tiles: list[Path], tmp_path: Path) -> None:
    png = tmp_path / "photo.png"
    cv2.imwrite(str(png), np.zeros((8, 8), np.uint8))
    files = [*_files(tiles[:1]), InputFile(path=png, media_type="application/fits", name="photo")]
    with pytest.raises(UsageError, match="'photo' is image/png, not FITS"):
        mosaic.plan(Mosaic(), files, _context(tmp_path / "plan"))


def test_fits_without_celestial_wcs_is_named(tiles: list[Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare.fits"
    fits.PrimaryHDU(np.zeros((16, 16), np.float32)).writeto(bare)
    with pytest.raises(UsageError, match="'bare' has no celestial WCS"):
        mosaic.plan(Mosaic(), _files([tiles[0], bare]), _context(tmp_path / "plan"))


def test_one_input_is_not_a_mosaic(tiles: list[Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least two"):
        mosaic.plan(Mosaic(), _files(tiles[:1]), _context(tmp_path / "plan"))


def test_inputs_all_over_the_sky(tmp_path: Path) -> None:
    paths = []
    for k, ra in enumerate((0.0, 120.0, 240.0)):
        wcs = astrodata.tan_wcs((ra, 0.0), (10, 10), 1.0)
        paths.append(tmp_path / f"far{k}.fits")
        fits.PrimaryHDU(np.ones((10, 10), np.float32), wcs.to_header()).writeto(paths[-1])
    with pytest.raises(UsageError, match="one grid"):
        mosaic.plan(Mosaic(), _files(paths), _context(tmp_path / "plan"))
