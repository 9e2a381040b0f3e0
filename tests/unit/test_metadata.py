"""Tests of the ``metadata`` operation: rasters and FITS described from headers alone.

Expected values come from Pillow and astropy reading the same files (or the values the test
wrote), not from numbers copied out of the operation's output.
"""

from __future__ import annotations

import io
import math
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import msgspec
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms, PngImagePlugin, TiffImagePlugin, TiffTags
from PIL.TiffImagePlugin import IFDRational

from contracts.ops import Metadata
from tests.images import png_bomb
from worker.errors import UsageError
from worker.ops.api import InputFile, LocalContext, Picture
from worker.ops.metadata import ExifInfo, IccInfo, ImageMetadata, metadata

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
EXIF_IFD, GPS_IFD = ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo


def _file(tmp_path: Path, data: bytes, name: str = "src", declared: str = "image/png") -> InputFile:
    path = tmp_path / name
    path.write_bytes(data)
    return InputFile(path=path, media_type=declared, name=name)


def _saved(tmp_path: Path, image: Image.Image, fmt: str, **kwargs: Any) -> InputFile:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return _file(tmp_path, buf.getvalue(), f"src.{fmt.lower()}")


def _describe(
    ctx: LocalContext, item: InputFile | Picture, op: Metadata | None = None
) -> ImageMetadata:
    out = metadata(op or Metadata(), item, ctx)
    assert out.media_type == "application/json"
    assert out.name == item.name
    assert out.path.parent == ctx.workdir
    return msgspec.json.decode(out.path.read_bytes(), type=ImageMetadata)


def _srgb_icc() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def _text(value: object) -> str:
    """A string as the operation reports it: cut at the first NUL, trimmed."""
    return str(value).split("\0")[0].strip()


# -- JPEG with EXIF and GPS --------------------------------------------------------------


def _camera_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "Canon EOS R5"
    exif[ExifTags.Base.Software] = "Firmware 1.8.1"
    exif[ExifTags.Base.DateTime] = "2024:05:06 07:08:09"
    exif[ExifTags.Base.Orientation] = 6
    sub = exif.get_ifd(EXIF_IFD)
    sub[ExifTags.Base.ExposureTime] = IFDRational(1, 125)
    sub[ExifTags.Base.FNumber] = IFDRational(28, 10)
    sub[ExifTags.Base.ISOSpeedRatings] = 400
    sub[ExifTags.Base.FocalLength] = IFDRational(50, 1)
    sub[ExifTags.Base.LensModel] = "RF24-70mm F2.8 L IS USM"
    sub[ExifTags.Base.LensMake] = "Canon"
    sub[ExifTags.Base.DateTimeOriginal] = "2024:05:06 07:08:01"
    sub[ExifTags.Base.DateTimeDigitized] = "2024:05:06 07:08:02"
    sub[ExifTags.Base.OffsetTime] = "+10:00"
    sub[ExifTags.Base.ExposureProgram] = 3
    sub[ExifTags.Base.ExposureBiasValue] = IFDRational(-1, 3)
    gps = exif.get_ifd(GPS_IFD)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (IFDRational(33), IFDRational(51), IFDRational(2154, 100))
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (IFDRational(151), IFDRational(12), IFDRational(3))
    gps[ExifTags.GPS.GPSAltitudeRef] = b"\x01"
    gps[ExifTags.GPS.GPSAltitude] = IFDRational(125, 10)
    gps[ExifTags.GPS.GPSTimeStamp] = (IFDRational(21), IFDRational(7), IFDRational(30))
    gps[ExifTags.GPS.GPSDateStamp] = "2024:05:06"
    return exif


def _pillow_gps(path: Path) -> tuple[float, float, float]:
    """Latitude, longitude and altitude computed from Pillow's reading of the GPS IFD."""
    with Image.open(path) as im:
        gps = im.getexif().get_ifd(GPS_IFD)

    def degrees(dms: tuple[Any, ...], ref: str, negative: str) -> float:
        value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
        return -value if ref == negative else value

    altitude = float(gps[ExifTags.GPS.GPSAltitude])
    below = gps[ExifTags.GPS.GPSAltitudeRef] in (1, b"\x01")
    return (
        degrees(gps[ExifTags.GPS.GPSLatitude], gps[ExifTags.GPS.GPSLatitudeRef], "S"),
        degrees(gps[ExifTags.GPS.GPSLongitude], gps[ExifTags.GPS.GPSLongitudeRef], "W"),
        -altitude if below else altitude,
    )


