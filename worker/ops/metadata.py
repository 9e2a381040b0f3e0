"""The ``metadata`` operation: describe an image as JSON without decoding its pixels.

Runs in a worker child. Files are checked with ``pixfleet.sniff`` first (the bytes decide the
type and limits refuse bombs), then only headers are read: Pillow's lazy ``Image.open`` for
rasters, ``astropy.io.fits`` (memory-mapped, HDUs loaded lazily, data never touched) and
``astropy.wcs`` for FITS. EXIF is read by a small bounded TIFF reader here rather than
Pillow's, so hostile blocks (bad offsets, truncated IFDs, huge counts, loops) yield what could
be read plus ``issues``, never an exception. A ``Picture`` is described from its array and the
metadata bytes it carries. Must not import OpenCV (nothing here needs pixels).

The output, ``<name>.json`` (``application/json``); absent fields are unknown or do not apply::

    format         media type sniffed from the bytes (a Picture: its source_type)
    width, height  stored size, before orientation
    channels       samples per pixel as stored (palette images: 1)
    bit_depth      bits per sample (palette: bits per index); sample_format uint|int|float
    colour_space   srgb (RGB without a profile or with an sRGB one), rgb (another ICC
                   profile), gray, palette, cmyk, ycck, ycbcr, lab, hsv
    alpha          an alpha channel or a transparent colour key
    frames         animations and stills (GIF, PNG/APNG, WebP, JPEG, BMP); pages: TIFF
    orientation    the EXIF orientation readers apply, 1-8 (1 when absent or invalid; a
                   Picture: what is still to apply)
    icc            {present, size, description (the profile's desc tag)}
    xmp            {present, size}
    exif           (op.exif) make, model, lens, lens_make, exposure_time (s),
                   exposure_time_text ("1/125"), f_number, iso, focal_length (mm),
                   datetime, datetime_original, datetime_digitized, offset_time,
                   offset_time_original, offset_time_digitized, software, orientation (as
                   stored, even if invalid), gps {latitude, longitude (degrees, negative S
                   and W), altitude (m, negative below sea level), timestamp (ISO 8601 UTC)},
                   tags {name: value} (other readable simple tags, named as Pillow's
                   ExifTags or 0xNNNN), omitted {name: bytes} (binary or long values)
    fits           [{index, name, type (astropy HDU class), shape (numpy order; tables:
                   [rows]), bitpix, columns (tables), cards [[keyword, value, comment]]
                   (op.fits_header)}]; width, height and bit_depth (|BITPIX|) then describe
                   the first image HDU
    wcs            [{hdu, ctype, crval, crpix (header axis order), pixel_scale (arcsec/px,
                   [ra, dec]), rotation (position angle of the +y axis at the reference
                   pixel, degrees east of north), footprint (the 4 corner pixels' centres
                   as [ra, dec], distortion applied), centre [ra, dec], radius (degrees,
                   centre to the farthest corner), equinox, radesys, sip}]
    issues         what could not be read (the rest of the document still holds)

Text values are trimmed of NUL padding and surrounding spaces; dates are as stored.
"""

from __future__ import annotations

import math
import mmap
import struct
import warnings
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
from astropy.io import fits
from astropy.io.fits.card import Undefined
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from PIL import ExifTags, Image, UnidentifiedImageError

from contracts.ops import Metadata
from contracts.settings import LimitsSettings
from pixfleet.sniff import (
    BMP,
    FITS,
    GIF,
    JPEG,
    PNG,
    TIFF,
    WEBP,
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    inspect_image,
)
from worker.errors import UsageError
from worker.ops.api import InputFile, Item, OpContext, Picture

SampleFormat = Literal["uint", "int", "float"]
TagValue = str | int | float | list[str | int | float]
CardValue = bool | int | float | str | None


