"""Tests of the ``thumbnail`` operation and of the errors operations raise."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from contracts.media import JPEG
from contracts.ops import ImageFormat, Thumbnail
from contracts.settings import LimitsSettings
from pixfleet.sniff import CorruptImageError, ImageInfo, ImageTooLargeError, NotAnImageError
from worker.errors import FatalError, OpError, TransientError, UsageError
from worker.ops.api import InputFile, LocalContext
from worker.ops.imaging import _read_flags
from worker.ops.thumbnail import target_size, thumbnail
from worker.runtime.pipeline import run_pipeline

FORMATS: list[ImageFormat] = ["jpeg", "png", "webp"]
PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
RED = (255, 0, 0)


def _marked(w: int, h: int) -> np.ndarray:
    """White RGB with a red block in the top-left corner: shows any turn or flip."""
    image = np.full((h, w, 3), 255, np.uint8)
    image[: h // 4, : w // 4] = RED
    return image


def _save(tmp_path: Path, image: Image.Image | np.ndarray, fmt: str, **kwargs: object) -> InputFile:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    path = tmp_path / f"src.{fmt.lower()}"
    image.save(path, fmt, **kwargs)
    return InputFile(path=path, media_type=f"image/{fmt.lower()}", name="src")


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _red_corner(image: Image.Image) -> str:
    rgb = np.asarray(image.convert("RGB")).astype(int)
    h, w = rgb.shape[:2]
    corners = {"TL": rgb[1, 1], "TR": rgb[1, w - 2], "BL": rgb[h - 2, 1], "BR": rgb[h - 2, w - 2]}
    red = [name for name, (r, g, b) in corners.items() if r > 200 and g < 80 and b < 80]
    assert len(red) == 1, corners
    return red[0]


def _run(ctx: LocalContext, item: InputFile, size: int, fmt: ImageFormat = "png") -> Image.Image:
    out = thumbnail(Thumbnail(size=size, format=fmt, quality=90), item, ctx)
    assert out.path == ctx.workdir / f"src.{'jpg' if fmt == 'jpeg' else fmt}"
    assert out.media_type == f"image/{fmt}"
    with Image.open(out.path) as image:
        assert image.format == PIL_FORMAT[fmt]
        return image.copy()


@pytest.mark.parametrize(
    ("width", "height", "size", "expected"),
    [
        (400, 300, 256, (256, 192)),  # landscape
        (300, 400, 256, (192, 256)),  # portrait
        (300, 300, 256, (256, 256)),  # square
        (100, 50, 256, (100, 50)),  # never upscales
        (256, 100, 256, (256, 100)),  # already the size
        (1001, 751, 125, (125, 94)),  # 93.78 rounds up; decoded at 1/8
        (2000, 3, 100, (100, 1)),  # at least a pixel
    ],
)
@pytest.mark.parametrize("source", ["JPEG", "PNG"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_size(
    width: int, height: int, size: int, expected: tuple[int, int], source: str, fmt: ImageFormat,
    tmp_path: Path, ctx: LocalContext,
) -> None:  # fmt: skip
    item = _save(tmp_path, _marked(width, height), source)
    assert _run(ctx, item, size, fmt).size == expected
    assert target_size(width, height, size) == expected


@pytest.mark.parametrize(
    ("width", "height", "size", "flag"),
    [
        (4000, 3000, 256, cv2.IMREAD_REDUCED_COLOR_8),
        (2048, 1536, 256, cv2.IMREAD_REDUCED_COLOR_8),  # exactly the target at 1/8
        (2047, 1535, 256, cv2.IMREAD_REDUCED_COLOR_8),  # libjpeg rounds 255.9 up
        (1024, 768, 256, cv2.IMREAD_REDUCED_COLOR_4),
        (1000, 800, 256, cv2.IMREAD_REDUCED_COLOR_2),
        (300, 200, 256, cv2.IMREAD_COLOR),
        (200, 100, 256, cv2.IMREAD_COLOR),  # smaller than the target: kept as is
        (100, 4000, 256, cv2.IMREAD_REDUCED_COLOR_8),
    ],
)
def test_reduction_flag(width: int, height: int, size: int, flag: int) -> None:
    info = ImageInfo(JPEG, width, height, 1)
    flags = _read_flags(info, target_size(width, height, size))
    assert flags == flag | cv2.IMREAD_IGNORE_ORIENTATION


@pytest.fixture(scope="module")
def camera_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    y, x = np.mgrid[0:3000, 0:4000]
    image = np.dstack([x * 255 // 4000, y * 255 // 3000, (x + y) * 255 // 7000]).astype(np.uint8)
    image[:750, :1000] = (0, 0, 255)  # BGR red, top-left
    path = tmp_path_factory.mktemp("big") / "camera.jpg"
    Image.fromarray(image[:, :, ::-1]).save(path, quality=90, exif=_exif(6))
    return path


def test_big_jpeg_is_decoded_reduced(
    camera_jpeg: Path, ctx: LocalContext, decodes: list[int]
) -> None:
    image = _run(ctx, InputFile(camera_jpeg, "image/jpeg", "src"), 256, "jpeg")
    assert decodes == [cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION]
    assert image.size == (192, 256)  # orientation 6 turns 4000x3000 upright
    assert _red_corner(image) == "TR"


@pytest.mark.parametrize("source", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(source: str, orientation: int, tmp_path: Path, ctx: LocalContext) -> None:
    item = _save(tmp_path, _marked(400, 200), source, exif=_exif(orientation), quality=95)
    with Image.open(item.path) as source_image:
        expected = ImageOps.exif_transpose(source_image)
    image = _run(ctx, item, 100)
    assert image.size == (expected.width // 4, expected.height // 4)
    assert _red_corner(image) == _red_corner(expected)
    if orientation in (6, 8):
        assert _red_corner(image) == {6: "TR", 8: "BL"}[orientation]


def test_tiff_orientation_is_left_to_libtiff(tmp_path: Path, ctx: LocalContext) -> None:
    item = _save(tmp_path, _marked(400, 200), "TIFF", tiffinfo={274: 3})
    assert _red_corner(_run(ctx, item, 100)) == "BR"


def _rgba_half(w: int = 200, h: int = 200) -> np.ndarray:
    """Opaque red on the left, invisible black on the right."""
    image = np.zeros((h, w, 4), np.uint8)
    image[:, : w // 2] = (*RED, 255)
    return image


@pytest.mark.parametrize("source", ["PNG", "WEBP"])
@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_alpha_kept(source: str, fmt: ImageFormat, tmp_path: Path, ctx: LocalContext) -> None:
    item = _save(tmp_path, _rgba_half(), source, lossless=True)
    image = _run(ctx, item, 67, fmt)
    assert image.mode == "RGBA" and image.size == (67, 67)
    rgba = np.asarray(image).astype(int)
    assert rgba[10, 2, 3] >= 250 and rgba[10, 64, 3] <= 5
    edge = rgba[:, :, 3] > 20
    # Colours are weighted by alpha: the invisible black does not darken the visible edge.
    assert rgba[edge][:, 0].min() >= (250 if fmt == "png" else 200)


def test_alpha_onto_white_for_jpeg(tmp_path: Path, ctx: LocalContext) -> None:
    rgb = np.asarray(_run(ctx, _save(tmp_path, _rgba_half(), "PNG"), 67, "jpeg")).astype(int)
    assert (rgb[10, 64] >= 245).all()
    assert rgb[10, 2, 0] >= 240 and rgb[10, 2, 1:].max() <= 20


def test_gray_alpha_png(tmp_path: Path, ctx: LocalContext) -> None:
    gray = Image.fromarray(_rgba_half()).convert("LA")
    image = _run(ctx, _save(tmp_path, gray, "PNG"), 50, "png")
    assert image.size == (50, 50) and image.getchannel("A").getextrema() == (0, 255)


def _png16(tmp_path: Path, channels: int) -> InputFile:
    image = np.full((200, 300, channels), 30_000, np.uint16)
    if channels == 4:
        image[:, :150, 3] = 65_535
        image[:, 150:, 3] = 0
    path = tmp_path / "src.png"
    assert cv2.imwrite(str(path), image.squeeze())
    return InputFile(path, "image/png", "src")


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("fmt", FORMATS)
def test_16_bit_png(channels: int, fmt: ImageFormat, tmp_path: Path, ctx: LocalContext) -> None:
    item = _png16(tmp_path, channels)
    _run(ctx, item, 150, fmt)
    out = cv2.imread(
        str(ctx.workdir / f"src.{'jpg' if fmt == 'jpeg' else fmt}"), cv2.IMREAD_UNCHANGED
    )
    assert out.shape[:2] == (100, 150)
    if fmt == "png":
        assert out.dtype == np.uint16 and abs(int(out[50, 10, ...].flat[0]) - 30_000) <= 1
    else:  # scaled to 8 bits, not clipped
        assert out.dtype == np.uint8 and abs(int(out[50, 10, ...].flat[0]) - 117) <= 3
    if channels == 4 and fmt != "jpeg":
        assert out[50, 10, 3] >= 250 and out[50, 140, 3] <= 5


@pytest.mark.parametrize("source", ["JPEG", "PNG", "GIF", "BMP", "TIFF"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_grayscale_and_other_sources(
    source: str, fmt: ImageFormat, tmp_path: Path, ctx: LocalContext
) -> None:
    gray = Image.fromarray(_marked(300, 200)).convert("L")
    image = _run(ctx, _save(tmp_path, gray, source), 150, fmt)
    assert image.size == (150, 100)
    if fmt == "png" and source == "PNG":
        assert image.mode == "L"


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_by_hand(w: int, h: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_marked(300, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _fits() -> bytes:
    cards = [("SIMPLE", "T"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 4), ("NAXIS2", 4)]
    header = b"".join(f"{k:<8}= {v:>20}".ljust(80).encode() for k, v in cards) + b"END"
    return header.ljust(2880) + bytes(2880)


@pytest.mark.parametrize(
    ("data", "cause", "match"),
    [
        (_jpeg_bytes()[:-200], CorruptImageError, "corrupt or truncated"),
        (b"<!DOCTYPE html><title>not found</title>", NotAnImageError, "not a supported image"),
        (b"", NotAnImageError, "empty file"),
        (_png_by_hand(100_000, 100_000, b"x"), ImageTooLargeError, "100000x100000"),
        (_png_by_hand(30, 20, b"not zlib data"), None, "cannot decode"),
        (_fits(), None, "is FITS: use the astronomy operations"),
    ],
)
def test_bad_inputs(
    data: bytes, cause: type[Exception] | None, match: str, tmp_path: Path, ctx: LocalContext
) -> None:
    path = tmp_path / "src.jpg"
    path.write_bytes(data)
    with pytest.raises(UsageError, match=match) as info:
        thumbnail(Thumbnail(size=64), InputFile(path, "image/jpeg", "src"), ctx)
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)
    assert list(ctx.workdir.iterdir()) == []


def test_limits_come_from_the_context(tmp_path: Path) -> None:
    item = _save(tmp_path, _marked(300, 200), "PNG")
    ctx = LocalContext(workdir=tmp_path, limits=LimitsSettings(max_pixels=300 * 200 - 1))
    with pytest.raises(UsageError, match="too large"):
        thumbnail(Thumbnail(size=64), item, ctx)


def test_several_inputs_and_progress(tmp_path: Path, ctx: LocalContext) -> None:
    items = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(_marked(300, 200)).save(path)
        items.append(InputFile(path, "image/png", name))
    outputs = run_pipeline([Thumbnail(size=30, format="webp")], items, ctx)
    assert [(o.name, o.path.name, o.media_type) for o in outputs] == [
        ("a", "a.webp", "image/webp"), ("b", "b.webp", "image/webp"), ("c", "c.webp", "image/webp"),
    ]  # fmt: skip
    assert [round(f, 3) for f, _ in ctx.events] == [0.333, 0.667, 1.0]


# Errors cross the child-process boundary by pickle.

ERRORS = [UsageError, TransientError, FatalError]


@pytest.mark.parametrize("cls", ERRORS)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_errors_pickle(cls: type[OpError], protocol: int) -> None:
    error = cls("bad input", "the details")
    error.add_note("a note")
    copy = pickle.loads(pickle.dumps(error, protocol))
    assert type(copy) is cls
    assert (copy.message, copy.detail, copy.args, str(copy)) == (
        "bad input", "the details", ("bad input",), "bad input",
    )  # fmt: skip
    assert copy.code == {UsageError: "usage_error", TransientError: "transient_error"}.get(
        cls, "fatal_error"
    )
    assert copy.__notes__ == ["a note"]
    assert pickle.loads(pickle.dumps(cls("no detail"))).detail is None


def _raise(name: str) -> None:
    raise {cls.__name__: cls for cls in ERRORS}[name](f"{name} in a child", "from the child")


def test_errors_cross_processes() -> None:
    spawn = multiprocessing.get_context("spawn")  # fork warns in a threaded pytest
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        for cls in ERRORS:
            with pytest.raises(cls, match=f"{cls.__name__} in a child") as info:
                pool.submit(_raise, cls.__name__).result()
            assert info.value.detail == "from the child"