def test_jpeg_exif_matches_pillow(tmp_path: Path, ctx: LocalContext) -> None:
    item = _saved(tmp_path, Image.new("RGB", (64, 48), "red"), "JPEG", exif=_camera_exif())
    item = InputFile(path=item.path, media_type="image/png", name="photo")  # a wrong label
    doc = _describe(ctx, item)

    with Image.open(item.path) as im:
        exif = im.getexif()
        sub = exif.get_ifd(EXIF_IFD)
        size, bits = im.size, im.bits  # type: ignore[attr-defined]
    assert doc.format == "image/jpeg"  # sniffed, not the declared type
    assert (doc.width, doc.height) == size
    assert (doc.channels, doc.bit_depth, doc.colour_space, doc.alpha) == (3, bits, "srgb", False)
    assert doc.orientation == exif[ExifTags.Base.Orientation] == 6
    assert doc.icc == IccInfo(present=False)
    assert doc.exif is not None and doc.exif.gps is not None
    e, gps = doc.exif, doc.exif.gps
    assert (e.make, e.model, e.software) == (
        exif[ExifTags.Base.Make], exif[ExifTags.Base.Model], exif[ExifTags.Base.Software]
    )  # fmt: skip
    assert (e.lens, e.lens_make) == (sub[ExifTags.Base.LensModel], sub[ExifTags.Base.LensMake])
    assert e.exposure_time == float(sub[ExifTags.Base.ExposureTime])
    assert e.exposure_time_text == "1/125"
    assert e.f_number == float(sub[ExifTags.Base.FNumber])
    assert e.focal_length == float(sub[ExifTags.Base.FocalLength])
    assert e.iso == sub[ExifTags.Base.ISOSpeedRatings]
    assert e.datetime == exif[ExifTags.Base.DateTime]
    assert e.datetime_original == sub[ExifTags.Base.DateTimeOriginal]
    assert e.datetime_digitized == sub[ExifTags.Base.DateTimeDigitized]
    assert e.offset_time == sub[ExifTags.Base.OffsetTime]
    assert e.orientation == 6
    latitude, longitude, altitude = _pillow_gps(item.path)
    assert latitude < 0 and longitude < 0 and altitude < 0
    assert gps.latitude == pytest.approx(latitude, abs=1e-9)
    assert gps.longitude == pytest.approx(longitude, abs=1e-9)
    assert gps.altitude == pytest.approx(altitude)
    assert gps.timestamp == "2024-05-06T21:07:30Z"
    assert e.tags is not None
    assert e.tags["ExposureProgram"] == sub[ExifTags.Base.ExposureProgram]
    assert e.tags["ExposureBiasValue"] == pytest.approx(float(sub[ExifTags.Base.ExposureBiasValue]))
    assert "Make" not in e.tags and "GPSLatitude" not in e.tags  # reported as fields
    assert not doc.issues


def test_exif_can_be_left_out(tmp_path: Path, ctx: LocalContext) -> None:
    item = _saved(tmp_path, Image.new("RGB", (16, 16)), "JPEG", exif=_camera_exif())
    doc = _describe(ctx, item, Metadata(exif=False))
    assert doc.exif is None
    assert doc.orientation == 6  # still the orientation readers apply
    assert b'"exif"' not in (ctx.workdir / "src.jpeg.json").read_bytes()


def test_json_is_none_free_and_names_are_stable(tmp_path: Path, ctx: LocalContext) -> None:
    item = _saved(tmp_path, Image.new("L", (8, 8)), "PNG")
    raw = metadata(Metadata(), item, ctx).path.read_bytes()
    assert b"null" not in raw
    assert set(msgspec.json.decode(raw)) == {
        "format", "width", "height", "channels", "bit_depth", "sample_format", "colour_space",
        "alpha", "frames", "orientation", "icc", "xmp",
    }  # fmt: skip
    msgspec.json.schema(ImageMetadata)  # the Structs form a valid schema


def test_exposure_text_reduces_rationals(tmp_path: Path, ctx: LocalContext) -> None:
    for stored, text in (((10, 2000), "1/200"), ((3, 10), "0.3"), ((5, 2), "2.5")):
        exif = Image.Exif()
        exif.get_ifd(EXIF_IFD)[ExifTags.Base.ExposureTime] = IFDRational(*stored)
        item = _saved(tmp_path, Image.new("RGB", (8, 8)), "JPEG", exif=exif)
        doc = _describe(ctx, item)
        assert doc.exif is not None
        assert doc.exif.exposure_time == pytest.approx(stored[0] / stored[1])
        assert doc.exif.exposure_time_text == text


# -- other raster layouts ------------------------------------------------------------------


def test_png_with_icc_and_xmp(tmp_path: Path, ctx: LocalContext) -> None:
    icc = _srgb_icc()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    item = _saved(tmp_path, Image.new("RGBA", (20, 10)), "PNG", icc_profile=icc, pnginfo=info)
    doc = _describe(ctx, item)
    description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    assert doc.icc is not None and doc.xmp is not None
    assert (doc.icc.present, doc.icc.size, doc.icc.description) == (
        True, len(icc), description.strip()
    )  # fmt: skip
    with Image.open(item.path) as im:
        assert (doc.xmp.present, doc.xmp.size) == (True, len(im.info["xmp"]))
    assert (doc.channels, doc.colour_space, doc.alpha, doc.frames) == (4, "srgb", True, 1)