class _Doc(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Output Structs: fields left at their default (None) are not written."""


class IccInfo(_Doc):
    present: bool
    size: int | None = None
    description: str | None = None


class XmpInfo(_Doc):
    present: bool
    size: int | None = None


class GpsInfo(_Doc):
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    timestamp: str | None = None


class ExifInfo(_Doc):
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    lens_make: str | None = None
    exposure_time: float | None = None
    exposure_time_text: str | None = None
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None
    datetime: str | None = None
    datetime_original: str | None = None
    datetime_digitized: str | None = None
    offset_time: str | None = None
    offset_time_original: str | None = None
    offset_time_digitized: str | None = None
    software: str | None = None
    orientation: int | None = None
    gps: GpsInfo | None = None
    tags: dict[str, TagValue] | None = None
    omitted: dict[str, int] | None = None


class FitsHdu(_Doc):
    index: int
    name: str
    type: str
    shape: list[int]
    bitpix: int | None = None
    columns: int | None = None
    cards: list[tuple[str, CardValue, str]] | None = None


class WcsSummary(_Doc):
    hdu: int
    ctype: list[str]
    crval: list[float]
    crpix: list[float]
    pixel_scale: list[float]
    rotation: float
    footprint: list[list[float]]
    centre: list[float]
    radius: float
    sip: bool
    equinox: float | None = None
    radesys: str | None = None


class ImageMetadata(_Doc):
    """The document ``metadata`` writes (see the module docstring)."""

    format: str
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    bit_depth: int | None = None
    sample_format: SampleFormat | None = None
    colour_space: str | None = None
    alpha: bool | None = None
    frames: int | None = None
    pages: int | None = None
    orientation: int | None = None
    icc: IccInfo | None = None
    xmp: XmpInfo | None = None
    exif: ExifInfo | None = None
    fits: list[FitsHdu] | None = None
    wcs: list[WcsSummary] | None = None
    issues: list[str] | None = None


_MAX_ISSUES = 50
_MAX_ISSUE = 500  # characters
_MAX_HDUS = 1000
_MAX_CARDS = 10_000


def metadata(op: Metadata, item: Item, ctx: OpContext) -> InputFile:
    """Describe the item as JSON (``<name>.json`` under ``ctx.workdir``) and return that file.

    Raises:
        UsageError: the input is not a supported image, its header is corrupt, or it exceeds
            the limits.
    """
    if isinstance(item, Picture):
        doc = _describe_picture(op, item)
    else:
        info = _inspect(item, ctx.limits)
        if info.media_type == FITS:
            doc = _describe_fits(op, item, info)
        else:
            doc = _describe_raster(op, item, info, ctx.limits)
    if doc.issues:  # library messages can be long, multi-line and repeated
        doc.issues = list(dict.fromkeys(i.strip()[:_MAX_ISSUE] for i in doc.issues))
        del doc.issues[_MAX_ISSUES:]
    path = _unique(ctx.workdir, item.name)
    path.write_bytes(msgspec.json.encode(doc, order="deterministic"))
    return InputFile(path=path, media_type="application/json", name=item.name)


def _unique(directory: Path, name: str) -> Path:
    # Names of earlier jobs' results look like "<job>/<name>": keep the file in the workdir.
    stem = name.replace("/", "_").replace("\\", "_").lstrip(".") or "metadata"
    path, n = directory / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = directory / f"{n}-{stem}.json"
    return path


def _inspect(item: InputFile, limits: LimitsSettings) -> ImageInfo:
    try:
        return inspect_image(item.path, max_pixels=limits.max_pixels, max_side=limits.max_side)
    except NotAnImageError as e:
        raise UsageError(f"input {item.name!r} is not a supported image: {e}") from e
    except CorruptImageError as e:
        raise UsageError(f"input {item.name!r} has a corrupt header: {e}") from e
    except ImageTooLargeError as e:
        raise UsageError(f"input {item.name!r} is too large: {e}") from e


# -- pictures and raster files -----------------------------------------------------------

_PILLOW_FORMATS = {JPEG: "JPEG", PNG: "PNG", WEBP: "WEBP", GIF: "GIF", TIFF: "TIFF", BMP: "BMP"}
_MODE_SPACES = {
    "1": "gray", "L": "gray", "LA": "gray", "La": "gray", "I": "gray", "F": "gray",
    "P": "palette", "PA": "palette", "RGB": "srgb", "RGBA": "srgb", "RGBa": "srgb",
    "RGBX": "srgb", "CMYK": "cmyk", "YCbCr": "ycbcr", "LAB": "lab", "HSV": "hsv",
}  # fmt: skip
_MODE_BITS = {"1": 1, "I": 32, "F": 32}
_DTYPE_SAMPLES: dict[str, SampleFormat] = {"u": "uint", "i": "int", "f": "float"}
_ADOBE_YCCK = 2  # the APP14 transform flag of a YCCK JPEG


class _Header(NamedTuple):
    """What Pillow's lazy open read from a raster file's headers."""

    mode: str
    bits: int | None
    frames: int | None
    exif: bytes | None
    icc: bytes | None
    xmp: bytes | None
    transparency: bool
    adobe_transform: object


def _describe_picture(op: Metadata, picture: Picture) -> ImageMetadata:
    shape, dtype = tuple(picture.pixels.shape), picture.pixels.dtype
    channels = shape[2] if len(shape) == 3 else 1
    issues: list[str] = []
    icc = _icc_info(picture.icc)
    exif = _read_exif(picture.exif, issues) if op.exif and picture.exif else None
    return ImageMetadata(
        format=picture.source_type,
        width=int(shape[1]),
        height=int(shape[0]),
        channels=channels,
        bit_depth=dtype.itemsize * 8,
        sample_format=_DTYPE_SAMPLES.get(dtype.kind),
        colour_space="gray" if channels <= 2 else _rgb_space(icc),
        alpha=channels in (2, 4),
        orientation=picture.orientation,
        icc=icc,
        xmp=_xmp_info(picture.xmp),
        exif=exif,
        issues=issues or None,
    )


def _describe_raster(
    op: Metadata, item: InputFile, info: ImageInfo, limits: LimitsSettings
) -> ImageMetadata:
    head = _open_header(item, info, limits)
    tiff = info.media_type == TIFF
    doc = ImageMetadata(
        format=info.media_type,
        width=info.width,
        height=info.height,
        frames=None if tiff else head.frames if head else info.frames,
        pages=info.frames if tiff else None,
        orientation=info.orientation,
    )
    issues: list[str] = []
    if head is None:
        issues.append(
            "Pillow cannot read this TIFF layout: channels, bit depth, colour space, ICC and"
            " XMP are not described"
        )
    else:
        _describe_samples(doc, item.path, head)
    if op.exif and tiff:  # the EXIF tags live in the file's own IFDs
        doc.exif = _read_tiff_file_exif(item.path, issues)
    elif op.exif and head and head.exif:
        doc.exif = _read_exif(head.exif, issues)
    doc.issues = issues or None
    return doc


def _describe_samples(doc: ImageMetadata, path: Path, head: _Header) -> None:
    """Fill in channels, depth, colour space, alpha, ICC and XMP from Pillow's header."""
    icc = _icc_info(head.icc)
    space = _MODE_SPACES.get(head.mode, "gray" if head.mode.startswith("I;16") else None)
    if space == "cmyk" and head.adobe_transform == _ADOBE_YCCK:
        space = "ycck"
    elif space == "srgb":
        space = _rgb_space(icc)
    doc.channels = Image.getmodebands(head.mode)
    doc.bit_depth = _bit_depth(path, doc.format, head)
    doc.sample_format = "float" if head.mode == "F" else "int" if head.mode == "I" else "uint"
    doc.colour_space = space
    doc.alpha = "A" in head.mode or "a" in head.mode or head.transparency
    doc.icc = icc
    doc.xmp = _xmp_info(head.xmp)


def _open_header(item: InputFile, info: ImageInfo, limits: LimitsSettings) -> _Header | None:
    """Read the headers with Pillow's lazy open (``load()`` is never called).

    Returns None for a TIFF Pillow does not support (e.g. planar float64): the file is not
    broken, and its IFDs still give the size, pages and EXIF.
    """
    fmt = _PILLOW_FORMATS.get(info.media_type)
    if fmt is None:
        raise UsageError(f"input {item.name!r}: cannot describe {info.media_type} files")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_pixels  # a second guard behind inspect_image
    try:
        with warnings.catch_warnings():
            # Pillow warns about broken EXIF it parses for the DPI; our reader reports that.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(item.path, formats=[fmt]) as im:
                frames = info.frames
                if frames is None and info.media_type in (GIF, WEBP):
                    frames = getattr(im, "n_frames", None)  # GIF: walks the blocks, no decode
                tiff_tags = getattr(im, "tag_v2", None)
                bits = tiff_tags.get(258) if tiff_tags else getattr(im, "bits", None)
                return _Header(
                    mode=im.mode,
                    bits=max(bits) if isinstance(bits, tuple) and bits else _int_or_none(bits),
                    frames=_int_or_none(frames),
                    exif=_bytes(im.info.get("exif")),
                    icc=_bytes(im.info.get("icc_profile")),
                    xmp=_bytes(im.info.get("xmp")),
                    transparency="transparency" in im.info,
                    adobe_transform=im.info.get("adobe_transform"),
                )
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UsageError(f"input {item.name!r} is too large: {e}") from e
    except UnidentifiedImageError as e:
        if info.media_type == TIFF:
            return None
        raise UsageError(f"input {item.name!r}: not a readable {info.media_type}: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise UsageError(
            f"input {item.name!r}: cannot read the {info.media_type} header: {e}"
        ) from e
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _bytes(value: object) -> bytes | None:
    if isinstance(value, str):
        value = value.encode()
    return bytes(value) if isinstance(value, bytes | bytearray) and value else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bit_depth(path: Path, media_type: str, head: _Header) -> int:
    if media_type == PNG:  # Pillow opens 16-bit RGB as "RGB": the IHDR says what is stored
        with path.open("rb") as f:
            f.seek(24)  # signature, chunk length and type, width, height: then the bit depth
            return f.read(1)[0]  # inspect_image checked the IHDR is there
    if head.bits:
        return head.bits
    return 16 if head.mode.startswith("I;16") else _MODE_BITS.get(head.mode, 8)


def _rgb_space(icc: IccInfo) -> str:
    if not icc.present:
        return "srgb"  # untagged RGB is sRGB by convention
    return "srgb" if icc.description and "srgb" in icc.description.lower() else "rgb"


def _xmp_info(xmp: bytes | None) -> XmpInfo:
    return XmpInfo(present=True, size=len(xmp)) if xmp else XmpInfo(present=False)


def _icc_info(icc: bytes | None) -> IccInfo:
    if not icc:
        return IccInfo(present=False)
    return IccInfo(present=True, size=len(icc), description=_icc_description(icc))


def _icc_description(icc: bytes) -> str | None:
    """Return the text of the profile's ``desc`` tag (v2 ``desc`` or v4 ``mluc``), if any."""
    if len(icc) < 132:
        return None
    (count,) = struct.unpack_from(">I", icc, 128)
    for at in range(132, min(132 + 12 * count, len(icc) - 11, 132 + 12 * 1000), 12):
        sig, offset, size = struct.unpack_from(">4sII", icc, at)
        if sig != b"desc":
            continue
        body = icc[offset : offset + min(size, 4096)]
        text = ""
        if body[:4] == b"desc" and len(body) >= 12:
            (n,) = struct.unpack_from(">I", body, 8)
            text = body[12 : 12 + n].split(b"\0")[0].decode("latin-1")
        elif body[:4] == b"mluc" and len(body) >= 28 and struct.unpack_from(">I", body, 8)[0]:
            n, start = struct.unpack_from(">II", body, 20)  # the first record's text
            text = body[start : start + n].decode("utf-16-be", "replace")
        return text.strip("\0 ") or None
    return None


# -- EXIF ------------------------------------------------------------------------------------

_TIFF_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1),
    7: ("s", 1), 8: ("h", 2), 9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8),
    13: ("I", 4),
}  # fmt: skip
_ASCII, _UNDEFINED, _RATIONAL, _SRATIONAL = 2, 7, 5, 10
_MAX_ENTRIES = 1000  # per IFD; cameras write a few dozen
_MAX_TEXT = 4096  # longer strings are listed in "omitted" with their size
_MAX_ITEMS = 16  # longer arrays too
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_ORIENTATION = 0x0112
_NAMED = {  # text tags reported as fields of their own
    0x010F: "make", 0x0110: "model", 0xA434: "lens", 0xA433: "lens_make",
    0x0132: "datetime", 0x9003: "datetime_original", 0x9004: "datetime_digitized",
    0x9010: "offset_time", 0x9011: "offset_time_original", 0x9012: "offset_time_digitized",
    0x0131: "software",
}  # fmt: skip
# Left out of "tags": reported as fields, pointers, or a TIFF file's layout (not the photo's).
_NOT_TAGS = {
    *_NAMED, _ORIENTATION, _EXIF_IFD, _GPS_IFD, _INTEROP_IFD, 0x829A, 0x829D, 0x8827,
    0x920A, 0x02BC, 0x8773, 256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 320,
    322, 323, 324, 325, 338, 339, 347, 513, 514, 530, 531, 532,
}  # fmt: skip
_GPS_USED = {1, 2, 3, 4, 5, 6, 7, 29}
_EXIF_PREFIX = b"Exif\0\0"


