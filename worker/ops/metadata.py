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

import struct
import warnings
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.wcs import FITSFixedWarning
from PIL import Image, UnidentifiedImageError

from contracts.media import BMP, FITS, GIF, JPEG, JSON, PNG, TIFF, WEBP
from contracts.ops import Metadata
from contracts.settings import LimitsSettings
from pixfleet.sniff import ImageInfo
from worker.errors import UsageError
from worker.ops.api import InputFile, Item, OpContext, Picture, output_path
from worker.ops.exif import Doc, ExifInfo, read_exif, read_tiff_file_exif
from worker.ops.fitsinfo import FitsHdu, WcsSummary, fits_hdu, wcs_summary
from worker.ops.inputs import check_input

SampleFormat = Literal["uint", "int", "float"]


class IccInfo(Doc):
    present: bool
    size: int | None = None
    description: str | None = None


class XmpInfo(Doc):
    present: bool
    size: int | None = None


class ImageMetadata(Doc):
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


def metadata(op: Metadata, item: Item, ctx: OpContext) -> InputFile:
    """Describe the item as JSON (``<name>.json`` under ``ctx.workdir``) and return that file.

    Raises:
        UsageError: the input is not a supported image, its header is corrupt, or it exceeds
            the limits.
    """
    if isinstance(item, Picture):
        doc = _describe_picture(op, item)
    else:
        info = check_input(item, ctx.limits)
        if info.media_type == FITS:
            doc = _describe_fits(op, item, info)
        else:
            doc = _describe_raster(op, item, info, ctx.limits)
    if doc.issues:  # library messages can be long, multi-line and repeated
        doc.issues = list(dict.fromkeys(i.strip()[:_MAX_ISSUE] for i in doc.issues))
        del doc.issues[_MAX_ISSUES:]
    path = _unique(ctx.workdir, item.name)
    path.write_bytes(msgspec.json.encode(doc, order="deterministic"))
    return InputFile(path=path, media_type=JSON, name=item.name)


def _unique(directory: Path, name: str) -> Path:
    # Names of earlier jobs' results look like "<job>/<name>": keep the file in the workdir.
    stem = name.replace("/", "_").replace("\\", "_").lstrip(".") or "metadata"
    return output_path(directory, f"{stem}.json")


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
    exif = read_exif(picture.exif, issues) if op.exif and picture.exif else None
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
        doc.exif = read_tiff_file_exif(item.path, issues)
    elif op.exif and head and head.exif:
        doc.exif = read_exif(head.exif, issues)
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
                    hdus.append(fits_hdu(index, hdu, op.fits_header, issues))
                    summary = wcs_summary(index, hdu, issues, hdul)
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