def test_rgb_with_another_profile_is_not_called_srgb(tmp_path: Path, ctx: LocalContext) -> None:
    icc = bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes())
    doc = _describe(ctx, _saved(tmp_path, Image.new("RGB", (8, 8)), "PNG", icc_profile=icc))
    assert doc.colour_space == "rgb"
    assert doc.icc is not None
    description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    assert doc.icc.description == description.strip()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_sixteen_bit_png(tmp_path: Path, ctx: LocalContext, channels: int) -> None:
    shape = (6, 9) if channels == 1 else (6, 9, channels)
    ok, buf = cv2.imencode(".png", np.full(shape, 40000, np.uint16))
    assert ok
    doc = _describe(ctx, _file(tmp_path, buf.tobytes()))
    with Image.open(io.BytesIO(buf.tobytes())) as im:
        bands = len(im.getbands())
    assert (doc.width, doc.height, doc.bit_depth) == (9, 6, 16)
    assert doc.channels == bands == channels
    assert doc.colour_space == ("gray" if channels == 1 else "srgb")
    assert doc.alpha is (channels == 4)


def test_gray_alpha_png(tmp_path: Path, ctx: LocalContext) -> None:
    doc = _describe(ctx, _saved(tmp_path, Image.new("LA", (5, 7)), "PNG"))
    assert (doc.channels, doc.bit_depth, doc.colour_space, doc.alpha) == (2, 8, "gray", True)


def test_palette_png(tmp_path: Path, ctx: LocalContext) -> None:
    image = Image.new("P", (12, 12))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    doc = _describe(ctx, _saved(tmp_path, image, "PNG", bits=2, transparency=0))
    assert (doc.channels, doc.bit_depth, doc.colour_space, doc.alpha) == (1, 2, "palette", True)


def test_cmyk_and_ycck_jpeg(tmp_path: Path, ctx: LocalContext) -> None:
    item = _saved(tmp_path, Image.new("CMYK", (10, 10), (0, 50, 100, 0)), "JPEG")
    doc = _describe(ctx, item)
    assert (doc.channels, doc.colour_space, doc.alpha) == (4, "cmyk", False)
    data = item.path.read_bytes()
    app14 = data.index(b"Adobe") - 4  # FF EE, the length, "Adobe"...; the transform flag last
    assert data[app14 : app14 + 2] == b"\xff\xee"
    length = struct.unpack(">H", data[app14 + 2 : app14 + 4])[0]
    end = app14 + 2 + length
    ycck = _file(tmp_path, data[: end - 1] + b"\x02" + data[end:], "ycck.jpg")
    with Image.open(ycck.path) as im:
        assert im.info["adobe_transform"] == 2
    assert _describe(ctx, ycck).colour_space == "ycck"


def test_animated_gif(tmp_path: Path, ctx: LocalContext) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    item = _file(tmp_path, buf.getvalue(), "anim.gif")
    with Image.open(item.path) as im:
        n_frames = getattr(im, "n_frames", 1)
    doc = _describe(ctx, item)
    assert doc.frames == n_frames == 3
    assert (doc.format, doc.colour_space, doc.channels) == ("image/gif", "palette", 1)


def test_multipage_tiff_with_exif_and_xmp(tmp_path: Path, ctx: LocalContext) -> None:
    tiffinfo = TiffImagePlugin.ImageFileDirectory_v2()
    tiffinfo[ExifTags.Base.Make] = "Nikon"
    tiffinfo[700] = XMP
    tiffinfo.tagtype[700] = TiffTags.BYTE
    pages = [Image.new("RGB", (30, 20), c) for c in ("red", "green", "blue", "white")]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:], tiffinfo=tiffinfo)
    item = _file(tmp_path, buf.getvalue(), "pages.tif")
    with Image.open(item.path) as im:
        n_frames, make = getattr(im, "n_frames", 1), im.getexif()[ExifTags.Base.Make]
    doc = _describe(ctx, item)
    assert doc.pages == n_frames == 4 and doc.frames is None
    assert (doc.width, doc.height, doc.channels, doc.bit_depth) == (30, 20, 3, 8)
    assert doc.exif is not None and doc.exif.make == make
    assert doc.xmp is not None and doc.xmp.size == len(XMP)
    assert doc.exif.tags is None or "StripOffsets" not in doc.exif.tags