class _BadExifError(ValueError):
    """The EXIF block has no usable TIFF header."""


class _Entry(NamedTuple):
    kind: int
    items: int
    at: int
    """Where the value starts in the stream (in the entry itself when it fits in 4 bytes)."""
    size: int


class _TiffStream:
    """A bounded reader of classic TIFF structures over bytes or a memory map.

    Every problem met is appended to ``issues`` and the offending entry or IFD skipped.
    """

    def __init__(self, data: bytes | mmap.mmap, issues: list[str]) -> None:
        self.data, self.issues, self.seen = data, issues, set[int]()
        head = data[:8]
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise _BadExifError("no TIFF header (II or MM)")
        self.order = "<" if head[:2] == b"II" else ">"
        magic, self.first = struct.unpack(self.order + "HI", head[2:8])
        if magic != 42:
            raise _BadExifError(f"TIFF magic number {magic}, not 42 (BigTIFF is not read)")

    def ifd(self, offset: int, where: str) -> dict[int, _Entry]:
        """Return the entries of the IFD at ``offset`` (empty if it cannot be read)."""
        size = len(self.data)
        if offset in self.seen:
            self.issues.append(f"EXIF: the {where} IFD at byte {offset} was already read")
            return {}
        self.seen.add(offset)
        if not 8 <= offset <= size - 2:
            self.issues.append(f"EXIF: the {where} IFD offset {offset} is outside the {size} bytes")
            return {}
        (count,) = struct.unpack(self.order + "H", self.data[offset : offset + 2])
        fits_in = (size - offset - 2) // 12
        if count > fits_in:
            self.issues.append(
                f"EXIF: the {where} IFD claims {count} entries, {fits_in} are read (truncated)"
            )
            count = fits_in
        if count > _MAX_ENTRIES:
            self.issues.append(f"EXIF: the {where} IFD has {count} entries: {_MAX_ENTRIES} read")
            count = _MAX_ENTRIES
        entries: dict[int, _Entry] = {}
        for at in range(offset + 2, offset + 2 + 12 * count, 12):
            tag, kind, n = struct.unpack(self.order + "HHI", self.data[at : at + 8])
            if kind not in _TIFF_TYPES or tag in entries:
                continue
            length = n * _TIFF_TYPES[kind][1]
            value_at = at + 8
            if length > 4:
                (value_at,) = struct.unpack(self.order + "I", self.data[at + 8 : at + 12])
            if value_at + length > size:
                self.issues.append(
                    f"EXIF: {where} tag {_tag_name(tag, where == 'GPS')} claims {length} bytes"
                    f" at byte {value_at}, past the end of the {size} bytes: skipped"
                )
                continue
            entries[tag] = _Entry(kind, n, value_at, length)
        return entries

    def pointer(self, entries: dict[int, _Entry], tag: int, where: str) -> dict[int, _Entry]:
        """Follow a sub-IFD pointer tag (Exif, GPS) of ``entries``, if there is one."""
        if tag not in entries:
            return {}
        values = self.numbers(entries[tag])
        if not values or not isinstance(values[0], int) or len(values) != 1:
            self.issues.append(f"EXIF: the {where} IFD pointer is not an offset")
            return {}
        return self.ifd(values[0], where)

    def text(self, e: _Entry) -> str | None:
        """An ASCII value (or printable UNDEFINED bytes) as text; None if it is not text."""
        if e.kind not in (_ASCII, _UNDEFINED) or e.size > _MAX_TEXT:
            return None
        raw = bytes(self.data[e.at : e.at + e.size])
        if e.kind == _UNDEFINED:
            raw = raw.removeprefix(b"ASCII\0\0\0")  # UserComment's character code
            if not raw.rstrip(b"\0").isascii() or not raw.rstrip(b"\0").decode().isprintable():
                return None
        raw = raw.split(b"\0")[0]
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        return text.strip()

    def numbers(self, e: _Entry) -> list[int | float] | None:
        """A numeric value as a list (rationals as floats); None if not numeric or too long."""
        if e.kind in (_ASCII, _UNDEFINED) or e.items > _MAX_ITEMS or e.items == 0:
            return None
        fmt = _TIFF_TYPES[e.kind][0]
        values = struct.unpack(self.order + fmt * e.items, self.data[e.at : e.at + e.size])
        if e.kind in (_RATIONAL, _SRATIONAL):
            pairs = zip(values[::2], values[1::2], strict=True)
            return [n / d if d else math.nan for n, d in pairs]
        return list(values)

    def rational(self, e: _Entry | None) -> Fraction | None:
        if e is None or e.kind not in (_RATIONAL, _SRATIONAL) or e.items < 1:
            return None
        fmt = _TIFF_TYPES[e.kind][0]
        n, d = struct.unpack(self.order + fmt, self.data[e.at : e.at + 8])
        return Fraction(n, d) if d else None


