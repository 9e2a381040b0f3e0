"""Benchmark every image operation on a 12 MP camera-like JPEG, as a worker child runs it.

Prints one row per operation: median and p95 milliseconds of ``run_pipeline([op])`` (decode,
the operation, encode, exactly the child's code path) and the peak RSS it reached above the
process's baseline; ``denoise`` and ``model`` are also given per megapixel. Every operation
runs in a fresh process, as in a worker child, so the peaks do not mix. ``--smooth`` uses a
low-detail source (entropy decoding, not the DCT, dominates a reduced decode: the time of a
thumbnail follows the file's size more than its pixel count).
Run: ``.venv/bin/python loadtests/bench_ops.py [--runs 15] [--threads 1] [--smooth]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def make_camera_jpeg(path: Path, width: int = 4000, height: int = 3000, noise: float = 4) -> None:
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
    if noise:
        image += rng.normal(0, noise, image.shape).astype(np.float32)  # sensor noise
    ok, buf = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])  # fmt: skip
    assert ok
    path.write_bytes(buf.tobytes())


def make_model(path: Path) -> None:
    """A 3 -> 16 -> 16 -> 3 channel network of 3x3 convolutions with ReLU (a small denoiser)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (cin, cout) in enumerate([(3, 16), (16, 16), (16, 3)]):
        w = numpy_helper.from_array(
            rng.normal(0, 0.1, (cout, cin, 3, 3)).astype(np.float32), f"w{i}"
        )
        b = numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")
        inits += [w, b]
        nodes.append(
            helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1])
        )
        prev = f"c{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes, "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


# label -> (op as JSON, megapixels of the input when the op runs on a crop, else None)
OPS: dict[str, dict[str, Any]] = {
    "thumbnail 256 webp": {"op": "thumbnail", "size": 256, "format": "webp"},
    "thumbnail 256 jpeg": {"op": "thumbnail", "size": 256, "format": "jpeg"},
    "metadata": {"op": "metadata"},
    "convert jpeg q85": {"op": "convert", "format": "jpeg", "quality": 85},
    "convert webp q80": {"op": "convert", "format": "webp"},
    "convert png": {"op": "convert", "format": "png", "compression": 3},
    "convert tiff": {"op": "convert", "format": "tiff"},
    "convert avif q60": {"op": "convert", "format": "avif"},
    "resize 1024 inside": {"op": "resize", "width": 1024},
    "resize 800x800 cover": {"op": "resize", "width": 800, "height": 800, "fit": "cover"},
    "crop 1000x1000": {"op": "crop", "width": 1000, "height": 1000},
    "rotate 90": {"op": "rotate", "angle": 90},
    "rotate 30": {"op": "rotate", "angle": 30, "background": "#ffffff"},
    "flip": {"op": "flip"},
    "filter blur s2": {"op": "filter", "kind": "blur", "sigma": 2},
    "filter median 5": {"op": "filter", "kind": "median", "size": 5},
    "filter unsharp": {"op": "filter", "kind": "unsharp"},
    "filter bilateral 9": {"op": "filter", "kind": "bilateral"},
    "filter grayscale": {"op": "filter", "kind": "grayscale"},
    "filter clahe": {"op": "filter", "kind": "clahe"},
    "denoise (1 MP crop)": {"op": "denoise"},
    "model 3 conv (1 MP crop)": {"op": "model", "name": "bench"},
}
REFERENCE = "full decode + area (reference)"  # what a thumbnail without reduced decoding costs
PER_MP = {"denoise (1 MP crop)", "model 3 conv (1 MP crop)"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(
    label: str, source: str, crop: str, model: str, runs: int, threads: int
) -> dict[str, float]:
    """Time ``runs`` runs of one operation in this (fresh) process."""
    import shutil

    import cv2
    import msgspec

    from contracts.ops import OpCatalog
    from pixfleet.registry.models import LocalModel
    from worker.ops.api import InputFile, LocalContext
    from worker.runtime.pipeline import run_pipeline

    cv2.setNumThreads(threads)
    op = None if label == REFERENCE else msgspec.convert(OPS[label], OpCatalog().union)
    path = Path(crop if label in PER_MP else source)
    item = InputFile(path, "image/jpeg", "bench")
    resources = {
        "model:bench": LocalModel(
            path=Path(model),
            name="bench",
            sha256="0" * 64,
            channels="rgb",
            input_range=1,
            mean=None,
            output_range=1,
            scale=1,
            tile=256,
            overlap=16,
        )
    }
    with tempfile.TemporaryDirectory() as out:
        ctx = LocalContext(workdir=Path(out), resources=resources)

        def work() -> None:
            if op is None:
                image = cv2.imread(source, cv2.IMREAD_COLOR)
                cv2.resize(image, (256, 192), interpolation=cv2.INTER_AREA)
                return
            run_pipeline([op], [item], ctx)
            for child in Path(out).iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()

        before = _peak_rss_mb()
        work()  # warm up: first-call allocations and lazy initialisation
        times = []
        for _ in range(runs if label not in PER_MP else max(3, runs // 5)):
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


def _prepare(tmp: Path, smooth: bool) -> tuple[Path, Path, Path]:
    import cv2

    source, crop, model = tmp / "camera.jpg", tmp / "crop.jpg", tmp / "bench.onnx"
    make_camera_jpeg(source, noise=0 if smooth else 4)
    image = cv2.imread(str(source))
    cv2.imwrite(str(crop), image[:750, :1334], [cv2.IMWRITE_JPEG_QUALITY, 90])  # 1.0 MP
    make_model(model)
    return source, crop, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (a child's)")
    parser.add_argument("--smooth", action="store_true", help="a low-detail source")
    parser.add_argument("--only", help="comma-separated labels (default: all)")
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            source, crop, model = pool.submit(_prepare, Path(tmp), args.smooth).result()
        print(f"source: 4000x3000 JPEG q90{' (smooth)' if args.smooth else ''},"
              f" {source.stat().st_size / 1e6:.1f} MB; {args.runs} runs,"
              f" {args.threads} OpenCV thread(s)")  # fmt: skip
        print(f"| {'operation':<31}| {'median ms':>9} | {'p95 ms':>8} | {'peak MB':>7} |")
        print(f"|{'-' * 32}|{'-' * 11}|{'-' * 10}|{'-' * 9}|")
        labels = args.only.split(",") if args.only else [REFERENCE, *OPS]
        for label in labels:
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                r = pool.submit(
                    _measure, label, str(source), str(crop), str(model), args.runs, args.threads
                ).result()
            peak = r["rss_peak"] - r["rss_before"]
            unit = " (per MP)" if label in PER_MP else ""
            print(f"| {label:<31}| {r['median']:>9.1f} | {r['p95']:>8.1f} | {peak:>7.0f} |{unit}")


if __name__ == "__main__":
    main()