# An ICC header, one tag-table entry "desc", then anything (offset, size, the tag's body).
ICC_DESC = bytes(128) + struct.pack(">I", 1) + b"desc"


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400),
    st.one_of(st.binary(max_size=400), st.binary(max_size=200).map(ICC_DESC.__add__)),
)
def test_picture_with_any_metadata_bytes(exif: bytes, icc: bytes) -> None:
    """The EXIF and ICC readers take any bytes (a picture's come from earlier steps)."""
    picture = Picture(np.zeros((2, 3, 3), np.uint8), "p", "image/jpeg", exif=exif, icc=icc)
    with tempfile.TemporaryDirectory() as workdir:
        out = metadata(Metadata(), picture, LocalContext(workdir=Path(workdir)))
        msgspec.json.decode(out.path.read_bytes(), type=ImageMetadata)


def test_picture_is_described_from_its_array(ctx: LocalContext) -> None:
    exif = _camera_exif().tobytes().removeprefix(b"Exif\0\0")
    icc = _srgb_icc()
    picture = Picture(
        pixels=np.zeros((30, 40, 4), np.uint16),
        name="pic",
        source_type="image/png",
        orientation=1,
        exif=exif,
        icc=icc,
        xmp=XMP,
    )
    doc = _describe(ctx, picture)
    assert (doc.format, doc.width, doc.height, doc.channels) == ("image/png", 40, 30, 4)
    assert (doc.bit_depth, doc.sample_format, doc.alpha) == (16, "uint", True)
    assert doc.orientation == 1  # what is still to apply, not the stored tag
    assert doc.exif is not None and doc.exif.orientation == 6 and doc.exif.make == "Canon"
    assert doc.icc is not None and doc.icc.size == len(icc)
    assert doc.xmp is not None and doc.xmp.size == len(XMP)
    gray = Picture(pixels=np.zeros((5, 6), np.float32), name="g", source_type="image/tiff")
    doc = _describe(ctx, gray)
    assert (doc.colour_space, doc.bit_depth, doc.sample_format) == ("gray", 32, "float")


def test_result_names_stay_in_the_workdir(tmp_path: Path, ctx: LocalContext) -> None:
    item = _saved(tmp_path, Image.new("L", (4, 4)), "PNG")
    item = InputFile(path=item.path, media_type="image/png", name="a1b2/../photo.png")
    first = metadata(Metadata(), item, ctx)
    second = metadata(Metadata(), item, ctx)
    assert first.path.parent == second.path.parent == ctx.workdir
    assert first.path != second.path
    assert first.name == item.name


