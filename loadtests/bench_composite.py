"""Benchmark the ``composite`` operation against astropy's ``make_lupton_rgb`` + a PNG encode.

Data: three float32 channels of ``--size`` (default 4096) squared, the filters of one synthetic
field (``tests.astrodata.make_channels``), written once under
``~/.cache/pixfleet-test-data/synthetic/``. Contenders, each in a fresh process (as a worker
child), ``--runs`` runs each (default 3; every run is printed, the first one pays the
process's first large allocations):

- ``ours lupton``: the ``composite`` op end to end (read the three FITS files, Lupton with
  per-channel minima, PNG, write the file);
- ``ours additive``: the same with three coloured channels (default scaling: zscale, asinh);
- ``astropy lupton``: ``fits.getdata`` of the same files, ``make_lupton_rgb`` with the same
  parameters, flip to north up and RGB -> BGR, ``cv2.imencode(".png")`` (OpenCV's default
  parameters) and write the file; its phases are timed too.

Prints the median and each run in seconds, and the peak RSS above the process's baseline (after
imports). Checks that our Lupton PNG holds exactly astropy's pixels. ``--png`` adds a table of
PNG parameters (time and size) on both of our outputs.

Run: ``.venv/bin/python loadtests/bench_composite.py [--runs 3] [--size 4096] [--png]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.astrodata writes the synthetic channels

# make_channels' sky: a background of 100 per pixel times 1 + 0.25 k (channel k) under sources
# of up to a few thousand: the minima sit at the background, the stretch shows the faint ones.
LUPTON = {"minimum": [100.0, 125.0, 150.0], "stretch": 100.0, "Q": 8.0}
COLOURS = ["#0000ff", "#00ff00", "#ff0000"]  # g, r, i as blue, green, red
CHANNELS_VERSION = "v1"  # bump when make_channels' output changes: the cache is rebuilt


def channels(size: int) -> list[Path]:
    """The cached channel files, written once (into a temporary folder, then renamed)."""
    from tests.astrodata import make_channels
    from tests.fetch_images import default_cache_dir

    folder = default_cache_dir() / "synthetic" / f"channels_{size}_{CHANNELS_VERSION}"
    paths = [folder / f"channel_{k}.fits" for k in range(3)]
    if all(p.is_file() for p in paths):
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        make_channels(tmp, n=3, size=size)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, MB. Not ``ru_maxrss``: Linux keeps
    that across exec, so a spawned process starts with its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_ours(mode: str, paths: list[str], runs: int, keep: str) -> dict[str, Any]:
    """Time the op in this (fresh) process; the last output is copied to ``keep``."""
    from contracts.astro import Channel, Composite, Lupton
    from worker.ops.api import InputFile, LocalContext
    from worker.ops.composite import composite

    if mode == "lupton":
        op = Composite(lupton=Lupton(**LUPTON))  # type: ignore[arg-type]
    else:
        op = Composite(channels=[Channel(colour=c) for c in COLOURS])
    items = [InputFile(Path(p), "application/fits", Path(p).stem) for p in paths]
    before = _memory_mb("VmRSS")
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            ctx = LocalContext(workdir=Path(out))
            start = time.perf_counter()
            [result] = composite(op, items, ctx)
            times.append(time.perf_counter() - start)
            shutil.copy(result.path, keep)
    return {"times": times, "peak": _memory_mb("VmHWM") - before}


def run_astropy(paths: list[str], runs: int, ours: str) -> dict[str, Any]:
    """Time load + make_lupton_rgb + PNG in this (fresh) process; compare with our PNG."""
    import cv2
    import numpy as np
    from astropy.io import fits
    from astropy.visualization import make_lupton_rgb

    before = _memory_mb("VmRSS")
    times, phases = [], {"load": [], "make_lupton_rgb": [], "encode + write": []}
    rgb = None
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            data = [fits.getdata(p) for p in paths]
            loaded = time.perf_counter()
            with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rgb = make_lupton_rgb(*data, **LUPTON)
            mapped = time.perf_counter()
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[::-1, :, ::-1]))
            assert ok
            (Path(out) / "astropy.png").write_bytes(buf.tobytes())
            end = time.perf_counter()
        times.append(end - start)
        phases["load"].append(loaded - start)
        phases["make_lupton_rgb"].append(mapped - loaded)
        phases["encode + write"].append(end - mapped)
        del data
    peak = _memory_mb("VmHWM") - before
    mine = cv2.imread(ours, cv2.IMREAD_UNCHANGED)[::-1, :, ::-1]
    assert rgb is not None
    differ = int(np.any(mine != rgb, axis=2).sum())
    return {"times": times, "peak": peak, "phases": phases, "differ": differ, "pixels": rgb.shape}


def png_table(images: dict[str, str]) -> None:
    """Encode each image with several PNG parameter sets: seconds and megabytes."""
    import cv2

    from worker.ops.composite import PNG_PARAMS

    strategies = {"default": cv2.IMWRITE_PNG_STRATEGY_DEFAULT, "rle": cv2.IMWRITE_PNG_STRATEGY_RLE}
    filters = {
        "sub": cv2.IMWRITE_PNG_FILTER_SUB,
        "up": cv2.IMWRITE_PNG_FILTER_UP,
        "paeth": cv2.IMWRITE_PNG_FILTER_PAETH,
        "all": cv2.IMWRITE_PNG_ALL_FILTERS,
    }
    sets: dict[str, list[int]] = {"ours (PNG_PARAMS)": PNG_PARAMS, "opencv default": []}
    for level in (1, 3, 6):
        for sname, strategy in strategies.items():
            for fname, flt in filters.items():
                sets[f"level {level} {sname} {fname}"] = [
                    cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy,
                    cv2.IMWRITE_PNG_FILTER, flt,
                ]  # fmt: skip
    print(
        f"\n| {'PNG parameters':<26}|"
        + "".join(f" {n + ' s':>14} | {n + ' MB':>14} |" for n in images)
    )
    print(f"|{'-' * 27}|" + f"{'-' * 16}|{'-' * 16}|" * len(images))
    pixels = {name: cv2.imread(path, cv2.IMREAD_UNCHANGED) for name, path in images.items()}
    for label, params in sets.items():
        cells = []
        for image in pixels.values():
            best, size = float("inf"), 0
            for _ in range(2):
                start = time.perf_counter()
                _ok, buf = cv2.imencode(".png", image, params)
                best = min(best, time.perf_counter() - start)
                size = len(buf)
            cells.append(f" {best:>14.3f} | {size / 1e6:>14.2f} |")
        print(f"| {label:<26}|" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--png", action="store_true", help="also compare PNG parameters")
    args = parser.parse_args()
    paths = [str(p) for p in channels(args.size)]
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        kept = {mode: str(Path(tmp) / f"{mode}.png") for mode in ("lupton", "additive")}
        results = {}
        for mode in ("lupton", "additive"):
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                results[f"ours {mode} -> PNG"] = pool.submit(
                    run_ours, mode, paths, args.runs, kept[mode]
                ).result()
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            reference = pool.submit(run_astropy, paths, args.runs, kept["lupton"]).result()
        results["astropy make_lupton_rgb -> PNG"] = reference
        print(f"3 x {args.size}^2 float32 channels ({Path(paths[0]).parent}); lupton {LUPTON};")
        print(f"{args.runs} runs each, each contender in a fresh process\n")
        head = f"| {'contender':<32}| {'median s':>8} | {'runs s':<22}| {'peak MB':>7} |"
        print(head + f" {'PNG MB':>6} |")
        print(f"|{'-' * 33}|{'-' * 10}|{'-' * 23}|{'-' * 9}|{'-' * 8}|")
        sizes = {name: Path(kept[name.split()[1]]).stat().st_size / 1e6 for name in results
                 if name.startswith("ours")}  # fmt: skip
        for name, r in results.items():
            runs = " ".join(f"{t:.3f}" for t in r["times"])
            size = f"{sizes[name]:>6.2f}" if name in sizes else f"{'':>6}"
            print(f"| {name:<32}| {statistics.median(r['times']):>8.3f} | {runs:<22}|"
                  f" {r['peak']:>7.0f} | {size} |")  # fmt: skip
        for phase, times in reference["phases"].items():
            print(f"|   astropy: {phase:<21}| {statistics.median(times):>8.3f} |")
        print(f"\nours lupton vs make_lupton_rgb: {reference['differ']} of"
              f" {reference['pixels'][0] * reference['pixels'][1]} pixels differ")  # fmt: skip
        if args.png:
            png_table(kept)


if __name__ == "__main__":
    main()
