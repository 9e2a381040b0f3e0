"""Benchmark the ``mosaic`` operation against ``reproject``'s own mosaicking.

Four 2048 x 2048 synthetic TAN tiles of one sky (``tests.astrodata.make_tiles``, cached under
``<test data cache>/synthetic/``) are combined by mean: ours as the fan-out runtime runs it
(plan, one task per tile, combine), each step in a fresh process as a worker child runs it
(imports done, one OpenCV and BLAS thread); the reference is
``reproject.mosaicking.reproject_and_coadd`` with ``reproject_interp`` (bilinear) on the same
output grid, in a fresh process too. Prints per step the seconds and the peak RSS
(``ru_maxrss`` of that process, and above the process's baseline after imports), the total
when the tasks run one after another, and the critical path when they run in parallel on
separate workers (plan + slowest task + combine); then how far the two mosaics differ.

Run: ``.venv/bin/python loadtests/bench_mosaic.py [--size 2048] [--runs 3] [--no-reference]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.astrodata, when run as a script

TILES_VERSION = "mosaic tiles v1"  # bump when the tiles' content changes


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _single_thread() -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    import cv2

    cv2.setNumThreads(1)


def tiles(size: int, seed: int = 11) -> list[Path]:
    """The four tiles, written once under the test data cache."""
    from tests.astrodata import make_tiles
    from tests.fetch_images import default_cache_dir

    folder = default_cache_dir() / "synthetic" / f"mosaic_tiles_{size}_{seed}"
    stamp = folder / "COMPLETE"
    expected = f"{TILES_VERSION} size {size} seed {seed}"
    if stamp.is_file() and stamp.read_text() == expected:
        return sorted(folder.glob("tile_*.fits"))
    folder.mkdir(parents=True, exist_ok=True)
    paths, _ = make_tiles(folder, n=4, size=size, seed=seed)
    stamp.write_text(expected)
    return paths


def _step(kind: str, work: str, index: int = 0) -> dict[str, Any]:
    """One step of our mosaic in this (fresh) process; files and bytes under ``work``."""
    _single_thread()
    import msgspec

    from contracts.astro import Mosaic
    from worker.ops import mosaic
    from worker.ops.api import InputFile, LocalContext

    folder = Path(work)
    op = Mosaic()
    inputs = [
        InputFile(path=Path(p), media_type="application/fits", name=Path(p).stem)
        for p in (folder / "inputs.txt").read_text().split()
    ]
    ctx = LocalContext(workdir=folder / f"{kind}{index}")
    ctx.workdir.mkdir()
    baseline = _rss_mb()
    start = time.perf_counter()
    if kind == "plan":
        plan = mosaic.plan(op, inputs, ctx)
        seconds = time.perf_counter() - start
        (folder / "shared").write_bytes(plan.shared)
        for k, task in enumerate(plan.tasks):
            (folder / f"payload{k}").write_bytes(task.payload)
            (folder / f"inputs{k}").write_text(" ".join(str(i) for i in task.inputs))
        return {"seconds": seconds, "peak": _rss_mb(), "baseline": baseline}
    shared = (folder / "shared").read_bytes()
    if kind == "task":
        payload = (folder / f"payload{index}").read_bytes()
        mine = [inputs[int(i)] for i in (folder / f"inputs{index}").read_text().split()]
        [part] = mosaic.reproject_input(op, shared, payload, mine, ctx)
        seconds = time.perf_counter() - start
        (folder / f"part{index}").write_text(str(part.path))
        return {"seconds": seconds, "peak": _rss_mb(), "baseline": baseline}
    n = len(msgspec.json.decode(shared)["inputs"])
    parts = [
        [InputFile(Path((folder / f"part{k}").read_text()), "application/fits", f"part{k}")]
        for k in range(n)
    ]
    out = mosaic.combine(op, shared, parts, ctx)
    seconds = time.perf_counter() - start
    (folder / "mosaic").write_text(str(out[0].path))
    return {"seconds": seconds, "peak": _rss_mb(), "baseline": baseline}


def _reference(work: str) -> dict[str, Any]:
    """``reproject_and_coadd`` with ``reproject_interp`` on our grid, in this fresh process."""
    _single_thread()
    import msgspec
    from astropy.io import fits
    from astropy.wcs import WCS
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    folder = Path(work)
    doc = msgspec.json.decode((folder / "shared").read_bytes())
    wcs = WCS(fits.Header.fromstring(doc["header"]))
    paths = (folder / "inputs.txt").read_text().split()
    baseline = _rss_mb()
    start = time.perf_counter()
    image, _footprint = reproject_and_coadd(
        paths,
        wcs,
        shape_out=tuple(doc["shape"]),
        reproject_function=reproject_interp,
        combine_function="mean",
        order="bilinear",
    )
    seconds = time.perf_counter() - start
    fits.PrimaryHDU(image.astype("float32")).writeto(folder / "reference.fits")
    return {"seconds": seconds, "peak": _rss_mb(), "baseline": baseline}


def _fresh(fn: Any, *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _ours(paths: list[Path], work: Path) -> dict[str, dict[str, Any]]:
    (work / "inputs.txt").write_text(" ".join(str(p) for p in paths))
    rows = {"plan": _fresh(_step, "plan", str(work))}
    for k in range(len(paths)):
        rows[f"task {k}"] = _fresh(_step, "task", str(work), k)
    rows["combine"] = _fresh(_step, "combine", str(work))
    return rows


def _difference(work: Path) -> str:
    import numpy as np
    from astropy.io import fits

    ours = fits.getdata((work / "mosaic").read_text()).astype(np.float32)
    ref = fits.getdata(work / "reference.fits").astype(np.float32)
    ref[ref == 0] = np.nan  # reproject_and_coadd leaves 0 where nothing covers
    both = np.isfinite(ours) & np.isfinite(ref)
    rel = np.abs(ours[both] - ref[both]) / np.abs(ref[both])
    differ = int((np.isfinite(ours) != np.isfinite(ref)).sum())
    return (
        f"ours vs reference: median relative difference {np.median(rel):.2e}, "
        f"99th percentile {np.percentile(rel, 99):.2e}; {differ} pixels covered by one only"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="tile side, pixels")
    parser.add_argument("--runs", type=int, default=3, help="runs of ours (median taken)")
    parser.add_argument("--no-reference", action="store_true", help="skip reproject's")
    args = parser.parse_args()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = pool.submit(tiles, args.size).result()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            work = Path(tmp) / f"run{run}"
            work.mkdir()
            runs.append(_ours(paths, work))
        steps = list(runs[0])
        rows = {
            step: {
                "seconds": statistics.median(r[step]["seconds"] for r in runs),
                "peak": max(r[step]["peak"] for r in runs),
                "baseline": min(r[step]["baseline"] for r in runs),
            }
            for step in steps
        }
        shape = json.loads((work / "shared").read_bytes())["shape"]
        print(
            f"4 tiles of {args.size} x {args.size} float32 -> mosaic {shape[1]} x {shape[0]}"
            f" (mean); one thread; median of {args.runs} run(s)"
        )
        print(f"| {'step':<34}| {'seconds':>8} | {'peak MiB':>8} | {'above base':>10} |")
        print(f"|{'-' * 35}|{'-' * 10}|{'-' * 10}|{'-' * 12}|")
        for step, row in rows.items():
            print(
                f"| ours: {step:<28}| {row['seconds']:>8.2f} | {row['peak']:>8.0f} |"
                f" {row['peak'] - row['baseline']:>10.0f} |"
            )
        tasks = [rows[s] for s in steps if s.startswith("task")]
        plan, combine = rows["plan"]["seconds"], rows["combine"]["seconds"]
        sequential = plan + sum(t["seconds"] for t in tasks) + combine
        parallel = plan + max(t["seconds"] for t in tasks) + combine
        peak = max(r["peak"] for r in rows.values())
        print(
            f"| ours: total, tasks one by one     | {sequential:>8.2f} | {peak:>8.0f} | {'':>10} |"
        )
        print(f"| ours: plan, slowest task, combine | {parallel:>8.2f} | {peak:>8.0f} | {'':>10} |")
        if not args.no_reference:
            ref = _fresh(_reference, str(work))
            print(
                f"| reproject_and_coadd (interp)      | {ref['seconds']:>8.2f} |"
                f" {ref['peak']:>8.0f} | {ref['peak'] - ref['baseline']:>10.0f} |"
            )
            print(_difference(work))


if __name__ == "__main__":
    main()