# -- refused inputs ----------------------------------------------------------------------


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and its kin so far (Linux's ``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "rchar":
            return int(value)
    raise AssertionError("/proc/self/io has no rchar")


def test_huge_png_is_refused_from_its_header(tmp_path: Path, ctx: LocalContext) -> None:
    """The IHDR claims 100,000 x 100,000 pixels and the IDAT holds 256 MiB (a hole: no disk
    space); the refusal reads the header, never the pixel data."""
    idat = 256 << 20
    path = tmp_path / "bomb.png"
    with path.open("wb") as f:
        f.write(png_bomb(100_000, 100_000)[:33])  # the signature and IHDR
        f.write(struct.pack(">I4s", idat, b"IDAT"))
        f.seek(idat, io.SEEK_CUR)
        f.write(b"\0" * 4 + struct.pack(">I4sI", 0, b"IEND", zlib.crc32(b"IEND")))
    item = InputFile(path=path, media_type="image/png", name="bomb")

    before = _bytes_read()
    with pytest.raises(UsageError, match="too large"):
        metadata(Metadata(), item, ctx)
    assert _bytes_read() - before < 64 << 10  # a few buffers of header
    assert list(ctx.workdir.iterdir()) == []

    before = _bytes_read()  # the counter sees reads of this file: a decode would show
    with path.open("rb") as f:
        f.read(1 << 20)
    assert _bytes_read() - before >= 1 << 20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello, world", "not a supported image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a supported image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00", "corrupt header"),
        (b"GIF89a\x10\x00\x10\x00\x80\x00\x00", "GIF"),  # a screen descriptor, then nothing
    ],
)
def test_not_an_image_or_corrupt_header(
    tmp_path: Path, ctx: LocalContext, data: bytes, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        metadata(Metadata(), _file(tmp_path, data), ctx)


# -- hostile EXIF ----------------------------------------------------------------------------

Entry = tuple[int, int, int, "bytes | int"]
"""(tag, type, count, value): bytes are laid out (inline if 4 or fewer), an int is written as
the raw offset field (to point anywhere)."""
SHORT, LONG, ASCII = 3, 4, 2


def _ascii(text: str) -> tuple[int, bytes]:
    raw = text.encode() + b"\0"
    return len(raw), raw


def _exif_block(
    ifd0: Sequence[Entry],
    exif: Sequence[Entry] | None = None,
    *,
    claim: int | None = None,
    cut: int | None = None,
    exif_offset: int | None = None,
) -> bytes:
    """A little-endian TIFF stream: IFD0 at 8, an optional Exif IFD after it, then the data.

    ``claim`` overrides IFD0's entry count, ``cut`` truncates the stream, ``exif_offset``
    overrides the Exif IFD pointer.
    """
    if exif is not None:
        ifd0 = [*ifd0, (0x8769, LONG, 1, 0)]  # patched below
    ifd0_size = 2 + 12 * len(ifd0) + 4
    exif_at = 8 + ifd0_size
    data_at = exif_at + (2 + 12 * len(exif) + 4 if exif is not None else 0)
    data = bytearray()

    def ifd(entries: Sequence[Entry], count: int) -> bytes:
        out = struct.pack("<H", count)
        for tag, kind, n, value in entries:
            if tag == 0x8769 and exif is not None:
                value = exif_at if exif_offset is None else exif_offset
            if isinstance(value, int):
                field = struct.pack("<I", value)
            elif len(value) <= 4:
                field = value.ljust(4, b"\0")
            else:
                field = struct.pack("<I", data_at + len(data))
                data.extend(value + b"\0" * (len(value) & 1))
            out += struct.pack("<HHI", tag, kind, n) + field
        return out + b"\0\0\0\0"

    body = ifd(ifd0, len(ifd0) if claim is None else claim)
    if exif is not None:
        body += ifd(exif, len(exif))
    stream = b"II*\x00" + struct.pack("<I", 8) + body + bytes(data)
    return stream[:cut] if cut is not None else stream


def _jpeg_with_app1(tiff: bytes, prefix: bytes = b"Exif\0\0") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(buf, "JPEG")
    payload = prefix + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    jpeg = buf.getvalue()
    return jpeg[:2] + app1 + jpeg[2:]


MAKE = (0x010F, ASCII, *_ascii("Hostile"))
MODEL = (0x0110, ASCII, *_ascii("Model 1"))


def _orientation(value: int) -> Entry:
    return (0x0112, SHORT, 1, struct.pack("<H", value))


@pytest.mark.parametrize("value", [0, 9, 99, 65535])
def test_invalid_orientation_is_reported_as_given_and_ignored(
    tmp_path: Path, ctx: LocalContext, value: int
) -> None:
    jpeg = _jpeg_with_app1(_exif_block([MAKE, _orientation(value)]))
    doc = _describe(ctx, _file(tmp_path, jpeg))
    assert doc.orientation == 1  # what readers apply
    assert doc.exif is not None
    assert (doc.exif.orientation, doc.exif.make) == (value, "Hostile")
    assert doc.issues and any(f"Orientation {value}" in i for i in doc.issues)


def test_huge_tag_count_is_skipped(tmp_path: Path, ctx: LocalContext) -> None:
    huge = (0x010E, ASCII, 0x7FFFFFFF, 64)  # ImageDescription claiming 2 GiB
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(_exif_block([MAKE, huge, MODEL]))))
    assert doc.exif is not None
    assert (doc.exif.make, doc.exif.model) == ("Hostile", "Model 1")
    assert doc.issues and any("ImageDescription" in i and "past the end" in i for i in doc.issues)


def test_long_value_is_listed_by_size(tmp_path: Path, ctx: LocalContext) -> None:
    note = (0x010E, ASCII, *_ascii("x" * 20_000))
    blob = (0x927C, 7, 3000, bytes(range(256)) * 11 + bytes(184))  # MakerNote, binary
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(_exif_block([MAKE, note]))))
    assert doc.exif is not None and doc.exif.omitted == {"ImageDescription": 20_001}
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(_exif_block([MAKE], [blob]))))
    assert doc.exif is not None and doc.exif.omitted == {"MakerNote": 3000}
    assert doc.exif.tags is None


def test_wrong_offsets_skip_what_they_point_to(tmp_path: Path, ctx: LocalContext) -> None:
    bad_make = (0x010F, ASCII, 20, 60_000)  # data past the end of the block
    exposure = (0x829A, 5, 1, struct.pack("<II", 1, 60))
    block = _exif_block([bad_make, MODEL], [exposure], exif_offset=50_000)
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(block)))
    assert doc.exif is not None
    assert (doc.exif.make, doc.exif.model, doc.exif.exposure_time) == (None, "Model 1", None)
    assert doc.issues and any("Make" in i for i in doc.issues)
    assert any("Exif IFD offset 50000" in i for i in doc.issues)