def _tag_name(tag: int, gps: bool = False) -> str:
    name = (ExifTags.GPSTAGS if gps else ExifTags.TAGS).get(tag)
    return name or f"0x{tag:04X}"


def _read_exif(block: bytes, issues: list[str]) -> ExifInfo | None:
    """Read an EXIF block (TIFF bytes, with or without the ``Exif\\0\\0`` prefix)."""
    return _exif_from(block.removeprefix(_EXIF_PREFIX), issues)


def _read_tiff_file_exif(path: Path, issues: list[str]) -> ExifInfo | None:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _exif_from(data, issues)


def _exif_from(data: bytes | mmap.mmap, issues: list[str]) -> ExifInfo | None:
    try:
        stream = _TiffStream(data, issues)
    except _BadExifError as e:
        issues.append(f"EXIF: {e}: not read")
        return None
    ifd0 = stream.ifd(stream.first, "IFD0")
    exif_ifd = stream.pointer(ifd0, _EXIF_IFD, "Exif")
    gps_ifd = stream.pointer(ifd0, _GPS_IFD, "GPS")
    tags = exif_ifd | ifd0  # IFD0 wins a tag both hold
    fields: dict[str, Any] = {}
    for tag, name in _NAMED.items():
        if tag in tags:
            fields[name] = stream.text(tags[tag]) or None
    exposure = stream.rational(tags.get(0x829A))
    if exposure is not None and exposure >= 0:
        fields["exposure_time"] = float(exposure)
        fields["exposure_time_text"] = _exposure_text(exposure)
    for name, tag in (("f_number", 0x829D), ("focal_length", 0x920A)):
        value = stream.rational(tags.get(tag))
        fields[name] = float(value) if value is not None else None
    fields["iso"] = _first_int(stream, tags.get(0x8827) or tags.get(0x8833))
    orientation = _first_int(stream, tags.get(_ORIENTATION))
    if orientation is not None and not 1 <= orientation <= 8:
        issues.append(f"EXIF: Orientation {orientation} is not 1-8: readers ignore it")
    rest, omitted = _other_tags(stream, tags, gps_ifd)
    return ExifInfo(
        **fields,
        orientation=orientation,
        gps=_gps(stream, gps_ifd, issues),
        tags=rest or None,
        omitted=omitted or None,
    )


