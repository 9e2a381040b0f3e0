"""Image operations (convert, resize, crop, rotate, flip, filter, denoise, archive) and the
pipeline runner, each checked against OpenCV, Pillow, numpy or scipy computed in the test.

Images are made here with numpy (nothing binary is committed); all are small but one 4000 x
3000 JPEG that shows the reduced (DCT-scaled) decode.
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import msgspec
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin
from PIL.ExifTags import IFD
from scipy.ndimage import median_filter

from contracts.opbase import Op
from contracts.ops import (
    Archive,
    Branch,
    Convert,
    Crop,
    Denoise,
    Filter,
    Flip,
    Gravity,
    ImageFormat,
    NamedPipeline,
    Resize,
    Rotate,
)
from contracts.settings import LimitsSettings
from worker.errors import UsageError
from worker.ops.api import InputFile, LocalContext, Picture
from worker.ops.archive import archive
from worker.ops.convert import convert
from worker.ops.filters import apply_filter, denoise
from worker.ops.geometry import crop, flip, resize, rotate
from worker.runtime.pipeline import run_pipeline

EXT = {"jpeg": "jpg", "png": "png", "webp": "webp", "tiff": "tif", "avif": "avif"}
PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF", "avif": "AVIF"}
GRAVITIES: list[Gravity] = [
    "northwest", "north", "northeast", "west", "centre", "east", "southwest", "south", "southeast",
]  # fmt: skip


# -- images ----------------------------------------------------------------------------


def _noise(h: int, w: int, channels: int = 3, dtype: Any = np.uint8, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, top, shape, endpoint=True).astype(dtype)


def _smooth(h: int, w: int, noise: float = 6.0, seed: int = 0) -> np.ndarray:
    """A BGR gradient with some noise: something for filters to work on."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.dstack([x * 200 / w + 20, y * 200 / h + 30, (x + y) * 100 / (w + h) + 80])
    base += np.random.default_rng(seed).normal(0, noise, base.shape)
    return np.clip(base + 0.5, 0, 255).astype(np.uint8)


