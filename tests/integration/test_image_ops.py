"""Image operations end to end: real edge, RabbitMQ, PostgreSQL, ``pixfleet worker`` processes.

Each result is fetched through its signed URL, decoded and compared with a reference computed
here with OpenCV or Pillow on the same source.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import (
    FINAL,
    Client,
    fetch_result,
    queue_depth,
    run_pixfleet,
    submit,
    upload,
    wait_for,
)
from tests.hostile import corrupt_huffman_jpeg
from tests.images import photo

pytestmark = pytest.mark.slow


def gps_photo(width: int = 900, height: int = 600, orientation: int = 6) -> bytes:
    """A JPEG with camera EXIF, GPS and a rotated orientation."""
    img = Image.open(io.BytesIO(photo(width, height, "JPEG")))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Pixcam", "PX-1", orientation
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.0), 3: "W", 4: (2.0, 17.0, 40.0)})
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def upright_reference(data: bytes) -> np.ndarray[Any, Any]:
    """The source as a viewer shows it (OpenCV applies the EXIF orientation by default)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def decode(data: bytes) -> np.ndarray[Any, Any]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def mean_diff(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


async def run_jobs(
    client: Client, headers: dict[str, str], inputs: list[str], pipelines: dict[str, list[Any]]
) -> dict[str, dict[str, Any]]:
    """Submit one job per pipeline; return the final snapshots by key."""
    jobs = {k: await submit(client, headers, inputs, p) for k, p in pipelines.items()}
    done = await asyncio.gather(
        *(wait_for(client, j["href"], headers, FINAL, timeout=90) for j in jobs.values())
    )
    return dict(zip(jobs, done, strict=True))


async def result_bytes(client: Client, headers: dict[str, str], job: dict[str, Any]) -> bytes:
    assert job["phase"] == "COMPLETED", job
    [result] = job["results"]
    return await fetch_result(client, headers, result)


async def test_standard_operations_end_to_end(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker(slots=2)
    source = gps_photo()
    up = await upload(client, alice, source)
    ref = upright_reference(source)  # 600 x 900 after orientation 6
    h, w = ref.shape[:2]
    done = await run_jobs(
        client,
        alice,
        [up],
        {
            "png": [{"op": "convert", "format": "png"}],
            "webp": [{"op": "convert", "format": "webp", "lossless": True}],
            "tiff": [{"op": "convert", "format": "tiff"}],
            "avif": [{"op": "convert", "format": "avif", "quality": 80}],
            "jpeg": [{"op": "convert", "format": "jpeg", "quality": 90, "progressive": True}],
            "gps": [{"op": "convert", "format": "jpeg", "keep_gps": True}],
            "cover": [{"op": "resize", "width": 200, "height": 200, "fit": "cover"}],
            "contain": [
                {"op": "resize", "width": 300, "height": 200, "fit": "contain"},
                {"op": "convert", "format": "png"},
            ],
            "crop": [{"op": "crop", "x": 10, "y": 20, "width": 100, "height": 50}],
            "rotate90": [{"op": "rotate", "angle": 90}, {"op": "convert", "format": "png"}],
            "rotate30": [{"op": "rotate", "angle": 30}, {"op": "convert", "format": "png"}],
            "flip": [{"op": "flip", "axis": "horizontal"}, {"op": "convert", "format": "png"}],
            "blur": [
                {"op": "filter", "kind": "blur", "sigma": 3},
                {"op": "convert", "format": "png"},
            ],
            "gray": [{"op": "filter", "kind": "grayscale"}, {"op": "convert", "format": "png"}],
            "metadata": [{"op": "metadata"}],
        },
    )
    png = decode(await result_bytes(client, alice, done["png"]))
    assert png.shape == ref.shape and mean_diff(png, ref) < 1.0  # lossless of the same decode
    webp = decode(await result_bytes(client, alice, done["webp"]))
    assert np.array_equal(webp, png)  # lossless WebP: the same pixels as the PNG
    tiff = decode(await result_bytes(client, alice, done["tiff"]))
    assert np.array_equal(tiff, png)
    avif = decode(await result_bytes(client, alice, done["avif"]))
    assert avif.shape == ref.shape and mean_diff(avif, ref) < 4.0
    jpeg_data = await result_bytes(client, alice, done["jpeg"])
    jpeg = Image.open(io.BytesIO(jpeg_data))
    assert jpeg.format == "JPEG" and jpeg.info.get("progressive") and jpeg.size == (w, h)
    exif = jpeg.getexif()
    assert exif[0x010F] == "Pixcam" and exif[0x0112] == 1  # upright now, camera kept
    assert 0x8825 not in exif  # GPS dropped by default
    assert mean_diff(upright_reference(jpeg_data), ref) < 3.0
    gps = Image.open(io.BytesIO(await result_bytes(client, alice, done["gps"]))).getexif()
    assert gps.get_ifd(0x8825)[3] == "W"

    cover = decode(await result_bytes(client, alice, done["cover"]))  # JPEG source -> JPEG
    top = (h * 200 // w - 200) // 2  # scaled to 200 wide, cropped around the centre
    expected = cv2.resize(ref, (200, round(h * 200 / w)), interpolation=cv2.INTER_AREA)
    assert cover.shape == (200, 200, 3)
    assert mean_diff(cover, expected[top : top + 200]) < 4.0
    contain = decode(await result_bytes(client, alice, done["contain"]))
    assert contain.shape == (200, 300, 4)  # padded with transparent pixels
    inner = round(w * 200 / h)
    left = (300 - inner) // 2
    assert (
        contain[:, :left, 3].max() == 0 and contain[:, left + 1 : left + inner - 1, 3].min() == 255
    )

    crop = decode(await result_bytes(client, alice, done["crop"]))
    assert crop.shape == (50, 100, 3) and mean_diff(crop, ref[20:70, 10:110]) < 4.0
    rot90 = decode(await result_bytes(client, alice, done["rotate90"]))
    assert np.array_equal(rot90, cv2.rotate(png, cv2.ROTATE_90_CLOCKWISE))
    rot30 = decode(await result_bytes(client, alice, done["rotate30"]))
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert rot30.shape == (int(np.ceil(w * s + h * c)), int(np.ceil(w * c + h * s)), 4)
    assert rot30[0, 0, 3] == 0 and rot30[rot30.shape[0] // 2, rot30.shape[1] // 2, 3] == 255
    flip = decode(await result_bytes(client, alice, done["flip"]))
    assert np.array_equal(flip, png[:, ::-1])
    blur = decode(await result_bytes(client, alice, done["blur"]))
    assert mean_diff(blur, cv2.GaussianBlur(png, (0, 0), 3)) < 0.5
    gray = decode(await result_bytes(client, alice, done["gray"]))
    assert gray.ndim == 2 and mean_diff(gray, cv2.cvtColor(png, cv2.COLOR_BGR2GRAY)) < 0.5

    meta = json.loads(await result_bytes(client, alice, done["metadata"]))
    assert meta["width"] == 900 and meta["height"] == 600  # as stored; orientation says turn
    assert meta["orientation"] == 6
    assert meta["exif"]["make"] == "Pixcam" and meta["exif"]["model"] == "PX-1"
    assert meta["exif"]["gps"]["latitude"] == pytest.approx(48 + 51 / 60 + 29 / 3600)
    assert meta["exif"]["gps"]["longitude"] == pytest.approx(-(2 + 17 / 60 + 40 / 3600))


async def test_heavy_denoise_end_to_end(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker(pool="heavy")
    rng = np.random.default_rng(7)
    clean = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 8)
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    _, png = cv2.imencode(".png", noisy)
    up = await upload(client, alice, png.tobytes())
    done = await run_jobs(client, alice, [up], {"nlm": [{"op": "denoise", "strength": 10}]})
    assert done["nlm"]["pool"] == "heavy"
    out = decode(await result_bytes(client, alice, done["nlm"]))
    expected = cv2.fastNlMeansDenoisingColored(noisy, None, 10, 5, 7, 21)
    assert np.array_equal(out, expected)
    assert mean_diff(out, clean) < mean_diff(noisy, clean) / 2


async def test_three_branches_and_an_archive(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    ups = [await upload(client, alice, photo(1600, 1200, "JPEG")) for _ in range(2)]
    pipeline = [
        {"op": "rotate", "angle": 180},
        {
            "op": "branch",
            "branches": [
                {"name": "small", "pipeline": [{"op": "thumbnail", "size": 256, "format": "webp"}]},
                {
                    "name": "large",
                    "pipeline": [
                        {"op": "resize", "width": 1024},
                        {"op": "convert", "format": "jpeg"},
                    ],
                },
                {"name": "meta", "pipeline": [{"op": "metadata"}]},
            ],
        },
        {"op": "archive", "name": "bundle", "keep": True},
    ]
    job = await submit(client, alice, ups, pipeline)
    done = await wait_for(client, job["href"], alice, FINAL, timeout=60)
    assert done["phase"] == "COMPLETED", done
    names = [r["name"] for r in done["results"]]
    expected = [f"{u}.{b}" for u in ups for b in ("small.webp", "large.jpg", "meta.json")]
    assert names == [*expected, "bundle.zip"]
    archive = next(r for r in done["results"] if r["name"] == "bundle.zip")
    assert archive["media_type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(await fetch_result(client, alice, archive)))
    assert zf.namelist() == expected
    small = Image.open(zf.open(f"{ups[0]}.small.webp"))
    large = Image.open(zf.open(f"{ups[1]}.large.jpg"))
    assert (small.format, small.size, large.format, large.size) == (
        "WEBP",
        (256, 192),
        "JPEG",
        (1024, 768),
    )
    # rotated 180 before branching: the red marker is now bottom-right
    px = np.asarray(large.convert("RGB"))
    assert px[-20, -20, 0] > 200 and px[-20, -20, 1] < 60 and px[20, 20, 1] > 200
    meta = json.loads(zf.read(f"{ups[0]}.meta.json"))
    assert (meta["width"], meta["height"]) == (1600, 1200)
    assert zf.getinfo(f"{ups[0]}.small.webp").compress_type == zipfile.ZIP_STORED
    assert zf.getinfo(f"{ups[0]}.meta.json").compress_type == zipfile.ZIP_DEFLATED


async def test_archive_of_earlier_results_belongs_to_the_owner(
    client: Client, alice: dict[str, str], bob: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    up = await upload(client, alice, photo(400, 300, "PNG"))
    first = await run_jobs(client, alice, [up], {"t": [{"op": "thumbnail", "size": 64}]})
    job_id = first["t"]["id"]
    name = first["t"]["results"][0]["name"]
    refs = [{"op": "archive", "results": [{"job": job_id}]}]
    r = await client.post("/v1/jobs", json={"pipeline": refs}, headers=alice)
    assert r.status_code == 202, r.text
    done = await wait_for(client, r.json()["href"], alice, FINAL)
    zf = zipfile.ZipFile(io.BytesIO(await result_bytes(client, alice, done)))
    assert zf.namelist() == [f"{job_id}/{name}"]
    assert Image.open(zf.open(zf.namelist()[0])).size == (64, 48)
    # bob cannot archive alice's results: the job fails, it does not leak them
    r = await client.post("/v1/jobs", json={"pipeline": refs}, headers=bob)
    assert r.status_code == 202, r.text
    theirs = await wait_for(client, r.json()["href"], bob, FINAL)
    assert theirs["phase"] == "ERROR" and theirs["error"]["code"] == "usage_error"
    assert "not one of your completed jobs" in theirs["error"]["message"]


@pytest.mark.parametrize(
    ("pipeline", "path"),
    [
        ([{"op": "metadata"}, {"op": "resize", "width": 10}], "$.pipeline[1]"),
        ([{"op": "archive"}, {"op": "thumbnail", "size": 8}], "$.pipeline[0]"),
        (
            [{"op": "branch", "branches": [{"name": "a", "pipeline": [{"op": "archive"}]}]}],
            "$.pipeline[0].branches[0].pipeline[0]",
        ),
        ([{"op": "resize", "width": 0}], "$.pipeline[0].width"),
        ([{"op": "convert", "format": "jpeg", "quality": -1}], "$.pipeline[0].quality"),
        ([{"op": "convert", "format": "png", "quality": 50}], "$.pipeline[0]"),
        ([{"op": "rotate", "angle": 100000}], "$.pipeline[0].angle"),
        ([{"op": "filter", "kind": "median", "size": 4}], "$.pipeline[0]"),
        ([{"op": "denoise", "template": 8}], "$.pipeline[0]"),
        ([{"op": "resize"}], "$.pipeline[0]"),
    ],
)
async def test_bad_pipelines_are_422_and_never_queued(
    client: Client, alice: dict[str, str], namespace: str, pipeline: list[Any], path: str
) -> None:
    up = await upload(client, alice)
    r = await client.post("/v1/jobs", json={"inputs": [up], "pipeline": pipeline}, headers=alice)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert any(e.get("path", "").startswith(path) for e in problem["errors"]), problem
    assert await queue_depth(namespace) == 0
    listed = await client.get("/v1/jobs", headers=alice)
    assert listed.json()["items"] == []


async def test_hostile_files_fail_as_usage_errors_and_the_slot_goes_on(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker(slots=1)
    huffman = await upload(client, alice, corrupt_huffman_jpeg())
    good = await upload(client, alice, photo(4000, 3000, "PNG"))
    done = await run_jobs(
        client,
        alice,
        [huffman],
        {"huffman": [{"op": "convert", "format": "png"}]},
    )
    failed = done["huffman"]
    assert failed["phase"] in ("ERROR", "COMPLETED"), failed
    if failed["phase"] == "ERROR":  # libjpeg may also emit a (garbage) image with a warning
        assert failed["error"]["code"] == "usage_error" and failed["attempts"] == 1
    later = await run_jobs(
        client,
        alice,
        [good],
        {
            "canvas": [{"op": "rotate", "angle": 45}, {"op": "resize", "width": 30000}],
            "outside": [{"op": "crop", "x": 5000, "y": 10, "width": 10, "height": 10}],
            "huge": [{"op": "resize", "width": 20000, "upscale": True}],
            "fine": [{"op": "thumbnail", "size": 32}],
        },
    )
    for key in ("outside", "huge"):
        assert later[key]["phase"] == "ERROR", later[key]
        assert later[key]["error"]["code"] == "usage_error", later[key]
        assert later[key]["attempts"] == 1
    assert "outside the 4000 x 3000 image" in later["outside"]["error"]["message"]
    assert "more than 100,000,000" in later["huge"]["error"]["message"]
    assert later["canvas"]["phase"] == "COMPLETED"  # never upscales: 30000 wide is capped
    assert later["fine"]["phase"] == "COMPLETED"


async def test_registered_model_runs_on_the_heavy_pool(
    client: Client, alice: dict[str, str], start_worker: Any, env: dict[str, str], tmp_path: Any
) -> None:
    from tests.unit.test_model_op import affine

    darken = tmp_path / "darken.onnx"
    darken.write_bytes(affine(0.5, 0.0))
    added = run_pixfleet(env, "models", "add", "darken", darken, "--tile", "64", "--overlap", "8")
    assert added.returncode == 0, added.stderr
    source = photo(300, 200, "PNG")
    up = await upload(client, alice, source)
    r = await client.post(
        "/v1/jobs",
        json={"inputs": [up], "pipeline": [{"op": "model", "name": "nope"}]},
        headers=alice,
    )
    assert r.status_code == 422 and "unknown model" in r.text
    start_worker(pool="heavy")
    done = await run_jobs(client, alice, [up], {"m": [{"op": "model", "name": "darken"}]})
    assert done["m"]["pool"] == "heavy"
    out = decode(await result_bytes(client, alice, done["m"]))
    expected = decode(source).astype(np.float64) * 0.5
    assert out.shape == (200, 300, 3) and np.abs(out - expected).max() <= 1.0


async def test_metadata_of_real_camera_jpegs_through_the_stack(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    """The makers' JPEGs of piexif's test suite: make, model and exposure as the files hold."""
    from tests.realimages import CAMERA_JPEGS, real_images

    root = real_images()
    start_worker()
    files = {await upload(client, alice, (root / rel).read_bytes()): rel for rel in CAMERA_JPEGS}
    job = await submit(client, alice, list(files), [{"op": "metadata"}])
    done = await wait_for(client, job["href"], alice, FINAL, timeout=60)
    assert done["phase"] == "COMPLETED", done
    assert len(done["results"]) == len(files)
    for result in done["results"]:
        expected = CAMERA_JPEGS[files[result["name"].removesuffix(".json")]]
        exif = json.loads(await fetch_result(client, alice, result))["exif"]
        assert exif["make"] == expected.make.strip("\0 ")
        assert exif["model"] == expected.model.strip("\0 ")
        if expected.exposure_time is not None:
            num, den = expected.exposure_time
            assert exif["exposure_time"] == pytest.approx(num / den)
        if expected.f_number is not None:
            num, den = expected.f_number
            assert exif["f_number"] == pytest.approx(num / den)
