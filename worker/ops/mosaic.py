"""The ``mosaic`` operation, fanned out: plan the grid, reproject each input, combine.

``plan`` reads headers only: it settles the output grid (``op.grid``, else a north-up TAN grid
covering every input) and the box of that grid each input reaches, and gives one task per
input. ``reproject_input`` (on any worker of the heavy pool, possibly another machine, with the
plan's bytes and its one file) resamples its input onto its box alone (``worker.ops.reproject``)
and writes a part file. ``combine`` places the parts on the grid and combines them into the
mosaic, its coverage and a PNG preview. Between the steps only bytes travel: the plan's shared
document (the grid's WCS header and shape, the input names) and each task's box.

Memory: a task holds its input plane and its box twice (image, footprint); ``combine`` holds the
mosaic and its coverage (float32) and reads parts a block of rows at a time; ``median`` works
in strips of rows holding every part that reaches the strip.

Runs in worker children (numpy, astropy, OpenCV); never imports litestar.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from contracts.astro import Mosaic
from contracts.media import FITS
from contracts.ops import Convert
from worker.errors import FatalError, UsageError
from worker.ops import stretch
from worker.ops.api import InputFile, OpContext, OutputFile, Picture, Plan, TaskSpec, output_path
from worker.ops.fitsio import open_fits, plane_data, science_plane
from worker.ops.imaging import check_output, write
from worker.ops.inputs import check_input
from worker.ops.preview import render
from worker.ops.reproject import Box, covering_grid, grid_wcs, overlap_box, regrid

_ROWS = 512
"""Rows of a part read at once when accumulating."""
_MEDIAN_BYTES = 32 * 1024 * 1024
"""Budget of one median strip (every part's rows reaching it, float32)."""
_PNG_LEVEL = 3  # zlib level, as preview: 6 takes twice as long for a few percent


class Shared(msgspec.Struct, frozen=True, kw_only=True):
    """The plan's document for every task and for ``combine``."""

    header: str
    """The output grid's WCS as FITS header cards."""
    shape: tuple[int, int]
    """``(rows, columns)`` of the output grid."""
    inputs: list[str]
    """Each input's source id (or name), in task order: provenance."""
    bunit: str | None = None
    """The inputs' common BUNIT, if they share one."""


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """One task's payload: the box of the output grid its input reaches."""

    box: tuple[int, int, int, int]
    """``(x0, y0, x1, y1)``, 0-based, end exclusive."""


def plan(op: Mosaic, files: list[InputFile], ctx: OpContext) -> Plan:
    """Settle the output grid and one reprojection task per input, from headers only.

    Raises:
        UsageError: fewer than two inputs, an input that is not FITS or has no celestial WCS,
            inputs no TAN grid can hold, an output over ``max_output_pixels``, or an input
            that does not reach the given grid.
    """
    problem = op.check_inputs(len(files))
    if problem:
        raise UsageError(problem)
    grids: list[tuple[WCS, tuple[int, int]]] = []
    units: set[str | None] = set()
    for index, item in enumerate(files):
        grids.append(_input_grid(item, ctx, units))
        ctx.progress(0.8 * (index + 1) / len(files))
    if op.grid is not None:
        wcs, shape = grid_wcs(op.grid)
    else:
        try:
            wcs, shape = covering_grid(grids, op.scale)
        except ValueError as e:
            raise UsageError(f"cannot lay one grid over the inputs: {e}") from e
    check_output(shape[1], shape[0], ctx, "the mosaic")
    tasks: list[TaskSpec] = []
    for item, (wcs_in, shape_in) in zip(files, grids, strict=True):
        try:
            box = overlap_box(wcs_in, shape_in, wcs, shape)
        except ValueError as e:
            raise UsageError(f"input {item.name!r}: {e}") from e
        if box is None:
            raise UsageError(f"input {item.name!r} does not overlap the mosaic's grid")
        payload = msgspec.json.encode(Task(box=(box.x0, box.y0, box.x1, box.y1)))
        tasks.append(TaskSpec(inputs=(len(tasks),), payload=payload, label=item.name))
    shared = Shared(
        header=wcs.to_header().tostring(),
        shape=shape,
        inputs=[item.source or item.name for item in files],
        bunit=units.pop() if len(units) == 1 else None,
    )
    ctx.progress(1.0)
    return Plan(shared=msgspec.json.encode(shared), tasks=tasks)


def reproject_input(
    op: Mosaic, shared: bytes, payload: bytes, files: list[InputFile], ctx: OpContext
) -> list[OutputFile]:
    """Reproject the task's one input onto its box of the output grid: one part file.

    The input's science plane is the first image HDU with a celestial WCS (a cube's first
    plane along its other axes).

    The part is a FITS file: the resampled image (float32, NaN where the input does not
    reach) in the primary HDU with the box's WCS and its offset in the grid (``MOSX0``,
    ``MOSY0``), and the footprint (0 to 1) in HDU ``FOOTPRINT``.

    Raises:
        UsageError: the input cannot be read, or its sky frame cannot be related to the grid's.
    """
    doc = msgspec.json.decode(shared, type=Shared)
    box = Box(*msgspec.json.decode(payload, type=Task).box)
    (item,) = files
    wcs = _shifted(_grid(doc), box)
    with open_fits(item, ctx) as hdul:
        plane = science_plane(hdul, item)
        wcs_in = plane.celestial
        data = plane_data(plane)
    ctx.progress(0.1)
    try:
        image, footprint = regrid(
            data,
            wcs_in,
            wcs,
            box.shape,
            op.interpolation,
            progress=lambda f: ctx.progress(0.1 + 0.8 * f),
        )
    except ValueError as e:
        raise UsageError(f"input {item.name!r}: {e}") from e
    del data
    header = wcs.to_header()
    header["MOSX0"] = (box.x0, "mosaic column of pixel 0 (0-based)")
    header["MOSY0"] = (box.y0, "mosaic row of pixel 0 (0-based)")
    header["MOSSRC"] = (item.source or item.name, "input reprojected")
    path = output_path(ctx.workdir, f"{item.name}.part.fits")
    fits.HDUList(
        [fits.PrimaryHDU(image, header), fits.ImageHDU(footprint, name="FOOTPRINT")]
    ).writeto(path)
    ctx.progress(1.0)
    return [OutputFile(path=path, media_type=FITS, name=f"{item.name}.part")]


def combine(
    op: Mosaic, shared: bytes, parts: list[list[InputFile]], ctx: OpContext
) -> list[OutputFile]:
    """Combine the parts into ``<name>.fits``, ``<name>.coverage.fits`` and ``<name>.png``.

    ``mean`` is ``sum(w v) / sum(w)`` over the parts (``w`` the footprint), ``sum`` is
    ``sum(w v)`` and ``median`` the median of the parts covering a pixel; pixels no part
    covers are NaN. The coverage is ``sum(w)`` (how many inputs cover the pixel). The mosaic
    carries the grid's WCS and provenance: ``NINPUTS``, ``INPUTnnn`` (each input's id),
    ``COMBINE``, ``INTERP``, ``ORIGIN``, ``CREATOR`` (software and version) and ``DATE``.
    The preview is scaled by ``op.preview``, grid +y up, NaN transparent.

    Raises:
        FatalError: a part is unreadable or off the grid (the plan and the tasks disagree).
    """
    doc = msgspec.json.decode(shared, type=Shared)
    wcs = _grid(doc)
    pieces = [_piece(files, doc) for files in parts]
    if op.combine == "median":
        image, coverage = _median(pieces, doc.shape, ctx)
    else:
        image, coverage = _accumulate(pieces, doc.shape, ctx, mean=op.combine == "mean")
    ctx.progress(0.7)
    header = wcs.to_header()
    _provenance(header, op, doc)
    mosaic_path = output_path(ctx.workdir, f"{op.name}.fits")
    fits.PrimaryHDU(image, header).writeto(mosaic_path)
    cover = wcs.to_header()
    cover["COMMENT"] = "Coverage of the mosaic: the summed footprints of the inputs"
    cover["COMMENT"] = "(how many inputs cover each pixel)."
    _provenance(cover, op, doc, bunit=False)
    coverage_path = output_path(ctx.workdir, f"{op.name}.coverage.fits")
    fits.PrimaryHDU(coverage, cover).writeto(coverage_path)
    del coverage
    ctx.progress(0.8)
    png = _preview(image, op, ctx)
    ctx.progress(1.0)
    return [
        OutputFile(path=mosaic_path, media_type=FITS, name=op.name),
        OutputFile(path=coverage_path, media_type=FITS, name=f"{op.name}.coverage"),
        png,
    ]


# -- plan ------------------------------------------------------------------------------------


def _input_grid(
    item: InputFile, ctx: OpContext, units: set[str | None]
) -> tuple[WCS, tuple[int, int]]:
    info = check_input(item, ctx.limits)
    if info.media_type != FITS:
        raise UsageError(f"input {item.name!r} is {info.media_type}, not FITS: mosaic reads FITS")
    with open_fits(item, ctx) as hdul:
        plane = science_plane(hdul, item)
        if plane.wcs is None:
            raise UsageError(f"input {item.name!r} has no celestial WCS: it cannot be placed")
        bunit = plane.hdu.header.get("BUNIT")
        units.add(str(bunit).strip() if bunit is not None else None)
        ny, nx = plane.shape[-2:]
        return plane.celestial, (ny, nx)


def _grid(doc: Shared) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header.fromstring(doc.header))


