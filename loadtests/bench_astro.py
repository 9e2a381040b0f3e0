"""Benchmark the astronomy operations against the astropy-ecosystem tools doing the same job.

One section per operation, run as a subcommand; each prints the median and p95 milliseconds of
every contender over ``--runs`` runs (after ``--warmup`` runs that are not counted), in this
process (the worker child's code path, without its process start).

- ``cutout``: a SODA circle (``--radius`` arcseconds, default 30) at a few positions of an
  8192 x 8192 float32 TAN field at 0.2"/px (``tests.astrodata.big_field``, written once into
  the test-data cache). Contenders: our ``cutout`` op end to end (open, geometry, read, write
  the output FITS); ``astropy.nddata.Cutout2D`` on the memory-mapped file (open, WCS, cut;
  and the same plus writing the cut and its WCS to a FITS file); ``astrocut.fits_cut`` (open,
  cut, write). All three cut the same pixel box (printed, and checked).

Run: ``.venv/bin/python loadtests/bench_astro.py cutout [--runs 30] [--radius 30]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.astrodata writes the synthetic fields

# Offsets (degrees east, north) of the cutout centres from the big field's centre.
CUTOUT_OFFSETS = ((0.0, 0.0), (-0.1, 0.08), (0.12, -0.05), (0.05, 0.15), (-0.17, -0.12))


def timed(run: Callable[[int], Any], runs: int, warmup: int) -> tuple[float, float]:
    """Median and p95 milliseconds of ``run(i)`` for i in range(runs), after ``warmup`` runs."""
    for i in range(warmup):
        run(i)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        run(i)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def print_rows(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(title)
    print(f"| {'contender':<47}| {'median ms':>9} | {'p95 ms':>8} |")
    print(f"|{'-' * 48}|{'-' * 11}|{'-' * 10}|")
    for label, median, p95 in rows:
        print(f"| {label:<47}| {median:>9.2f} | {p95:>8.2f} |")


def bench_cutout(args: argparse.Namespace) -> None:
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    from contracts.astro import Circle, Cutout
    from tests.astrodata import big_field, from_tangent
    from worker.ops.api import InputFile, LocalContext
    from worker.ops.cutout import cutout

    path = big_field()
    with fits.open(path) as hdul:
        header = hdul[0].header
        centre = (float(header["CRVAL1"]), float(header["CRVAL2"]))
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    positions = [tuple(float(v) for v in from_tangent(centre, dx, dy)) for dx, dy in CUTOUT_OFFSETS]
    radius = args.radius / 3600.0
    size = 2 * args.radius * u.arcsec
    item = InputFile(path=path, media_type="application/fits", name="big")
    print(
        f'field: {shape[1]} x {shape[0]} float32 TAN at 0.2"/px ({path.stat().st_size / 1e6:.0f}'
        f' MB); CIRCLE r = {args.radius:g}" at {len(positions)} positions; {args.runs} runs'
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def ours(i: int) -> None:
            ra, dec = positions[i % len(positions)]
            op = Cutout(stencils=[Circle(ra=ra, dec=dec, radius=radius)])
            (written,) = cutout(op, [item], LocalContext(workdir=out))
            written.path.unlink()

        def astropy_cut(i: int, write: bool) -> None:
            ra, dec = positions[i % len(positions)]
            with fits.open(path, memmap=True) as hdul:
                hdu = hdul[0]
                wcs = WCS(hdu.header)
                cut = Cutout2D(hdu.data, SkyCoord(ra, dec, unit="deg"), size, wcs=wcs, mode="trim")
                if write:
                    target = out / "cutout2d.fits"
                    fits.PrimaryHDU(cut.data, cut.wcs.to_header()).writeto(target, overwrite=True)

        def astrocut_cut(i: int) -> None:
            from astrocut import fits_cut

            ra, dec = positions[i % len(positions)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                written = fits_cut(
                    [str(path)],
                    SkyCoord(ra, dec, unit="deg"),
                    cutout_size=size,
                    output_dir=str(out),
                    single_outfile=True,
                )
            Path(written).unlink()

        _check_same_box(path, positions[1], radius, size, out, item)
        rows = [
            ("pixfleet cutout (open, geometry, read, write)", *timed(ours, args.runs, args.warmup)),
            (
                "astropy Cutout2D (open, WCS, cut)",
                *timed(lambda i: astropy_cut(i, False), args.runs, args.warmup),
            ),
            (
                "astropy Cutout2D + write FITS",
                *timed(lambda i: astropy_cut(i, True), args.runs, args.warmup),
            ),
            ("astrocut fits_cut (open, cut, write)", *timed(astrocut_cut, args.runs, args.warmup)),
        ]
    print_rows("cutout", rows)


def _check_same_box(
    path: Path, position: tuple[float, float], radius: float, size: Any, out: Path, item: Any
) -> None:
    """Print the shapes the contenders cut at one position; stop if they differ."""
    import numpy as np
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    from contracts.astro import Circle, Cutout
    from worker.ops.api import LocalContext
    from worker.ops.cutout import cutout

    op = Cutout(stencils=[Circle(ra=position[0], dec=position[1], radius=radius)])
    (written,) = cutout(op, [item], LocalContext(workdir=out))
    with fits.open(written.path) as ours, fits.open(path, memmap=True) as hdul:
        cut = Cutout2D(hdul[0].data, SkyCoord(*position, unit="deg"), size, wcs=WCS(hdul[0].header))
        same = np.array_equal(ours[1].data, cut.data)
        print(f"boxes: pixfleet {ours[1].data.shape}, Cutout2D {cut.data.shape}; same: {same}")
    written.path.unlink()
    if not same:
        raise SystemExit("the contenders cut different boxes: the comparison is not fair")


SECTIONS: dict[str, tuple[Callable[[argparse.Namespace], None], Callable[[Any], None]]] = {}
"""Subcommand -> (benchmark, adds the subcommand's options to its parser)."""


def _cutout_options(parser: Any) -> None:
    parser.add_argument("--radius", type=float, default=30.0, help="arcseconds")


SECTIONS["cutout"] = (bench_cutout, _cutout_options)


def main() -> None:
    logging.getLogger("astrocut").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="section", required=True)
    for name, (_, add_options) in SECTIONS.items():
        section = sub.add_parser(name)
        section.add_argument("--runs", type=int, default=30)
        section.add_argument("--warmup", type=int, default=3)
        add_options(section)
    args = parser.parse_args()
    SECTIONS[args.section][0](args)


if __name__ == "__main__":
    main()