def _first_int(stream: _TiffStream, e: _Entry | None) -> int | None:
    values = stream.numbers(e) if e is not None else None
    return values[0] if values and isinstance(values[0], int) else None


def _exposure_text(seconds: Fraction) -> str:
    if seconds >= 1 or seconds == 0:
        return f"{float(seconds):g}"
    inverse = 1 / seconds
    if abs(inverse - round(inverse)) <= inverse / 100:  # 1/125 rather than 0.008
        return f"1/{round(inverse)}"
    return f"{float(seconds):g}"


def _other_tags(
    stream: _TiffStream, tags: dict[int, _Entry], gps: dict[int, _Entry]
) -> tuple[dict[str, TagValue], dict[str, int]]:
    """Name and read the tags not reported elsewhere; binary or long values by size only."""
    rest: dict[str, TagValue] = {}
    omitted: dict[str, int] = {}
    pending = [(_tag_name(t), e) for t, e in sorted(tags.items()) if t not in _NOT_TAGS]
    pending += [(_tag_name(t, True), e) for t, e in sorted(gps.items()) if t not in _GPS_USED]
    for name, e in pending:
        value: TagValue | None = stream.text(e)
        if value == "":
            continue
        if value is None:
            numbers = stream.numbers(e)
            if numbers and all(math.isfinite(v) for v in numbers):
                value = numbers[0] if len(numbers) == 1 else list(numbers)
        if value is None:
            omitted[name] = e.size
        else:
            rest.setdefault(name, value)
    return rest, omitted