def _shifted(wcs: WCS, box: Box) -> WCS:
    """The WCS of the box: the grid's, with pixel (0, 0) at the box's corner."""
    out = wcs.deepcopy()
    out.wcs.crpix = [wcs.wcs.crpix[0] - box.x0, wcs.wcs.crpix[1] - box.y0]
    out.wcs.set()
    return out


# -- combine ---------------------------------------------------------------------------------


class _Piece(NamedTuple):
    path: Path
    box: Box


def _piece(files: list[InputFile], doc: Shared) -> _Piece:
    if len(files) != 1:
        raise FatalError(f"a mosaic task left {len(files)} files, not one")
    path = files[0].path
    try:
        header = fits.getheader(path)
        x0, y0 = int(header["MOSX0"]), int(header["MOSY0"])
        box = Box(x0, y0, x0 + int(header["NAXIS1"]), y0 + int(header["NAXIS2"]))
    except (OSError, KeyError, ValueError) as e:
        raise FatalError(f"a mosaic part cannot be read: {e}") from e
    if box.x0 < 0 or box.y0 < 0 or box.x1 > doc.shape[1] or box.y1 > doc.shape[0]:
        raise FatalError(f"a mosaic part lies outside the grid: {tuple(box)}")
    return _Piece(path, box)


@contextmanager
def _part(piece: _Piece) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The part's image and footprint, memory-mapped (read as sliced)."""
    with fits.open(piece.path, memmap=True) as hdul:
        yield hdul[0].data, hdul["FOOTPRINT"].data


