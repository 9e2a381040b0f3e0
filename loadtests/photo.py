"""A small photo-like JPEG, and what one operation on it costs inside a fresh process.

``photo_jpeg`` is deterministic (seeded): smooth lighting, shapes with soft edges, texture at
several scales and sensor noise, so the entropy-coded size and the decode time resemble a
phone picture scaled down, not a synthetic gradient. ``op_cost`` times ``run_pipeline([op])``
(decode, the op, encode, write: a worker child's code path) in a spawned process with one
OpenCV thread, as ``bench_ops.py`` does, and gives wall and CPU milliseconds.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def photo_jpeg(width: int = 640, height: int = 480, quality: int = 90, seed: int = 7) -> bytes:
    """A JPEG with the statistics of a photo (deterministic for a given OpenCV)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    w, h = float(width), float(height)
    image = np.dstack([
        125 + 70 * np.sin(x / (0.35 * w)) * np.cos(y / (0.3 * h)),
        105 + 80 * (x / w) - 35 * (y / h),
        95 + 60 * np.cos((x + y) / (0.45 * (w + h))),
    ])  # fmt: skip
    for _ in range(14):  # objects: soft-edged discs and boxes
        colour = tuple(float(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(width)), int(rng.integers(height))
        r = int(rng.integers(max(2, width // 30), max(3, width // 5)))
        if rng.random() < 0.5:
            cv2.circle(image, (cx, cy), r, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(image, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
    for scale, amplitude in ((16.0, 14.0), (4.0, 9.0), (1.2, 6.0)):  # foliage, fabric, grain
        noise = rng.normal(0, 1, (height, width, 3)).astype(np.float32)
        texture = np.asarray(cv2.GaussianBlur(noise, (0, 0), scale), dtype=np.float32)
        image += amplitude * texture / max(float(texture.std()), 1e-6)
    image += rng.normal(0, 3, image.shape).astype(np.float32)  # sensor noise
    ok, buf = cv2.imencode(
        ".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return bytes(buf.tobytes())


def _time_op(source: str, op_json: dict[str, Any], runs: int) -> tuple[list[float], list[float]]:
    """In this (fresh) process: wall and CPU ms of ``runs`` runs after one warm-up."""
    import shutil

    import cv2
    import msgspec

    from contracts.ops import OpCatalog
    from worker.ops.api import InputFile, LocalContext
    from worker.runtime.pipeline import run_pipeline

    cv2.setNumThreads(1)
    op = msgspec.convert(op_json, OpCatalog().union)
    item = InputFile(Path(source), "image/jpeg", "bench")
    wall, cpu = [], []
    with tempfile.TemporaryDirectory() as out:
        ctx = LocalContext(workdir=Path(out))
        for i in range(runs + 1):
            w0, c0 = time.perf_counter(), time.process_time()
            run_pipeline([op], [item], ctx)
            w1, c1 = time.perf_counter(), time.process_time()
            for child in Path(out).iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            if i:  # the first run warms caches and lazy initialisation
                wall.append((w1 - w0) * 1000)
                cpu.append((c1 - c0) * 1000)
    return wall, cpu


def op_cost(source: Path, op_json: dict[str, Any], runs: int) -> dict[str, float]:
    """Median and p95 wall ms and median CPU ms of the op on ``source``, in a fresh process."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        wall, cpu = pool.submit(_time_op, str(source), op_json, runs).result()
    wall.sort()
    return {
        "runs": runs,
        "median_ms": round(statistics.median(wall), 3),
        "p95_ms": round(wall[min(len(wall) - 1, round(0.95 * (len(wall) - 1)))], 3),
        "cpu_median_ms": round(statistics.median(cpu), 3),
    }