def _marked(h: int, w: int) -> np.ndarray:
    """White BGR with a red block in the top-left corner: shows any turn or flip."""
    image = np.full((h, w, 3), 255, np.uint8)
    image[: h // 4, : w // 4] = (0, 0, 255)
    return image


def _file(tmp_path: Path, bgr: np.ndarray, ext: str = "png", name: str = "src") -> InputFile:
    """Write BGR(A), gray or 16-bit pixels with OpenCV."""
    path = tmp_path / f"{name}.{ext}"
    assert cv2.imwrite(str(path), bgr)
    media = {"jpg": "image/jpeg", "tif": "image/tiff"}.get(ext, f"image/{ext}")
    return InputFile(path=path, media_type=media, name=name)


def _pil_file(
    tmp_path: Path, image: Image.Image, fmt: str, name: str = "src", **kwargs: Any
) -> InputFile:
    path = tmp_path / f"{name}.{fmt.lower()}"
    image.save(path, fmt, **kwargs)
    return InputFile(path=path, media_type=f"image/{fmt.lower()}", name=name)


def _rgb(bgr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    assert image is not None, path
    return image


def _pil(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


def _red_corner(rgb: np.ndarray) -> str:
    h, w = rgb.shape[:2]
    corners = {"TL": rgb[1, 1], "TR": rgb[1, w - 2], "BL": rgb[h - 2, 1], "BR": rgb[h - 2, w - 2]}
    red = [k for k, (r, g, b) in corners.items() if int(r) > 180 and int(g) < 90 and int(b) < 90]
    assert len(red) == 1, corners
    return red[0]


def _picture(pixels: np.ndarray) -> Picture:
    return Picture(pixels=pixels, name="p", source_type="image/png")


# -- convert: formats, quality, depth, alpha --------------------------------------------


@pytest.mark.parametrize("fmt", list(EXT))
def test_convert_decodes_back_in_its_format(
    fmt: ImageFormat, tmp_path: Path, ctx: LocalContext
) -> None:
    item = _file(tmp_path, _smooth(30, 50))
    out = convert(Convert(format=fmt), item, ctx)
    assert out.path == ctx.workdir / f"src.{EXT[fmt]}"
    assert out.media_type == f"image/{fmt}" and out.name == "src"
    image = _pil(out.path)
    assert (image.format, image.size, image.mode) == (PIL_FORMAT[fmt], (50, 30), "RGB")
    assert _read(out.path).shape == (30, 50, 3)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_quality_changes_size(fmt: ImageFormat, tmp_path: Path, ctx: LocalContext) -> None:
    item = _file(tmp_path, _smooth(64, 64, noise=20))
    sizes = [
        convert(Convert(format=fmt, quality=q), item, ctx).path.stat().st_size for q in (20, 95)
    ]
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize("fmt", ["webp", "avif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_lossless_webp_and_avif_round_trip(
    fmt: ImageFormat, channels: int, tmp_path: Path, ctx: LocalContext
) -> None:
    source = _noise(24, 40, channels)
    out = convert(Convert(format=fmt, lossless=True), _file(tmp_path, source), ctx)
    decoded = _read(out.path)
    rgb = np.asarray(_pil(out.path))
    if channels == 4:
        # libwebp zeroes the colour of invisible pixels (its "exact" option is off): compare
        # what can be seen, and the alpha everywhere.
        visible = source[:, :, 3] > 0
        assert np.array_equal(decoded[:, :, 3], source[:, :, 3])
        assert np.array_equal(decoded[visible], source[visible])
        assert np.array_equal(rgb[visible], cv2.cvtColor(source, cv2.COLOR_BGRA2RGBA)[visible])
    else:
        assert np.array_equal(decoded, source)
        assert np.array_equal(rgb, cv2.cvtColor(source, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_and_tiff_are_lossless(
    fmt: ImageFormat, channels: int, tmp_path: Path, ctx: LocalContext
) -> None:
    source = _noise(24, 40, channels)
    out = convert(Convert(format=fmt), _file(tmp_path, source), ctx)
    assert np.array_equal(_read(out.path), source)


def test_progressive_jpeg(tmp_path: Path, ctx: LocalContext) -> None:
    item = _file(tmp_path, _smooth(32, 48))
    progressive = convert(Convert(format="jpeg", progressive=True), item, ctx)
    baseline = convert(Convert(format="jpeg"), item, ctx)
    assert _pil(progressive.path).info.get("progressive")
    assert b"\xff\xc2" in progressive.path.read_bytes()  # SOF2: progressive DCT
    assert not _pil(baseline.path).info.get("progressive")
    assert b"\xff\xc2" not in baseline.path.read_bytes()


@pytest.mark.parametrize("source_ext", ["png", "tif"])
@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_kept_by_png_and_tiff(
    source_ext: str, fmt: ImageFormat, channels: int, tmp_path: Path, ctx: LocalContext
) -> None:
    source = _noise(20, 30, channels, np.uint16)
    out = convert(Convert(format=fmt), _file(tmp_path, source, source_ext), ctx)
    decoded = _read(out.path)
    assert decoded.dtype == np.uint16
    assert np.array_equal(decoded, source)


def test_16_bit_avif_keeps_12_bits(tmp_path: Path, ctx: LocalContext) -> None:
    source = _noise(20, 30, 3, np.uint16)
    out = convert(Convert(format="avif", lossless=True), _file(tmp_path, source), ctx)
    decoded = _read(out.path)
    assert decoded.dtype == np.uint16
    assert np.array_equal(decoded, source >> 4)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_16_bit_to_8_bit_is_scaled_not_clipped(
    fmt: ImageFormat, tmp_path: Path, ctx: LocalContext
) -> None:
    y, x = np.mgrid[0:32, 0:64]
    ramp = (x * 1024 + y * 32).astype(np.uint16)  # 0 to 65,504
    source = np.dstack([ramp, ramp[::-1], 65535 - ramp])
    op = Convert(format=fmt, quality=98) if fmt == "jpeg" else Convert(format=fmt, lossless=True)
    decoded = _read(convert(op, _file(tmp_path, source), ctx).path)
    expected = np.round(source / 257.0)
    assert decoded.dtype == np.uint8
    tolerance = 1 if fmt == "webp" else 4
    assert _diff(decoded, expected).max() <= tolerance
    assert decoded.max() >= 250 and (decoded < 128).mean() > 0.3  # not clipped at 255


def _half_transparent() -> np.ndarray:
    """BGRA: left half orange at alpha 128, right half invisible."""
    image = np.zeros((32, 32, 4), np.uint8)
    image[:, :16] = (20, 120, 240, 128)
    image[:, 16:] = (255, 0, 255, 0)
    return image


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff", "avif"])
def test_alpha_kept(fmt: ImageFormat, tmp_path: Path, ctx: LocalContext) -> None:
    source = _half_transparent()
    lossless = fmt in ("webp", "avif")
    out = convert(Convert(format=fmt, lossless=lossless), _file(tmp_path, source), ctx)
    assert _pil(out.path).mode == "RGBA"
    decoded = _read(out.path)
    assert np.array_equal(decoded[:, :16], source[:, :16])
    assert (decoded[:, 16:, 3] == 0).all()


def test_jpeg_composites_onto_the_background(tmp_path: Path, ctx: LocalContext) -> None:
    source = _half_transparent()
    out = convert(
        Convert(format="jpeg", quality=98, background="#40a010"), _file(tmp_path, source), ctx
    )
    decoded = _read(out.path)
    assert decoded.shape == (32, 32, 3)
    background = np.array([0x10, 0xA0, 0x40], np.float64)  # BGR
    a = 128 / 255
    half = np.array([20, 120, 240]) * a + background * (1 - a)
    assert _diff(decoded[4:28, 2:14], np.broadcast_to(np.round(half), (24, 12, 3))).max() <= 3
    assert _diff(decoded[4:28, 18:30], np.broadcast_to(background, (24, 12, 3))).max() <= 3


# -- convert: metadata -----------------------------------------------------------------

LAT = ((48, 1), (51, 1), (2437, 100))
LON = ((2, 1), (17, 1), (4011, 100))


def _camera_exif(order: bytes) -> bytes:
    """EXIF as a camera writes it (TIFF bytes): IFD0 with Make, Model, Orientation 6 and a
    GPS IFD (latitude and longitude as rationals), then IFD1."""
    o = "<" if order == b"II" else ">"

    def entry(tag: int, kind: int, count: int, value: bytes | int) -> bytes:
        inline = value.ljust(4, b"\0") if isinstance(value, bytes) else struct.pack(o + "I", value)
        return struct.pack(o + "HHI", tag, kind, count) + inline

    make, model = b"Pixcam\0", b"PX-1 Mark II\0"
    data0 = 8 + 2 + 4 * 12 + 4
    gps = data0 + len(make) + len(model)
    lat = gps + 2 + 4 * 12 + 4
    lon, ifd1 = lat + 24, lat + 48
    short6 = struct.pack(o + "H", 6)
    return b"".join([
        order, struct.pack(o + "HIH", 42, 8, 4),
        entry(0x010F, 2, len(make), data0), entry(0x0110, 2, len(model), data0 + len(make)),
        entry(0x0112, 3, 1, short6), entry(0x8825, 4, 1, gps), struct.pack(o + "I", ifd1),
        make, model,
        struct.pack(o + "H", 4), entry(1, 2, 2, b"N\0"), entry(2, 5, 3, lat),
        entry(3, 2, 2, b"E\0"), entry(4, 5, 3, lon), struct.pack(o + "I", 0),
        *(struct.pack(o + "II", *r) for r in LAT + LON),
        struct.pack(o + "H", 1), entry(0x0103, 3, 1, short6), struct.pack(o + "I", 0),
    ])  # fmt: skip


def _gps_bytes(order: bytes) -> list[bytes]:
    o = "<" if order == b"II" else ">"
    rationals = [b"".join(struct.pack(o + "II", *r) for r in c) for c in (LAT, LON)]
    return [*rationals, struct.pack(o + "II", *LAT[2]), struct.pack(o + "II", *LON[2])]


@pytest.fixture(params=[b"II", b"MM"], ids=["little-endian", "big-endian"])
def camera_jpeg(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[InputFile, bytes]:
    """A 60 x 40 JPEG stored sideways (EXIF orientation 6) with camera EXIF and GPS."""
    order: bytes = request.param
    item = _pil_file(
        tmp_path, _rgb(_marked(40, 60)), "JPEG", quality=95, exif=b"Exif\0\0" + _camera_exif(order)
    )
    data = item.path.read_bytes()
    assert all(block in data for block in _gps_bytes(order))
    return item, order


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_metadata_keep_drops_gps_and_rights_the_image(
    fmt: ImageFormat, camera_jpeg: tuple[InputFile, bytes], ctx: LocalContext
) -> None:
    item, order = camera_jpeg
    out = convert(Convert(format=fmt), item, ctx)
    image = _pil(out.path)
    exif = image.getexif()
    assert (exif.get(0x010F), exif.get(0x0110), exif.get(0x0112)) == ("Pixcam", "PX-1 Mark II", 1)
    assert 0x8825 not in exif and exif.get_ifd(IFD.GPSInfo) == {}
    assert exif.get_ifd(IFD.IFD1) == {0x0103: 6}  # the next IFD survives the edit
    data = out.path.read_bytes()
    assert not any(block in data for block in _gps_bytes(order))
    # Upright: as Pillow turns the source by its orientation tag.
    with Image.open(item.path) as source:
        expected = np.asarray(ImageOps.exif_transpose(source).convert("RGB"))
    assert image.size == (40, 60)
    rgb = np.asarray(image.convert("RGB"))
    assert _red_corner(rgb) == "TR"
    assert _diff(rgb, expected).mean() < 3


def test_keep_gps(camera_jpeg: tuple[InputFile, bytes], ctx: LocalContext) -> None:
    item, _ = camera_jpeg
    out = convert(Convert(format="jpeg", keep_gps=True), item, ctx)
    gps = _pil(out.path).getexif().get_ifd(IFD.GPSInfo)
    assert gps == _pil(item.path).getexif().get_ifd(IFD.GPSInfo)
    assert gps[2] == (48.0, 51.0, 24.37) and gps[4] == (2.0, 17.0, 40.11)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_metadata_strip_drops_exif(
    fmt: ImageFormat, camera_jpeg: tuple[InputFile, bytes], ctx: LocalContext
) -> None:
    item, _ = camera_jpeg
    out = convert(Convert(format=fmt, metadata="strip"), item, ctx)
    image = _pil(out.path)
    assert "exif" not in image.info and dict(image.getexif()) == {}
    assert b"Pixcam" not in out.path.read_bytes()
    assert image.size == (40, 60)  # still turned upright


def test_auto_orient_false_keeps_the_stored_pixels_and_tag(
    camera_jpeg: tuple[InputFile, bytes], ctx: LocalContext
) -> None:
    item, _ = camera_jpeg
    out = convert(Convert(format="png", auto_orient=False), item, ctx)
    image = _pil(out.path)
    assert image.size == (60, 40) and image.getexif().get(0x0112) == 6
    stored = cv2.imread(str(item.path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert np.array_equal(_read(out.path), stored)


@pytest.fixture(scope="module")
def icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


ICC_FORMATS = ["jpeg", "png", "webp", "avif"]  # TIFF output carries no metadata (documented)


@pytest.mark.parametrize("fmt", ICC_FORMATS)
def test_icc_profile_kept(fmt: ImageFormat, icc: bytes, tmp_path: Path, ctx: LocalContext) -> None:
    item = _pil_file(tmp_path, _rgb(_smooth(20, 30)), "PNG", icc_profile=icc)
    for metadata in ("keep", "strip"):
        out = convert(Convert(format=fmt, metadata=metadata), item, ctx)  # type: ignore[arg-type]
        assert _pil(out.path).info.get("icc_profile") == icc, metadata


@pytest.mark.parametrize("fmt", list(EXT))
def test_icc_profile_dropped_when_refused(
    fmt: ImageFormat, icc: bytes, tmp_path: Path, ctx: LocalContext
) -> None:
    item = _pil_file(tmp_path, _rgb(_smooth(20, 30)), "PNG", icc_profile=icc)
    out = convert(Convert(format=fmt, keep_icc=False), item, ctx)
    assert not _pil(out.path).info.get("icc_profile")


XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:format="pixfleet-test"/></rdf:RDF>'
    b'</x:xmpmeta><?xpacket end="w"?>'
)
# 280 bytes, 8 more than a multiple of 16: in a glibc heap the byte after a buffer of that
# size is the low byte of the next chunk's size field, which is odd (its "previous chunk in
# use" bit), so the webp -> png over-read below shows every time rather than by chance.


def _xmp_file(tmp_path: Path, fmt: str) -> InputFile:
    image = _rgb(_smooth(20, 30))
    if fmt == "PNG":  # iTXt, as the XMP specification says
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        return _pil_file(tmp_path, image, fmt, pnginfo=info)
    return _pil_file(tmp_path, image, fmt, xmp=XMP)


def _xmp_of(path: Path) -> bytes | None:
    info = _pil(path).info
    value = info.get("xmp", info.get("XML:com.adobe.xmp"))  # PNG iTXt / tEXt, WebP, AVIF
    return value.encode("latin-1") if isinstance(value, str) else value


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        ("PNG", "png"),
        ("PNG", "webp"),
        ("WEBP", "png"),
        ("WEBP", "webp"),
        ("JPEG", "png"),
        ("JPEG", "webp"),
    ],
)
def test_xmp_kept(source: str, fmt: ImageFormat, tmp_path: Path, ctx: LocalContext) -> None:
    item = _xmp_file(tmp_path, source)
    assert _xmp_of(item.path) == XMP and len(XMP) % 16 == 8
    assert _xmp_of(convert(Convert(format=fmt), item, ctx).path) == XMP
    assert _xmp_of(convert(Convert(format=fmt, metadata="strip"), item, ctx).path) is None


# -- resize ----------------------------------------------------------------------------

# A 200 x 100 image; expected sizes worked out by hand from the Resize docstring.
RESIZE_CASES = [
    # width, height, fit, upscale, expected (width, height)
    (100, 100, "inside", False, (100, 50)),
    (300, 300, "inside", False, (200, 100)),  # never enlarged
    (300, 300, "inside", True, (300, 150)),
    (100, 100, "contain", False, (100, 100)),  # 100 x 50 padded to the box
    (300, 300, "contain", False, (300, 300)),  # 200 x 100 padded to the box
    (300, 300, "contain", True, (300, 300)),
    (100, 100, "cover", False, (100, 100)),  # already covers: cropped to 100 x 100
    (50, 40, "cover", False, (50, 40)),  # 80 x 40, cropped
    (150, 150, "cover", False, (150, 100)),  # covering needs enlarging: the width is cut
    (400, 400, "cover", False, (200, 100)),
    (400, 400, "cover", True, (400, 400)),  # 800 x 400, cropped
    (100, 100, "fill", False, (100, 100)),
    (300, 50, "fill", False, (200, 50)),  # stretched, but never enlarged
    (300, 50, "fill", True, (300, 50)),
    (60, None, "inside", False, (60, 30)),
    (None, 30, "inside", False, (60, 30)),
    (400, None, "inside", False, (200, 100)),
    (400, None, "inside", True, (400, 200)),
    (None, 50, "contain", False, (100, 50)),  # one side: nothing to pad to
    (60, None, "cover", False, (60, 30)),
    (None, 70, "fill", False, (140, 70)),
    (None, 300, "fill", True, (600, 300)),
]


@pytest.fixture
def wide(tmp_path: Path) -> InputFile:
    return _file(tmp_path, _smooth(100, 200), name="wide")


@pytest.mark.parametrize(("width", "height", "fit", "upscale", "expected"), RESIZE_CASES)
def test_resize_sizes(
    width: int | None, height: int | None, fit: Any, upscale: bool, expected: tuple[int, int],
    wide: InputFile, ctx: LocalContext,
) -> None:  # fmt: skip
    op = Resize(width=width, height=height, fit=fit, upscale=upscale)
    pixels = resize(op, wide, ctx).pixels
    assert (pixels.shape[1], pixels.shape[0]) == expected


def _offset(gravity: str, free_x: int, free_y: int) -> tuple[int, int]:
    """Where gravity puts a box with this much room around it (the centre rounds down)."""
    x = 0 if "west" in gravity else free_x if "east" in gravity else free_x // 2
    y = 0 if "north" in gravity else free_y if "south" in gravity else free_y // 2
    return x, y


@pytest.mark.parametrize("gravity", GRAVITIES)
def test_contain_pads_with_the_background_at_gravity(
    gravity: Gravity, tmp_path: Path, ctx: LocalContext
) -> None:
    source = _noise(10, 20)
    item = _file(tmp_path, source)
    x, y = _offset(gravity, 40 - 20, 40 - 10)  # never enlarged: padded on both axes
    transparent = resize(Resize(width=40, height=40, fit="contain", gravity=gravity), item, ctx)
    expected = np.zeros((40, 40, 4), np.uint8)
    expected[y : y + 10, x : x + 20] = cv2.cvtColor(source, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(transparent.pixels, expected)

    op = Resize(width=40, height=40, fit="contain", gravity=gravity, background="#ff8000")
    opaque = resize(op, item, ctx).pixels
    expected = np.full((40, 40, 3), (0, 128, 255), np.uint8)
    expected[y : y + 10, x : x + 20] = source
    assert np.array_equal(opaque, expected)


@pytest.mark.parametrize("gravity", ["north", "centre", "south"])
def test_contain_pads_the_short_side(gravity: Gravity, wide: InputFile, ctx: LocalContext) -> None:
    op = Resize(width=100, height=100, fit="contain", gravity=gravity, background="#000000")
    pixels = resize(op, wide, ctx).pixels
    scaled = cv2.resize(_read(wide.path), (100, 50), interpolation=cv2.INTER_AREA)
    _, y = _offset(gravity, 0, 50)
    assert np.array_equal(pixels[y : y + 50], scaled)
    assert not pixels[:y].any() and not pixels[y + 50 :].any()


def _striped(h: int, w: int, horizontal: bool) -> np.ndarray:
    """A gradient with a red band at the start and a blue band at the end of one axis."""
    image = _smooth(h, w, noise=0)
    if horizontal:
        image[:, : w // 8], image[:, -w // 8 :] = (0, 0, 255), (255, 0, 0)
    else:
        image[: h // 8], image[-h // 8 :] = (0, 0, 255), (255, 0, 0)
    return image


@pytest.mark.parametrize("gravity", GRAVITIES)
def test_cover_crops_around_gravity(gravity: Gravity, tmp_path: Path, ctx: LocalContext) -> None:
    for horizontal in (True, False):
        source = _striped(100, 200, True) if horizontal else _striped(200, 100, False)
        item = _file(tmp_path, source)
        pixels = resize(Resize(width=50, height=50, fit="cover", gravity=gravity), item, ctx).pixels
        scaled_size = (100, 50) if horizontal else (50, 100)
        scaled = cv2.resize(source, scaled_size, interpolation=cv2.INTER_AREA)
        x, y = _offset(gravity, scaled_size[0] - 50, scaled_size[1] - 50)
        assert np.array_equal(pixels, scaled[y : y + 50, x : x + 50])
        # The kept part, by the bands: red for the start, blue for the end, neither between.
        start = "west" if horizontal else "north"
        end = "east" if horizontal else "south"
        line = pixels[25] if horizontal else pixels[:, 25]
        first, last = line[1], line[48]
        assert (first.tolist() == [0, 0, 255]) == (start in gravity)
        assert (last.tolist() == [255, 0, 0]) == (end in gravity)


@pytest.mark.parametrize(
    ("op", "size", "flag"),
    [
        (Resize(width=40), (40, 25), cv2.INTER_AREA),  # 61 * 40 / 97 = 25.2
        (Resize(height=20), (32, 20), cv2.INTER_AREA),  # 97 * 20 / 61 = 31.8
        (Resize(width=150, upscale=True), (150, 94), cv2.INTER_LANCZOS4),  # 94.3
        (Resize(width=40, interpolation="nearest"), (40, 25), cv2.INTER_NEAREST),
        (Resize(width=40, interpolation="linear"), (40, 25), cv2.INTER_LINEAR),
        (Resize(width=150, upscale=True, interpolation="cubic"), (150, 94), cv2.INTER_CUBIC),
    ],
    ids=["area-down", "area-down-height", "lanczos-up", "nearest", "linear", "cubic"],
)
def test_resize_equals_opencv(
    op: Resize, size: tuple[int, int], flag: int, tmp_path: Path, ctx: LocalContext
) -> None:
    source = _noise(61, 97)
    pixels = resize(op, _file(tmp_path, source), ctx).pixels
    assert _diff(pixels, cv2.resize(source, size, interpolation=flag)).max() <= 1


def test_resize_weights_colours_by_alpha(tmp_path: Path, ctx: LocalContext) -> None:
    """Invisible pixels' colours do not bleed into visible ones (premultiplied scaling)."""
    source = _noise(40, 60, 4, seed=4)
    source[:, :, 3] = 0
    source[:, :31, 3] = 255  # edges inside the 3-pixel cells the scaling averages
    source[:, 31:46, 3] = 128
    pixels = resize(Resize(width=20), _file(tmp_path, source), ctx).pixels
    alpha = source[:, :, 3:].astype(np.float32) / 255
    weighted = cv2.resize(source[:, :, :3] * alpha, (20, 13), interpolation=cv2.INTER_AREA)
    small_alpha = cv2.resize(alpha, (20, 13), interpolation=cv2.INTER_AREA)[:, :, None]
    visible = small_alpha[:, :, 0] > 0.05
    expected = weighted / np.maximum(small_alpha, 1e-6)
    assert pixels.shape == (13, 20, 4)
    assert _diff(pixels[:, :, 3], np.round(small_alpha[:, :, 0] * 255)).max() <= 1
    # Premultiplied 8-bit samples lose precision where alpha is low: allow 1 / alpha levels.
    tolerance = 1 + 1 / np.maximum(small_alpha, 1e-6)
    assert (_diff(pixels[:, :, :3], np.round(expected)) <= tolerance)[visible].all()


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    y, x = np.mgrid[0:3000, 0:4000]
    image = np.dstack([x * 255 // 4000, y * 255 // 3000, (x + y) * 255 // 7000]).astype(np.uint8)
    path = tmp_path_factory.mktemp("big") / "camera.jpg"
    Image.fromarray(image).save(path, quality=85)
    return path


def test_big_jpeg_is_decoded_reduced(big_jpeg: Path, ctx: LocalContext, decodes: list[int]) -> None:
    pixels = resize(Resize(width=256), InputFile(big_jpeg, "image/jpeg", "big"), ctx).pixels
    flags = cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION
    assert decodes == [flags]
    reduced = cv2.imdecode(np.fromfile(big_jpeg, np.uint8), flags)
    assert reduced.shape == (375, 500, 3)
    expected = cv2.resize(reduced, (256, 192), interpolation=cv2.INTER_AREA)
    assert _diff(pixels, expected).max() <= 1


@pytest.mark.parametrize(
    "op",
    [
        Resize(width=300, upscale=True),  # 300 x 150 = 45,000 pixels
        Resize(width=1000, height=1000, fit="contain"),  # a 1,000,000-pixel box
        Resize(width=400, height=200, fit="fill", upscale=True),
    ],
)
def test_resize_over_max_output_pixels(op: Resize, tmp_path: Path, decodes: list[int]) -> None:
    ctx = LocalContext(workdir=tmp_path, limits=LimitsSettings(max_output_pixels=40_000))
    with pytest.raises(UsageError, match="more than 40,000"):
        resize(op, _file(tmp_path, _noise(50, 100)), ctx)
    assert decodes == []  # refused from the header, before any pixel exists


def test_resize_applies_exif_orientation(tmp_path: Path, ctx: LocalContext) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    item = _pil_file(tmp_path, _rgb(_marked(40, 60)), "JPEG", quality=95, exif=exif.tobytes())
    pixels = resize(Resize(width=20), item, ctx).pixels
    assert pixels.shape == (30, 20, 3)
    assert _red_corner(pixels[:, :, ::-1]) == "TR"
    with Image.open(item.path) as source:
        upright = ImageOps.exif_transpose(source).resize((20, 30), Image.Resampling.BOX)
    assert _diff(pixels[:, :, ::-1], np.asarray(upright)).mean() < 4


# -- crop ------------------------------------------------------------------------------


@pytest.fixture
def turned_png(tmp_path: Path) -> tuple[InputFile, np.ndarray]:
    """A 50 x 30 PNG stored sideways (EXIF orientation 6) and its upright BGR pixels."""
    exif = Image.Exif()
    exif[0x0112] = 6
    item = _pil_file(tmp_path, _rgb(_noise(30, 50)), "PNG", exif=exif.tobytes())
    with Image.open(item.path) as source:
        upright = np.asarray(ImageOps.exif_transpose(source).convert("RGB"))[:, :, ::-1]
    assert upright.shape == (50, 30, 3)
    return item, upright


def test_crop_box_is_a_slice_of_the_upright_image(
    turned_png: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    item, upright = turned_png
    pixels = crop(Crop(x=4, y=9, width=10, height=20), item, ctx).pixels
    assert np.array_equal(pixels, upright[9:29, 4:14])


def test_crop_box_is_clipped_at_the_edges(
    turned_png: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    item, upright = turned_png
    pixels = crop(Crop(x=25, y=46, width=10, height=10), item, ctx).pixels
    assert np.array_equal(pixels, upright[46:50, 25:30])
    whole = crop(Crop(width=100, height=100, gravity="southeast"), item, ctx).pixels
    assert np.array_equal(whole, upright)


@pytest.mark.parametrize(("x", "y"), [(30, 0), (0, 50), (100, 100)])
def test_crop_box_outside_the_image(
    x: int, y: int, turned_png: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    with pytest.raises(UsageError, match="outside the 30 x 50 image"):
        crop(Crop(x=x, y=y, width=5, height=5), turned_png[0], ctx)


@pytest.mark.parametrize("gravity", GRAVITIES)
def test_crop_gravity(gravity: Gravity, tmp_path: Path, ctx: LocalContext) -> None:
    source = _noise(60, 100)
    pixels = crop(Crop(width=30, height=20, gravity=gravity), _file(tmp_path, source), ctx).pixels
    x, y = _offset(gravity, 70, 40)
    assert np.array_equal(pixels, source[y : y + 20, x : x + 30])


# -- rotate and flip -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("angle", "turns"),
    [(90, -1), (180, 2), (270, 1), (-90, 1), (-180, 2), (-270, -1), (360, 0), (0, 0)],
)
def test_rotate_right_angles_are_exact(
    angle: float, turns: int, tmp_path: Path, ctx: LocalContext
) -> None:
    source = _noise(30, 40, 4)
    pixels = rotate(Rotate(angle=angle), _file(tmp_path, source), ctx).pixels
    assert np.array_equal(pixels, np.rot90(source, turns))  # np.rot90 turns anticlockwise
    if angle == 90:
        assert np.array_equal(pixels, cv2.rotate(source, cv2.ROTATE_90_CLOCKWISE))


def _pil_rotated(bgr: np.ndarray, angle: float, canvas: tuple[int, int]) -> np.ndarray:
    """Pillow's bicubic rotation (clockwise) of the image centred on a transparent canvas."""
    h, w = bgr.shape[:2]
    layer = Image.new("RGBA", canvas, (0, 0, 0, 0))
    layer.paste(_rgb(bgr), ((canvas[0] - w) // 2, (canvas[1] - h) // 2))
    turned = layer.rotate(-angle, resample=Image.Resampling.BICUBIC)
    return cv2.cvtColor(np.asarray(turned), cv2.COLOR_RGBA2BGRA)


def _interior(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels opaque in both, away from the edges (where cubic kernels differ most)."""
    opaque = ((a[:, :, 3] == 255) & (b[:, :, 3] == 255)).astype(np.uint8)
    return cv2.erode(opaque, np.ones((7, 7), np.uint8)).astype(bool)


@pytest.mark.parametrize("expand", [True, False])
def test_rotate_45_degrees(expand: bool, tmp_path: Path, ctx: LocalContext) -> None:
    source = _smooth(30, 40, noise=0)
    pixels = rotate(Rotate(angle=45, expand=expand), _file(tmp_path, source), ctx).pixels
    c = s = math.sqrt(0.5)
    size = (math.ceil(40 * c + 30 * s), math.ceil(40 * s + 30 * c)) if expand else (40, 30)
    assert (pixels.shape[1], pixels.shape[0], pixels.shape[2]) == (*size, 4)
    h, w = pixels.shape[:2]
    assert [pixels[y, x, 3] for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1))] == [0] * 4
    # Both canvas sides exceed the image's by an even number: Pillow can centre it exactly.
    expected = _pil_rotated(source, 45, size)
    inside = _interior(pixels, expected)
    assert inside.sum() > (300 if expand else 500)
    assert _diff(pixels, expected)[inside].max() <= 2


@pytest.mark.parametrize(("w", "h", "angle"), [(60, 40, 45), (40, 30, 45), (41, 30, 30)])
def test_rotated_image_is_centred_on_its_canvas(
    w: int, h: int, angle: float, tmp_path: Path, ctx: LocalContext
) -> None:
    """The opaque area's centroid is the canvas centre, odd margins included."""
    op = Rotate(angle=angle)
    pixels = rotate(op, _file(tmp_path, np.full((h, w, 3), 200, np.uint8)), ctx).pixels
    r = math.radians(angle)
    size = (
        math.ceil(w * abs(math.cos(r)) + h * abs(math.sin(r))),
        math.ceil(w * abs(math.sin(r)) + h * abs(math.cos(r))),
    )
    assert (pixels.shape[1], pixels.shape[0]) == size
    alpha = pixels[:, :, 3].astype(np.float64)
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    centroid = ((xs * alpha).sum() / alpha.sum(), (ys * alpha).sum() / alpha.sum())
    assert centroid == pytest.approx(((size[0] - 1) / 2, (size[1] - 1) / 2), abs=0.05)
    assert alpha.sum() / 255 == pytest.approx(w * h, rel=0.02)  # nothing cut off


def test_rotate_fills_corners_with_the_background(tmp_path: Path, ctx: LocalContext) -> None:
    pixels = rotate(
        Rotate(angle=30, background="#00ff00"), _file(tmp_path, _noise(30, 40)), ctx
    ).pixels
    assert pixels.shape == (46, 50, 3)  # ceil(40 cos 30 + 30 sin 30), ceil(40 sin 30 + 30 cos 30)
    h, w = pixels.shape[:2]
    for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        assert pixels[y, x].tolist() == [0, 255, 0]


def test_rotate_canvas_over_max_output_pixels(tmp_path: Path, decodes: list[int]) -> None:
    ctx = LocalContext(workdir=tmp_path, limits=LimitsSettings(max_output_pixels=2_000))
    item = _file(tmp_path, _noise(30, 40))  # 1,200 pixels; 50 x 50 once turned 45 degrees
    with pytest.raises(UsageError, match="more than 2,000"):
        rotate(Rotate(angle=45), item, ctx)
    assert decodes == []
    assert rotate(Rotate(angle=45, expand=False), item, ctx).pixels.shape == (30, 40, 4)


@pytest.mark.parametrize(("axis", "axes"), [("horizontal", 1), ("vertical", 0), ("both", (0, 1))])
def test_flip(axis: Any, axes: int | tuple[int, int], tmp_path: Path, ctx: LocalContext) -> None:
    source = _noise(30, 40, 4)
    pixels = flip(Flip(axis=axis), _file(tmp_path, source), ctx).pixels
    assert np.array_equal(pixels, np.flip(source, axes))


# -- filter ----------------------------------------------------------------------------


@pytest.fixture
def photo(tmp_path: Path) -> tuple[InputFile, np.ndarray]:
    source = _smooth(48, 64, noise=10)
    return _file(tmp_path, source, name="photo"), source


def _filtered(op: Filter, item: InputFile | Picture, ctx: LocalContext) -> np.ndarray:
    return apply_filter(op, item, ctx).pixels


@pytest.mark.parametrize("sigma", [None, 3.5])
def test_blur_equals_gaussian_blur(
    sigma: float | None, photo: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    item, source = photo
    expected = cv2.GaussianBlur(source, (0, 0), sigma or 2.0)
    assert np.array_equal(_filtered(Filter(kind="blur", sigma=sigma), item, ctx), expected)


@pytest.mark.parametrize("size", [None, 5, 7])
def test_median_equals_median_blur(
    size: int | None, photo: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    item, source = photo
    expected = cv2.medianBlur(source, size or 3)
    assert np.array_equal(_filtered(Filter(kind="median", size=size), item, ctx), expected)


def test_median_7_on_16_bit(tmp_path: Path, ctx: LocalContext) -> None:
    source = _noise(40, 50, 3, np.uint16)
    pixels = _filtered(Filter(kind="median", size=7), _file(tmp_path, source), ctx)
    assert pixels.dtype == np.uint16
    expected = median_filter(source, size=(7, 7, 1))
    assert np.array_equal(pixels[3:-3, 3:-3], expected[3:-3, 3:-3])


def test_median_7_is_the_same_filter_at_both_depths(
    photo: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    _, source = photo
    deep = source.astype(np.uint16) * 257  # the median commutes with the scaling
    eight = _filtered(Filter(kind="median", size=7), _picture(source), ctx)
    sixteen = _filtered(Filter(kind="median", size=7), _picture(deep), ctx)
    assert np.array_equal(sixteen, eight.astype(np.uint16) * 257)


def _unsharp_reference(
    image: np.ndarray, sigma: float, amount: float, threshold: float
) -> np.ndarray:
    """``pixels + amount * (pixels - blur)``, unchanged where ``|pixels - blur| < threshold``
    (the blur in the samples' own type, as the filter documents)."""
    source = image.astype(np.float64)
    blurred = cv2.GaussianBlur(image, (0, 0), sigma).astype(np.float64)
    out = np.clip(np.floor(source + amount * (source - blurred) + 0.5), 0, 255)
    keep = np.abs(source - blurred) < threshold
    out[keep] = source[keep]
    return out


@pytest.mark.parametrize(
    ("params", "args"),
    [({}, (1.0, 1.0, 0.0)), ({"sigma": 2.5, "amount": 0.7, "threshold": 6}, (2.5, 0.7, 6.0))],
)
def test_unsharp(
    params: dict[str, float], args: tuple[float, float, float],
    photo: tuple[InputFile, np.ndarray], ctx: LocalContext,
) -> None:  # fmt: skip
    item, source = photo
    pixels = _filtered(Filter(kind="unsharp", **params), item, ctx)  # type: ignore[arg-type]
    assert pixels.dtype == np.uint8
    assert _diff(pixels, _unsharp_reference(source, *args)).max() <= 1

    def detail(image: np.ndarray) -> float:
        return float(cv2.Laplacian(image.astype(np.float64), cv2.CV_64F).std())

    assert detail(pixels) > 1.2 * detail(source)


@pytest.mark.parametrize(
    ("params", "args"),
    [({}, (9, 50.0, 5.0)), ({"size": 5, "sigma": 3.0, "sigma_color": 30.0}, (5, 30.0, 3.0))],
)
def test_bilateral_equals_opencv(
    params: dict[str, Any], args: tuple[int, float, float],
    photo: tuple[InputFile, np.ndarray], ctx: LocalContext,
) -> None:  # fmt: skip
    item, source = photo
    expected = cv2.bilateralFilter(source, *args)
    assert np.array_equal(_filtered(Filter(kind="bilateral", **params), item, ctx), expected)


def test_grayscale(photo: tuple[InputFile, np.ndarray], tmp_path: Path, ctx: LocalContext) -> None:
    item, source = photo
    gray = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(_filtered(Filter(kind="grayscale"), item, ctx), gray)
    alpha = _noise(48, 64, 1, seed=5)
    bgra = np.dstack([source, alpha])
    pixels = _filtered(Filter(kind="grayscale"), _file(tmp_path, bgra, name="bgra"), ctx)
    assert pixels.shape == (48, 64, 4)
    assert np.array_equal(pixels, np.dstack([gray, gray, gray, alpha]))


@pytest.mark.parametrize(("clip", "tiles"), [(None, None), (4.0, 4)])
def test_clahe_equalises_lightness(
    clip: float | None, tiles: int | None, photo: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    item, source = photo
    clahe = cv2.createCLAHE(clipLimit=clip or 2.0, tileGridSize=(tiles or 8, tiles or 8))
    lab = cv2.cvtColor(source, cv2.COLOR_BGR2Lab)
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    expected = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)
    assert np.array_equal(
        _filtered(Filter(kind="clahe", clip_limit=clip, tiles=tiles), item, ctx), expected
    )
    gray = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(
        _filtered(Filter(kind="clahe", clip_limit=clip, tiles=tiles), _picture(gray), ctx),
        clahe.apply(gray),
    )


FILTERS_16 = [
    Filter(kind="blur"), Filter(kind="median"), Filter(kind="median", size=7),
    Filter(kind="unsharp"), Filter(kind="bilateral"), Filter(kind="grayscale"),
    Filter(kind="clahe"),
]  # fmt: skip


@pytest.mark.parametrize("op", FILTERS_16, ids=lambda op: f"{op.kind}-{op.size or ''}")
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_filters_keep_depth(
    op: Filter, channels: int, photo: tuple[InputFile, np.ndarray], tmp_path: Path,
    ctx: LocalContext,
) -> None:  # fmt: skip
    _, source = photo
    if channels == 1:
        source = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
    elif channels == 4:
        source = np.dstack([source, _noise(48, 64, 1, seed=9)])
    deep = source.astype(np.uint16) * 257
    pixels = _filtered(op, _file(tmp_path, deep, name="deep"), ctx)
    assert pixels.dtype == np.uint16
    eight = _filtered(op, _picture(source), ctx)
    assert pixels.shape == eight.shape
    if channels == 4:
        assert np.array_equal(pixels[:, :, 3], deep[:, :, 3])  # alpha untouched
    if op.kind == "clahe":
        return  # a different histogram: see test_clahe_16_bit_honours_clip_limit
    # The same filter as on the 8-bit image, to within rounding (borders aside for scipy).
    near = _diff(pixels.astype(np.float64) / 257, eight)[3:-3, 3:-3]
    assert near.max() <= 1


def test_clahe_16_bit_honours_clip_limit(
    photo: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    _, source = photo
    deep = _picture(source.astype(np.uint16) * 257)
    low = _filtered(Filter(kind="clahe", clip_limit=0.5), deep, ctx)
    high = _filtered(Filter(kind="clahe", clip_limit=40), deep, ctx)
    eight_low = _filtered(Filter(kind="clahe", clip_limit=0.5), _picture(source), ctx)
    eight_high = _filtered(Filter(kind="clahe", clip_limit=40), _picture(source), ctx)
    assert not np.array_equal(eight_low, eight_high)  # as on 8-bit images
    assert not np.array_equal(low, high)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "blur", "size": 3},
        {"kind": "median", "size": 4},
        {"kind": "median", "sigma": 1},
        {"kind": "grayscale", "sigma": 1},
        {"kind": "clahe", "amount": 1},
        {"kind": "unsharp", "tiles": 4},
        {"kind": "bilateral", "clip_limit": 2},
        {"kind": "blur", "sigma": 0},
        {"kind": "median", "size": 33},
        {"kind": "sharpen"},
        {"kind": "blur", "radius": 2},
    ],
)
def test_filter_validation(body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"op": "filter", **body}, Filter)


def test_filter_valid_parameters() -> None:
    for body in (
        {"kind": "median", "size": 7},
        {"kind": "unsharp", "sigma": 1, "amount": 0, "threshold": 3},
        {"kind": "bilateral", "size": 4, "sigma": 2, "sigma_color": 10},
        {"kind": "clahe", "clip_limit": 3, "tiles": 2},
        {"kind": "grayscale"},
    ):
        assert msgspec.convert({"op": "filter", **body}, Filter).kind == body["kind"]


# -- denoise ---------------------------------------------------------------------------


def test_denoise_colour_equals_opencv(
    photo: tuple[InputFile, np.ndarray], ctx: LocalContext
) -> None:
    item, source = photo
    pixels = denoise(Denoise(), item, ctx).pixels
    assert np.array_equal(pixels, cv2.fastNlMeansDenoisingColored(source, None, 5, 5, 7, 21))
    op = Denoise(strength=12, colour_strength=4, template=5, search=11)
    expected = cv2.fastNlMeansDenoisingColored(source, None, 12, 4, 5, 11)
    assert np.array_equal(denoise(op, item, ctx).pixels, expected)


def test_denoise_gray_equals_opencv(
    photo: tuple[InputFile, np.ndarray], tmp_path: Path, ctx: LocalContext
) -> None:
    gray = cv2.cvtColor(photo[1], cv2.COLOR_BGR2GRAY)
    op = Denoise(strength=9, template=5, search=15)
    pixels = denoise(op, _file(tmp_path, gray, name="gray"), ctx).pixels
    assert np.array_equal(pixels, cv2.fastNlMeansDenoising(gray, None, 9, 5, 15))


def test_denoise_keeps_alpha(photo: tuple[InputFile, np.ndarray], ctx: LocalContext) -> None:
    source = photo[1]
    alpha = _noise(48, 64, 1, seed=3)
    pixels = denoise(Denoise(), _picture(np.dstack([source, alpha])), ctx).pixels
    expected = cv2.fastNlMeansDenoisingColored(source, None, 5, 5, 7, 21)
    assert np.array_equal(pixels, np.dstack([expected, alpha]))


@pytest.mark.parametrize("channels", [1, 3])
def test_denoise_reduces_noise(channels: int, tmp_path: Path, ctx: LocalContext) -> None:
    rng = np.random.default_rng(7)
    shape = (64, 64) if channels == 1 else (64, 64, 3)
    noisy = np.clip(128 + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)
    op = Denoise(strength=15, colour_strength=15)
    pixels = denoise(op, _file(tmp_path, noisy), ctx).pixels
    assert pixels.shape == noisy.shape
    assert pixels.std() < noisy.std() / 3
    assert abs(pixels.mean() - 128) < 2
    assert ctx.events and ctx.events[0][1] == "denoising"


@pytest.mark.parametrize("channels", [1, 3])
def test_denoise_16_bit(channels: int, ctx: LocalContext) -> None:
    rng = np.random.default_rng(7)
    shape = (48, 48) if channels == 1 else (48, 48, 3)
    noisy = np.clip(30_000 + rng.normal(0, 3_000, shape), 0, 65535).astype(np.uint16)
    pixels = denoise(Denoise(strength=15), _picture(noisy), ctx).pixels
    assert pixels.dtype == np.uint16 and pixels.shape == noisy.shape
    assert pixels.std() < noisy.std() / 2


@pytest.mark.parametrize(
    "body",
    [
        {"template": 6},
        {"search": 20},
        {"template": 9, "search": 7},  # search smaller than the template
        {"strength": 0.5},
        {"colour_strength": 31},
        {"template": 13},
        {"size": 3},
    ],
)
def test_denoise_validation(body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"op": "denoise", **body}, Denoise)
    assert msgspec.convert({"op": "denoise", "template": 3, "search": 5}, Denoise).search == 5


# -- archive ---------------------------------------------------------------------------


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def _doc(tmp_path: Path, filename: str, data: bytes, media_type: str, name: str) -> InputFile:
    path = tmp_path / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return InputFile(path=path, media_type=media_type, name=name)


@pytest.fixture
def documents(tmp_path: Path) -> list[InputFile]:
    jpeg = _pil_file(tmp_path, _rgb(_smooth(20, 30)), "JPEG", name="photo")
    png = _file(tmp_path, _noise(10, 10), name="thumb")
    meta = _doc(
        tmp_path, "meta.json", b'{"width": 30, "height": 20}' * 50, "application/json", "meta"
    )
    return [jpeg, png, meta]


def test_archive_entries(documents: list[InputFile], ctx: LocalContext) -> None:
    [zipped] = archive(Archive(name="bundle"), documents, ctx)
    assert (zipped.path, zipped.media_type, zipped.name) == (
        ctx.workdir / "bundle.zip", "application/zip", "bundle",
    )  # fmt: skip
    with zipfile.ZipFile(zipped.path) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["photo.jpeg", "thumb.png", "meta.json"]
        assert [i.compress_type for i in infos] == [
            zipfile.ZIP_STORED, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
        ]  # fmt: skip
        for info, item in zip(infos, documents, strict=True):
            assert zf.read(info) == item.path.read_bytes()
    assert ctx.events[-1] == (1.0, "3 of 3 entries")
    assert [f for f, _ in ctx.events] == sorted(f for f, _ in ctx.events)


def test_archive_entry_keeps_an_extension_already_in_the_name(
    tmp_path: Path, ctx: LocalContext
) -> None:
    item = _file(tmp_path, _noise(8, 8), name="scan")
    named = InputFile(path=item.path, media_type="image/png", name="scan.png")
    [zipped] = archive(Archive(), [named], ctx)
    assert _zip_names(zipped.path) == ["scan.png"]


def test_archive_renames_duplicates(tmp_path: Path, ctx: LocalContext) -> None:
    items = [
        _doc(tmp_path / str(i), "a.json", f'{{"n": {i}}}'.encode(), "application/json", "a")
        for i in range(3)
    ]
    [zipped] = archive(Archive(), items, ctx)
    with zipfile.ZipFile(zipped.path) as zf:
        assert zf.namelist() == ["a.json", "2-a.json", "3-a.json"]
        assert [zf.read(n) for n in zf.namelist()] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


def test_archive_keep_returns_the_outputs_too(
    documents: list[InputFile], ctx: LocalContext
) -> None:
    out = archive(Archive(name="all", keep=True), documents, ctx)
    assert out[:-1] == documents
    assert out[-1].path == ctx.workdir / "all.zip"


def test_empty_archive(ctx: LocalContext) -> None:
    with pytest.raises(UsageError, match="empty"):
        archive(Archive(), [], ctx)
    assert list(ctx.workdir.iterdir()) == []


def test_archive_includes_earlier_results(
    documents: list[InputFile], tmp_path: Path, ctx: LocalContext
) -> None:
    job = "0190a4b2-7c1e-7000-8000-000000000001"
    earlier = _doc(
        tmp_path / "results" / job, "old.png", b"\x89PNG old", "image/png", f"{job}/old.png"
    )
    notes = _doc(
        tmp_path / "results" / job, "notes.txt", b"notes " * 100, "text/plain", f"{job}/notes.txt"
    )
    ctx.resources["results"] = [earlier, notes]
    [zipped] = archive(Archive(), documents[:1], ctx)
    with zipfile.ZipFile(zipped.path) as zf:
        assert zf.namelist() == ["photo.jpeg", f"{job}/old.png", f"{job}/notes.txt"]
        assert zf.read(f"{job}/old.png") == b"\x89PNG old"
        assert zf.getinfo(f"{job}/notes.txt").compress_type == zipfile.ZIP_DEFLATED
    # Only earlier results, no inputs: still an archive.
    [alone] = archive(Archive(name="old"), [], ctx)
    assert _zip_names(alone.path) == [f"{job}/old.png", f"{job}/notes.txt"]


# -- run_pipeline ----------------------------------------------------------------------


def _inputs(names: str, make: Callable[[str], InputFile]) -> list[InputFile]:
    return [make(n) for n in names]


def test_chain_decodes_once_and_encodes_once(
    tmp_path: Path, ctx: LocalContext, decodes: list[int], encodes: list[str]
) -> None:
    items = _inputs("ab", lambda n: _file(tmp_path, _smooth(80, 120), "jpg", n))
    pipeline: list[Op] = [
        Resize(width=60),
        Crop(width=40, height=30),
        Convert(format="webp", quality=90),
    ]
    outputs = run_pipeline(pipeline, items, ctx)
    assert len(decodes) == 2 and encodes == [".webp", ".webp"]
    assert [(o.name, o.path.name, o.media_type) for o in outputs] == [
        ("a", "a.webp", "image/webp"), ("b", "b.webp", "image/webp"),
    ]  # fmt: skip
    for out, item in zip(outputs, items, strict=True):
        decoded = _read(out.path)
        full = cv2.imread(str(item.path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        expected = cv2.resize(full, (60, 40), interpolation=cv2.INTER_AREA)[5:35, 10:50]
        assert decoded.shape == (30, 40, 3) and _diff(decoded, expected).mean() < 4
    assert [f for f, _ in ctx.events] == pytest.approx([0.5, 1.0])


def _branch(**branches: list[Op]) -> Branch[Op]:
    return Branch(branches=[NamedPipeline(name=k, pipeline=v) for k, v in branches.items()])


def _branches() -> Branch[Op]:
    return _branch(
        small=[Resize(width=30)],
        web=[Convert(format="webp", lossless=True)],
        gray=[Filter(kind="grayscale"), Flip()],
    )


def test_branch_names_outputs_per_input(tmp_path: Path, ctx: LocalContext) -> None:
    sources = {n: _noise(40, 60, seed=i) for i, n in enumerate("ab")}
    items = _inputs("ab", lambda n: _file(tmp_path, sources[n], name=n))
    outputs = run_pipeline([_branches()], items, ctx)
    assert [(o.name, o.path.name, o.media_type) for o in outputs] == [
        ("a.small", "a.small.png", "image/png"),
        ("a.web", "a.web.webp", "image/webp"),
        ("a.gray", "a.gray.png", "image/png"),
        ("b.small", "b.small.png", "image/png"),
        ("b.web", "b.web.webp", "image/webp"),
        ("b.gray", "b.gray.png", "image/png"),
    ]
    for n in "ab":
        source = sources[n]
        small = cv2.resize(source, (30, 20), interpolation=cv2.INTER_AREA)
        assert np.array_equal(_read(ctx.workdir / f"{n}.small.png"), small)
        assert np.array_equal(_read(ctx.workdir / f"{n}.web.webp"), source)
        gray = np.flip(cv2.cvtColor(source, cv2.COLOR_BGR2GRAY), 1)
        assert np.array_equal(_read(ctx.workdir / f"{n}.gray.png"), gray)


def test_branch_then_archive_gives_one_zip(tmp_path: Path, ctx: LocalContext) -> None:
    items = _inputs("abc", lambda n: _file(tmp_path, _noise(40, 60), name=n))
    outputs = run_pipeline([Flip(), _branches(), Archive(name="bundle")], items, ctx)
    assert [(o.name, o.path.name, o.media_type) for o in outputs] == [
        ("bundle", "bundle.zip", "application/zip")
    ]
    with zipfile.ZipFile(outputs[0].path) as zf:
        expected = [
            f"{n}.{b}.{e}"
            for n in "abc"
            for b, e in (("small", "png"), ("web", "webp"), ("gray", "png"))
        ]
        assert zf.namelist() == expected
        for name in expected:
            assert zf.read(name) == (ctx.workdir / name).read_bytes()
    fractions = [f for f, _ in ctx.events]
    assert fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    assert fractions[-1] == pytest.approx(1.0)


def test_archive_entries_match_branch_file_names(tmp_path: Path, ctx: LocalContext) -> None:
    items = [_file(tmp_path, _noise(20, 30), name="a")]
    branch = _branch(webp=[Convert(format="webp")], png=[Flip()])
    outputs = run_pipeline([branch, Archive(keep=True)], items, ctx)
    files = [o.path.name for o in outputs[:-1]]
    assert files == ["a.webp.webp", "a.png.png"]
    assert _zip_names(outputs[-1].path) == files


def test_progress_is_monotone_and_ends_at_one(tmp_path: Path, ctx: LocalContext) -> None:
    items = _inputs("abcd", lambda n: _file(tmp_path, _noise(24, 32), name=n))
    pipeline: list[Op] = [Resize(width=16), Denoise(template=3, search=5), Flip()]
    run_pipeline(pipeline, items, ctx)
    fractions = [f for f, _ in ctx.events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [f for f, m in ctx.events if m is None] == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize(
    ("fmt", "media_type", "ext", "pil_format"),
    [
        ("PNG", "image/png", "png", "PNG"),
        ("GIF", "image/png", "png", "PNG"),
        ("BMP", "image/png", "png", "PNG"),
        ("TIFF", "image/tiff", "tif", "TIFF"),
        ("JPEG", "image/jpeg", "jpg", "JPEG"),
        ("WEBP", "image/webp", "webp", "WEBP"),
    ],
)
def test_picture_left_at_the_end_is_encoded_in_the_source_format(
    fmt: str, media_type: str, ext: str, pil_format: str, tmp_path: Path, ctx: LocalContext
) -> None:
    item = _pil_file(tmp_path, _rgb(_smooth(24, 32)), fmt, name="in")
    [out] = run_pipeline([Flip(axis="vertical")], [item], ctx)
    assert (out.name, out.path.name, out.media_type) == ("in", f"in.{ext}", media_type)
    image = _pil(out.path)
    assert image.format == pil_format
    with Image.open(item.path) as source:
        expected = np.flip(np.asarray(source.convert("RGB")), 0)
    got = np.asarray(image.convert("RGB"))
    if fmt in ("JPEG", "WEBP"):  # encoded again, lossy
        assert _diff(got, expected).mean() < 3
    else:
        assert np.array_equal(got, expected)


def test_16_bit_picture_left_at_the_end_stays_16_bit(tmp_path: Path, ctx: LocalContext) -> None:
    source = _noise(20, 30, 3, np.uint16)
    [out] = run_pipeline([Flip()], [_file(tmp_path, source)], ctx)
    assert out.media_type == "image/png"
    assert np.array_equal(_read(out.path), np.flip(source, 1))