def test_truncated_ifd_reads_the_entries_present(tmp_path: Path, ctx: LocalContext) -> None:
    model = (0x0110, ASCII, 4, b"M-1\0")
    block = _exif_block([_orientation(3), model], claim=40, cut=8 + 2 + 24)
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(block)))
    assert doc.orientation == 1  # pixfleet.sniff gives up on a truncated IFD
    assert doc.exif is not None
    assert (doc.exif.orientation, doc.exif.model) == (3, "M-1")
    assert doc.issues and any("claims 40 entries" in i for i in doc.issues)


def test_ifd_loop_is_cut(tmp_path: Path, ctx: LocalContext) -> None:
    block = _exif_block([MAKE], [MODEL], exif_offset=8)  # the Exif IFD is IFD0 again
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(block)))
    assert doc.exif is not None and doc.exif.make == "Hostile"
    assert doc.issues and any("already read" in i for i in doc.issues)


@pytest.mark.parametrize(
    "tiff",
    [b"", b"XX*\x00\x08\x00\x00\x00", b"II+\x00\x08\x00\x00\x00\x00\x00\x00\x00", b"II*\x00"],
)
def test_exif_without_a_tiff_header(tmp_path: Path, ctx: LocalContext, tiff: bytes) -> None:
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(tiff)))
    assert doc.format == "image/jpeg" and doc.width == 8
    assert doc.exif is None or doc.exif == ExifInfo()
    assert doc.issues


def test_zero_denominators(tmp_path: Path, ctx: LocalContext) -> None:
    zero = struct.pack("<II", 1, 0)
    exif = [(0x829A, 5, 1, zero), (0x829D, 5, 1, zero), (0x9204, 10, 1, zero)]
    doc = _describe(ctx, _file(tmp_path, _jpeg_with_app1(_exif_block([MAKE], exif))))
    assert doc.exif is not None and doc.exif.make == "Hostile"
    assert doc.exif.exposure_time is None and doc.exif.f_number is None
    assert doc.exif.omitted == {"ExposureBiasValue": 8}