def _gps(stream: _TiffStream, gps: dict[int, _Entry], issues: list[str]) -> GpsInfo | None:
    if not gps:
        return None
    info = GpsInfo()
    for axis, ref_tag, tag, negative, limit in (
        ("latitude", 1, 2, "S", 90), ("longitude", 3, 4, "W", 180),
    ):  # fmt: skip
        degrees = _degrees(stream, gps.get(tag))
        if degrees is None:
            continue
        ref = stream.text(gps[ref_tag]) if ref_tag in gps else None
        value = -degrees if (ref or "").upper().startswith(negative) else degrees
        if abs(value) > limit:
            issues.append(f"EXIF: GPS {axis} {value} is out of range: ignored")
        else:
            setattr(info, axis, value)
    altitude = stream.rational(gps.get(6))
    if altitude is not None:
        below = _first_int(stream, gps.get(5)) == 1
        info.altitude = -float(altitude) if below else float(altitude)
    info.timestamp = _gps_time(stream, gps, issues)
    return None if info == GpsInfo() else info


def _degrees(stream: _TiffStream, e: _Entry | None) -> float | None:
    """Degrees from a GPS (degrees, minutes, seconds) rational triple."""
    if e is None or e.kind != _RATIONAL:
        return None
    parts = stream.numbers(e)
    if not parts or not all(math.isfinite(p) for p in parts):
        return None
    parts = [*parts[:3], 0.0, 0.0][:3]
    return float(parts[0] + parts[1] / 60 + parts[2] / 3600)