def _rows(piece: _Piece, y0: int, y1: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(row in the grid, values, weights)`` blocks of the part's rows within ``[y0, y1)``:
    native float32, values 0 where the weight is 0 (or the value is not finite)."""
    lo, hi = max(y0, piece.box.y0), min(y1, piece.box.y1)
    with _part(piece) as (image, footprint):
        for start in range(lo, hi, _ROWS):
            stop = min(start + _ROWS, hi)
            rows = slice(start - piece.box.y0, stop - piece.box.y0)
            values = np.asarray(image[rows], dtype=np.float32)
            weights = np.asarray(footprint[rows], dtype=np.float32)
            bad = ~np.isfinite(values)
            values[bad] = 0.0
            weights[bad] = 0.0
            yield start, values, weights


def _accumulate(
    pieces: list[_Piece], shape: tuple[int, int], ctx: OpContext, *, mean: bool
) -> tuple[np.ndarray, np.ndarray]:
    total = np.zeros(shape, np.float32)
    weight = np.zeros(shape, np.float32)
    for done, piece in enumerate(pieces, 1):
        cols = slice(piece.box.x0, piece.box.x1)
        for start, values, weights in _rows(piece, 0, shape[0]):
            rows = slice(start, start + values.shape[0])
            values *= weights
            total[rows, cols] += values
            weight[rows, cols] += weights
        ctx.progress(0.6 * done / len(pieces))
    empty = weight <= 0
    if mean:
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(total, weight, out=total)
    total[empty] = np.nan
    return total, weight


def _median(
    pieces: list[_Piece], shape: tuple[int, int], ctx: OpContext
) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    image = np.full(shape, np.nan, np.float32)
    weight = np.zeros(shape, np.float32)
    step = max(1, _MEDIAN_BYTES // (4 * nx * max(1, len(pieces))))
    for y0 in range(0, ny, step):
        y1 = min(ny, y0 + step)
        reaching = [p for p in pieces if p.box.y0 < y1 and p.box.y1 > y0]
        if not reaching:
            continue
        stack = np.full((len(reaching), y1 - y0, nx), np.nan, np.float32)
        for layer, piece in zip(stack, reaching, strict=True):
            cols = slice(piece.box.x0, piece.box.x1)
            for start, values, weights in _rows(piece, y0, y1):
                rows = slice(start - y0, start - y0 + values.shape[0])
                weight[start : start + values.shape[0], cols] += weights
                layer[rows, cols] = np.where(weights > 0, values, np.nan)
        image[y0:y1] = nanmedian0(stack)
        ctx.progress(0.6 * y1 / ny)
    return image, weight


def nanmedian0(stack: np.ndarray) -> np.ndarray:
    """The median along axis 0 of the finite values (NaN where there are none), as
    ``np.nanmedian`` but without its warnings, and fast for a few layers."""
    ordered = np.sort(stack, axis=0)  # NaNs sort last
    count = np.isfinite(stack).sum(axis=0)
    low = np.take_along_axis(ordered, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    high = np.take_along_axis(ordered, (count // 2)[None], axis=0)[0]
    out: np.ndarray = ((low + high) / 2).astype(np.float32, copy=False)
    out[count == 0] = np.nan
    return out


def _provenance(header: fits.Header, op: Mosaic, doc: Shared, *, bunit: bool = True) -> None:
    if bunit and doc.bunit:
        header["BUNIT"] = doc.bunit
    header["NINPUTS"] = (len(doc.inputs), "inputs combined")
    for index, source in enumerate(doc.inputs[:999], 1):
        header[f"INPUT{index:03d}"] = source
    header["COMBINE"] = (op.combine, "how overlapping inputs combine")
    header["INTERP"] = (op.interpolation, "interpolation of the reprojection")
    header["ORIGIN"] = "pixfleet"
    header["CREATOR"] = (f"pixfleet {_version()}", "software that made this file")
    header["DATE"] = (datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "UTC, file creation")


def _version() -> str:
    try:
        return metadata.version("pixfleet")
    except metadata.PackageNotFoundError:
        return "unknown"


def _preview(image: np.ndarray, op: Mosaic, ctx: OpContext) -> OutputFile:
    """The preview PNG; stretches ``image`` in place (it is written already)."""
    values = stretch.apply(image, op.preview, *stretch.limits(image, op.preview), out=image)
    # FITS row 0 is the bottom: render the rows reversed, so +y is up.
    pixels = render(values[::-1], "gray", "transparent", alpha=True)
    picture = Picture(pixels=pixels, name=op.name, source_type=FITS)
    return write(picture, ctx, Convert(format="png", metadata="strip", compression=_PNG_LEVEL))