def test_gps_out_of_range_is_ignored(tmp_path: Path, ctx: LocalContext) -> None:
    exif = _camera_exif()
    exif.get_ifd(GPS_IFD)[ExifTags.GPS.GPSLatitude] = (IFDRational(95), IFDRational(0), 0)
    doc = _describe(ctx, _saved(tmp_path, Image.new("RGB", (8, 8)), "JPEG", exif=exif))
    assert doc.exif is not None and doc.exif.gps is not None
    assert doc.exif.gps.latitude is None and doc.exif.gps.longitude is not None
    assert doc.issues and any("latitude" in i for i in doc.issues)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_exif_never_breaks_the_op(tmp_path: Path, data: st.DataObject) -> None:
    """Any corruption of a real EXIF block gives a document (or a UsageError), nothing else."""
    block = bytearray(_camera_exif().tobytes().removeprefix(b"Exif\0\0"))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(block) - 1))
        block[at] = data.draw(st.integers(0, 255))
    block = block[: data.draw(st.integers(0, len(block)))]
    workdir = tmp_path / "fuzz"
    workdir.mkdir(exist_ok=True)
    item = _file(tmp_path, _jpeg_with_app1(bytes(block)))
    try:
        out = metadata(Metadata(), item, LocalContext(workdir=workdir))
    except UsageError:
        return
    msgspec.json.decode(out.path.read_bytes(), type=ImageMetadata)
    out.path.unlink()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from([b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08"]), st.binary())
def test_random_ifds_never_break_the_op(tmp_path: Path, head: bytes, body: bytes) -> None:
    workdir = tmp_path / "fuzz"
    workdir.mkdir(exist_ok=True)
    out = metadata(
        Metadata(), _file(tmp_path, _jpeg_with_app1(head + body)), LocalContext(workdir=workdir)
    )
    msgspec.json.decode(out.path.read_bytes(), type=ImageMetadata)
    out.path.unlink()


# -- FITS ------------------------------------------------------------------------------------


def _quiet(make: Callable[[], WCS]) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return make()


def _tan_header(rotation: float = 30.0) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [40.5, 25.5]
    scale = 0.5 / 3600
    theta = math.radians(rotation)
    w.wcs.cd = [
        [-scale * math.cos(theta), scale * math.sin(theta)],
        [scale * math.sin(theta), scale * math.cos(theta)],
    ]
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    header = w.to_header()
    header["CUNIT1"] = "DEG"  # astropy "fixes" this with a FITSFixedWarning
    header["OBJECT"] = ("M 31", "the target")
    return header


def _write_fits(path: Path, *hdus: Any) -> InputFile:
    fits.HDUList(list(hdus)).writeto(path)
    return InputFile(path=path, media_type="application/octet-stream", name=path.stem)


def _reference(header: fits.Header, shape: tuple[int, int]) -> dict[str, Any]:
    """Footprint, centre, radius, scale and rotation computed by astropy from the header."""
    w = _quiet(lambda: WCS(header)).celestial
    ny, nx = shape
    footprint = w.calc_footprint(axes=(nx, ny))
    centre = w.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
    corners = SkyCoord(footprint[:, 0], footprint[:, 1], unit="deg", frame=centre.frame)
    x0, y0 = w.wcs.crpix[0] - 1, w.wcs.crpix[1] - 1
    at, right, up = (w.pixel_to_world(x0 + dx, y0 + dy) for dx, dy in ((0, 0), (1, 0), (0, 1)))
    return {
        "footprint": footprint,
        "centre": (centre.ra.deg, centre.dec.deg),
        "radius": centre.separation(corners).deg.max(),
        "scale": (at.separation(right).arcsec, at.separation(up).arcsec),
        "rotation": at.position_angle(up).wrap_at("180d").deg,
    }


def test_fits_with_tan_wcs(tmp_path: Path, ctx: LocalContext) -> None:
    header = _tan_header(rotation=30.0)
    data = np.zeros((50, 80), np.float32)
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.zeros(7)), fits.Column("id", "J")]
    )
    item = _write_fits(
        tmp_path / "sky.fits", fits.PrimaryHDU(), fits.ImageHDU(data, header, "SCI"), table
    )
    doc = _describe(ctx, item)

    assert (doc.format, doc.width, doc.height) == ("application/fits", 80, 50)
    assert (doc.bit_depth, doc.sample_format) == (32, "float")
    assert doc.fits is not None and doc.wcs is not None
    with fits.open(item.path) as hdul:
        expected = [(i, h.name, type(h).__name__, h.header["BITPIX"]) for i, h in enumerate(hdul)]
        cards = [[c.keyword, c.value, c.comment] for c in hdul[1].header.cards]
        rows, columns = hdul[2].header["NAXIS2"], hdul[2].header["TFIELDS"]
    assert [(h.index, h.name, h.type, h.bitpix) for h in doc.fits] == expected
    assert [h.shape for h in doc.fits] == [[], [50, 80], [rows]]
    assert doc.fits[2].columns == columns == 2
    assert [list(c) for c in doc.fits[1].cards or []] == cards
    assert ["OBJECT", "M 31", "the target"] in [list(c) for c in doc.fits[1].cards or []]

    (summary,) = doc.wcs
    ref = _reference(header, data.shape)
    assert summary.hdu == 1 and not summary.sip
    assert summary.ctype == ["RA---TAN", "DEC--TAN"]
    assert summary.crval == [150.1, 2.2] and summary.crpix == [40.5, 25.5]
    assert (summary.equinox, summary.radesys) == (2000.0, "FK5")
    assert summary.pixel_scale == pytest.approx(ref["scale"], rel=1e-4)
    assert summary.pixel_scale == pytest.approx([0.5, 0.5], rel=1e-9)
    assert summary.rotation == pytest.approx(ref["rotation"], abs=1e-3)
    np.testing.assert_allclose(summary.footprint, ref["footprint"], rtol=0, atol=1e-9)
    assert summary.centre == pytest.approx(ref["centre"], abs=1e-9)
    assert summary.radius == pytest.approx(ref["radius"], rel=1e-6)


@pytest.mark.parametrize("rotation", [0.0, 90.0, -45.0, 170.0])
def test_wcs_rotation_is_the_position_angle_of_plus_y(
    tmp_path: Path, ctx: LocalContext, rotation: float
) -> None:
    header = _tan_header(rotation)
    item = _write_fits(tmp_path / "r.fits", fits.PrimaryHDU(np.zeros((50, 80), np.int16), header))
    doc = _describe(ctx, item)
    assert doc.wcs is not None
    ref = _reference(header, (50, 80))["rotation"]
    assert math.remainder(doc.wcs[0].rotation - ref, 360) == pytest.approx(0, abs=1e-3)


def test_fits_with_sip(tmp_path: Path, ctx: LocalContext) -> None:
    header = _tan_header(rotation=0.0)
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["A_ORDER"], header["B_ORDER"] = 2, 2
    header["A_2_0"], header["A_0_2"], header["B_1_1"] = 2e-4, 1e-4, 3e-4
    shape = (50, 80)
    item = _write_fits(tmp_path / "sip.fits", fits.PrimaryHDU(np.zeros(shape, np.int16), header))
    doc = _describe(ctx, item)
    assert doc.wcs is not None
    (summary,) = doc.wcs
    assert summary.sip
    ref = _reference(header, shape)
    np.testing.assert_allclose(summary.footprint, ref["footprint"], rtol=0, atol=1e-9)
    assert summary.centre == pytest.approx(ref["centre"], abs=1e-9)
    linear = _tan_header(rotation=0.0)
    undistorted = _reference(linear, shape)["footprint"]
    assert not np.allclose(summary.footprint, undistorted, rtol=0, atol=1e-6)  # SIP moved them