def _gps_time(stream: _TiffStream, gps: dict[int, _Entry], issues: list[str]) -> str | None:
    """GPSDateStamp and GPSTimeStamp as ISO 8601 UTC (the date or the time alone if only one
    is there); a value that is not a date or a time of day is ignored."""
    date = stream.text(gps[29]) if 29 in gps else None
    if date:
        try:
            date = datetime.strptime(date, "%Y:%m:%d").date().isoformat()
        except ValueError:
            issues.append(f"EXIF: GPSDateStamp {date!r} is not a date: ignored")
            date = None
    time = None
    if 7 in gps:
        hms = stream.numbers(gps[7]) if gps[7].kind == _RATIONAL else None
        if hms and len(hms) == 3 and 0 <= hms[0] < 24 and 0 <= hms[1] < 60 and 0 <= hms[2] < 61:
            h, m, s = hms
            time = f"{int(h):02d}:{int(m):02d}:{s:06.3f}".removesuffix(".000")
        else:
            issues.append(f"EXIF: GPSTimeStamp {hms} is not a time of day: ignored")
    if date and time:
        return f"{date}T{time}Z"
    return time or date


# -- FITS ------------------------------------------------------------------------------------


_FITS_SAMPLES: dict[int, SampleFormat] = {
    8: "uint",
    16: "int",
    32: "int",
    64: "int",
    -32: "float",
    -64: "float",
}


def _describe_fits(op: Metadata, item: InputFile, info: ImageInfo) -> ImageMetadata:
    """List the HDUs (and their cards) and summarise each celestial WCS."""
    issues: list[str] = []
    hdus: list[FitsHdu] = []
    summaries: list[WcsSummary] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Raised for the non-standard values wcslib fixes on reading: not worth reporting.
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            with fits.open(item.path, memmap=True, lazy_load_hdus=True) as hdul:
                for index, hdu in enumerate(hdul):
                    if index == _MAX_HDUS:
                        issues.append(f"FITS: only the first {_MAX_HDUS} HDUs are described")
                        break
                    hdus.append(_fits_hdu(index, hdu, op.fits_header, issues))
                    summary = _wcs_summary(index, hdu, issues)
                    if summary is not None:
                        summaries.append(summary)
        except (OSError, ValueError, VerifyError, IndexError, KeyError, TypeError) as e:
            raise UsageError(f"input {item.name!r}: cannot read the FITS headers: {e}") from e
    issues += [f"FITS: {w.message}" for w in caught]
    image = next((h for h in hdus if len(h.shape) >= 2 and h.columns is None), None)
    bitpix = image.bitpix if image else None
    return ImageMetadata(
        format=FITS,
        width=info.width,
        height=info.height,
        bit_depth=abs(bitpix) if bitpix else None,
        sample_format=_FITS_SAMPLES.get(bitpix) if bitpix else None,
        fits=hdus,
        wcs=summaries or None,
        issues=issues or None,
    )


