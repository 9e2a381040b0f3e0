"""Benchmark the thumbnail operation on a 12 MP camera-like JPEG.

Prints the median and p95 time of ``thumbnail()`` to 256 px WebP and JPEG, the same for a full
decode (``cv2.imread`` + INTER_AREA) for comparison, and the peak RSS of each. Every
measurement runs in a fresh process, as a worker child would, so the peaks do not mix.
Run: ``.venv/bin/python loadtests/bench_thumbnail.py [--runs 30] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def make_camera_jpeg(path: Path, width: int = 4000, height: int = 3000) -> None:
    """Write a JPEG with the statistics of a photo: smooth gradients, shapes, sensor noise."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.dstack([
        120 + 80 * np.sin(x / 700) * np.cos(y / 500),
        110 + 90 * (x / width) - 40 * (y / height),
        90 + 70 * np.cos((x + y) / 900),
    ])  # fmt: skip
    for _ in range(40):  # edges, like objects in a scene
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        colour = tuple(float(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(40, 400)), colour, -1, cv2.LINE_AA)
    image += rng.normal(0, 4, image.shape).astype(np.float32)  # sensor noise
    ok, buf = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])  # fmt: skip
    assert ok
    path.write_bytes(buf.tobytes())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(kind: str, source: str, runs: int, threads: int) -> dict[str, float]:
    """Time ``runs`` calls of one kind of work in this (fresh) process."""
    import cv2

    from contracts.ops import Thumbnail
    from worker.ops.api import InputFile, LocalContext
    from worker.ops.thumbnail import thumbnail

    cv2.setNumThreads(threads)
    path = Path(source)
    work: Callable[[], object]
    with tempfile.TemporaryDirectory() as out:
        if kind == "full decode":

            def work() -> object:
                image = cv2.imread(source, cv2.IMREAD_COLOR)
                return cv2.resize(image, (256, 192), interpolation=cv2.INTER_AREA)

        else:
            op = Thumbnail(size=256, format=kind.split()[-1], quality=85)  # type: ignore[arg-type]
            ctx = LocalContext(workdir=Path(out))

            def work() -> object:
                return thumbnail(op, [InputFile(path, "image/jpeg", "bench")], ctx)

        before = _peak_rss_mb()
        work()  # warm up: first-call allocations and lazy initialisation
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            work()
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "median": statistics.median(times),
        "p95": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "rss_before": before,
        "rss_peak": _peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (a child's)")
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "camera.jpg"
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            pool.submit(make_camera_jpeg, source).result()
        print(f"source: 4000x3000 JPEG q90, {source.stat().st_size / 1e6:.1f} MB;"
              f" {args.runs} runs, {args.threads} OpenCV thread(s)")  # fmt: skip
        print(f"{'work':<22}{'median ms':>10}{'p95 ms':>10}{'RSS MB before/peak':>22}")
        for kind in ("thumbnail 256 webp", "thumbnail 256 jpeg", "full decode"):
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                r = pool.submit(_measure, kind, str(source), args.runs, args.threads).result()
            label = kind if kind != "full decode" else "full decode+resize"
            print(f"{label:<22}{r['median']:>10.1f}{r['p95']:>10.1f}"
                  f"{r['rss_before']:>12.0f} / {r['rss_peak']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