def test_compressed_fits(tmp_path: Path, ctx: LocalContext) -> None:
    header = _tan_header()
    data = np.arange(50 * 80, dtype=np.int16).reshape(50, 80)
    item = _write_fits(
        tmp_path / "comp.fits", fits.PrimaryHDU(), fits.CompImageHDU(data, header, name="COMP")
    )
    doc = _describe(ctx, item, Metadata(fits_header=False))
    assert doc.fits is not None and doc.wcs is not None
    with fits.open(item.path) as hdul:
        kind, bitpix = type(hdul[1]).__name__, hdul[1].header["BITPIX"]
    assert (doc.fits[1].type, doc.fits[1].name, doc.fits[1].bitpix) == (kind, "COMP", bitpix)
    assert kind == "CompImageHDU" and bitpix == 16
    assert doc.fits[1].shape == [50, 80]
    assert all(h.cards is None for h in doc.fits)
    assert doc.wcs[0].hdu == 1
    assert doc.wcs[0].centre == pytest.approx(_reference(header, (50, 80))["centre"], abs=1e-9)


def test_fits_without_wcs_and_cube(tmp_path: Path, ctx: LocalContext) -> None:
    item = _write_fits(tmp_path / "cube.fits", fits.PrimaryHDU(np.zeros((3, 4, 5), np.uint8)))
    doc = _describe(ctx, item)
    assert doc.wcs is None and doc.fits is not None
    assert doc.fits[0].shape == [3, 4, 5] and (doc.width, doc.height) == (5, 4)
    assert (doc.bit_depth, doc.sample_format) == (8, "uint")


# -- real camera files -----------------------------------------------------------------------


def test_camera_jpegs_match_pillow(ctx: LocalContext) -> None:
    from tests.realimages import CAMERA_JPEGS, real_images

    root = real_images()
    for name in CAMERA_JPEGS:
        path = root / name
        doc = _describe(ctx, InputFile(path=path, media_type="image/jpeg", name=path.stem))
        with Image.open(path) as im:
            exif = im.getexif()
            sub = exif.get_ifd(EXIF_IFD)
            size = im.size
        assert (doc.width, doc.height) == size, name
        assert doc.exif is not None, name
        assert doc.exif.make == _text(exif[ExifTags.Base.Make]), name
        assert doc.exif.model == _text(exif[ExifTags.Base.Model]), name
        exposure = sub[ExifTags.Base.ExposureTime]
        assert doc.exif.exposure_time == pytest.approx(float(exposure)), name
        assert doc.exif.exposure_time_text is not None, name
        assert doc.exif.f_number == pytest.approx(float(sub[ExifTags.Base.FNumber])), name


def test_other_real_images(ctx: LocalContext) -> None:
    from tests.realimages import (
        EXIF_TIFF,
        METADATA,
        MULTI_FRAME,
        SYNTHETIC_EXIF_JPEG,
        ZERO_BYTE,
        real_images,
    )

    root = real_images()

    def describe(name: str) -> ImageMetadata:
        return _describe(ctx, InputFile(path=root / name, media_type="", name=Path(name).stem))

    with Image.open(root / EXIF_TIFF) as im:
        make = im.getexif()[ExifTags.Base.Make]
    tiff = describe(EXIF_TIFF)
    assert tiff.exif is not None and tiff.exif.make == _text(make)
    synthetic = describe(SYNTHETIC_EXIF_JPEG)  # out-of-range values, reported as stored
    assert synthetic.exif is not None and synthetic.exif.make == "Make"
    assert synthetic.exif.gps is None  # its GPS date is 1999:99:99, its latitude 2**32 - 1
    assert synthetic.issues and any("GPSDateStamp" in i for i in synthetic.issues)
    canon = describe("piexif/r_canon.jpg")  # a GPS IFD holding only GPSVersionID
    assert canon.exif is not None and canon.exif.gps is None
    assert canon.exif.tags is not None and canon.exif.tags["GPSVersionID"] == [2, 3, 0, 0]
    for name, carriers in METADATA.items():
        doc = describe(name)
        assert doc.xmp is not None and doc.icc is not None
        assert (doc.xmp.present, doc.icc.present, doc.exif is not None) == (
            carriers.xmp, carriers.icc, carriers.exif
        ), name  # fmt: skip
    for name, frames in MULTI_FRAME.items():
        doc = describe(name)
        assert (doc.pages if doc.format == "image/tiff" else doc.frames) == frames, name
    described = describe("scikit-image/multipage_rgb.tif")  # Pillow cannot open it
    assert (described.format, described.pages) == ("image/tiff", 2)
    with pytest.raises(UsageError, match="empty"):
        describe(ZERO_BYTE)