def _fits_hdu(index: int, hdu: Any, with_cards: bool, issues: list[str]) -> FitsHdu:
    header = hdu.header
    naxes = _header_int(header, "NAXIS") or 0
    axes = [_header_int(header, f"NAXIS{i}") or 0 for i in range(1, min(naxes, 999) + 1)]
    table = isinstance(hdu, fits.BinTableHDU | fits.TableHDU)
    return FitsHdu(
        index=index,
        name=str(hdu.name),
        type=type(hdu).__name__,
        shape=[axes[1]] if table and len(axes) == 2 else axes[::-1],
        bitpix=_header_int(header, "BITPIX"),
        columns=_header_int(header, "TFIELDS") if table else None,
        cards=_cards(index, header, issues) if with_cards else None,
    )


def _header_int(header: Any, key: str) -> int | None:
    try:
        value = header.get(key)
    except (VerifyError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cards(index: int, header: Any, issues: list[str]) -> list[tuple[str, CardValue, str]]:
    cards: list[tuple[str, CardValue, str]] = []
    for n, card in enumerate(header.cards):
        if n == _MAX_CARDS:
            issues.append(f"FITS: HDU {index}: only the first {_MAX_CARDS} cards are listed")
            break
        try:
            value, comment = card.value, card.comment
        except (VerifyError, ValueError) as e:
            issues.append(f"FITS: HDU {index}: card {card.keyword!r} is malformed: {e}")
            value, comment = card.image[10:].strip(), ""
        cards.append((str(card.keyword), _card_value(value), str(comment or "")))
    return cards


def _card_value(value: object) -> CardValue:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, Undefined):
        return None
    return str(value)  # complex values


def _wcs_summary(index: int, hdu: Any, issues: list[str]) -> WcsSummary | None:
    """Summarise the celestial WCS of an image HDU; None if it has none."""
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):  # CompImageHDU is an ImageHDU
        return None
    if (_header_int(hdu.header, "NAXIS") or 0) < 2:
        return None
    try:
        full = WCS(hdu.header)
        if not full.has_celestial:
            return None
        return _celestial_summary(index, full)
    except (ValueError, KeyError, TypeError, MemoryError) as e:
        issues.append(f"FITS: HDU {index}: cannot read the WCS: {e}")
        return None


def _celestial_summary(index: int, full: WCS) -> WcsSummary:
    wcs = full.celestial
    lng, lat = wcs.wcs.lng, wcs.wcs.lat
    nx, ny = wcs.pixel_shape
    corners = wcs.calc_footprint(axes=(nx, ny))[:, [lng, lat]]
    centre = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0][[lng, lat]]
    matrix = wcs.pixel_scale_matrix
    scales = proj_plane_pixel_scales(wcs)[[lng, lat]] * 3600
    if not (np.isfinite(corners).all() and np.isfinite(centre).all()):
        raise ValueError("the footprint is not finite")
    equinox = float(wcs.wcs.equinox)
    return WcsSummary(
        hdu=index,
        ctype=[str(c) for c in wcs.wcs.ctype],
        crval=[float(v) for v in wcs.wcs.crval],
        crpix=[float(v) for v in wcs.wcs.crpix],
        pixel_scale=[float(s) for s in scales],
        # The +y pixel step in intermediate coordinates: lng grows east, lat north.
        rotation=math.degrees(math.atan2(matrix[lng, 1], matrix[lat, 1])),
        footprint=corners.tolist(),
        centre=centre.tolist(),
        radius=max(_separation(centre, corner) for corner in corners),
        sip=full.sip is not None,
        equinox=equinox if math.isfinite(equinox) else None,
        radesys=str(wcs.wcs.radesys) or None,
    )


def _separation(a: Any, b: Any) -> float:
    """Angular distance in degrees between two (ra, dec) points in degrees (Vincenty)."""
    ra1, dec1, ra2, dec2 = (math.radians(float(v)) for v in (a[0], a[1], b[0], b[1]))
    d = ra2 - ra1
    num = math.hypot(
        math.cos(dec2) * math.sin(d),
        math.cos(dec1) * math.sin(dec2) - math.sin(dec1) * math.cos(dec2) * math.cos(d),
    )
    den = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(d)
    return math.degrees(math.atan2(num, den))
