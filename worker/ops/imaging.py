"""Decoding, orientation and encoding shared by the image operations (OpenCV + numpy).

``load`` turns an item into a ``Picture``: the header is checked with ``pixfleet.sniff``
before any decode (the bytes decide the type; limits refuse bombs without allocating), JPEGs
are decoded at 1/2, 1/4 or 1/8 scale when the caller's target allows (libjpeg scales in the
DCT), alpha and 16-bit samples are kept, and EXIF, XMP and the ICC profile are read with the
pixels (``cv2.imdecodeWithMetadata``). ``encode`` writes a picture in any output format with
the metadata policy of ``Convert``; ``finish`` encodes a picture left at the end of a
pipeline in its source's format.

Inputs: JPEG (also grayscale and CMYK, converted to BGR), PNG (gray, gray+alpha, palette,
16-bit), WebP, TIFF (first page; 16-bit kept), GIF (first frame), BMP, AVIF. FITS is refused
here (the astronomy operations read it). Outputs: JPEG, PNG, WebP, TIFF, AVIF.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
from cv2.typing import MatLike

from contracts.media import AVIF, BMP, FITS, GIF, JPEG, PNG, TIFF, WEBP
from contracts.ops import Convert, ImageFormat
from pixfleet.sniff import ImageInfo
from worker.errors import FatalError, UsageError
from worker.ops.api import InputFile, Item, OpContext, Picture, output_path
from worker.ops.inputs import check_input

DECODABLE = frozenset({JPEG, PNG, WEBP, GIF, BMP, TIFF, AVIF})
# Formats whose EXIF orientation we apply ourselves (OpenCV ignores it with the flags we
# need); libtiff applies a TIFF's own orientation while decoding, GIF and BMP have none.
_ORIENTED_HERE = frozenset({JPEG, PNG, WEBP, AVIF})
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "tiff": "tif", "avif": "avif"}
MEDIA_TYPES = {"jpeg": JPEG, "png": PNG, "webp": WEBP, "tiff": TIFF, "avif": AVIF}
_DEFAULT_FORMAT: dict[str, ImageFormat] = {
    JPEG: "jpeg",
    PNG: "png",
    WEBP: "webp",
    TIFF: "tiff",
    AVIF: "avif",
}
_DEFAULT_QUALITY = {"jpeg": 85, "webp": 80, "avif": 60}
_REDUCED = (
    (8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)  # fmt: skip
_ORIENT: dict[int, Callable[[MatLike], MatLike]] = {
    2: lambda m: cv2.flip(m, 1),
    3: lambda m: cv2.rotate(m, cv2.ROTATE_180),
    4: lambda m: cv2.flip(m, 0),
    5: cv2.transpose,
    6: lambda m: cv2.rotate(m, cv2.ROTATE_90_CLOCKWISE),
    7: lambda m: cv2.flip(cv2.transpose(m), -1),
    8: lambda m: cv2.rotate(m, cv2.ROTATE_90_COUNTERCLOCKWISE),
}
_META = {
    cv2.IMAGE_METADATA_EXIF: "exif",
    cv2.IMAGE_METADATA_XMP: "xmp",
    cv2.IMAGE_METADATA_ICCP: "icc",
}
_EXIF_PREFIX = b"Exif\x00\x00"
_GPS_IFD_TAG = 0x8825
_ORIENTATION_TAG = 0x0112


# -- reading ---------------------------------------------------------------------------


def inspect(item: Item, ctx: OpContext) -> ImageInfo | None:
    """Check an input file's headers, limits and completeness; None for a ``Picture``.

    Image operations pass the result to ``dimensions`` and ``load``, so a file's headers are
    read once per step.

    Raises:
        UsageError: not a supported image, truncated or corrupt, over a limit, or not
            decodable here (FITS).
    """
    if isinstance(item, Picture):
        return None
    info = check_input(item, ctx.limits)
    if info.media_type == FITS:
        raise UsageError(
            f"input {item.name!r} is FITS: use the astronomy operations (preview, cutout) "
            "to turn it into an image"
        )
    if info.media_type not in DECODABLE or info.width is None or info.height is None:
        raise UsageError(f"input {item.name!r}: cannot read {info.media_type} images")
    return info


def dimensions(item: Item, info: ImageInfo | None, *, orient: bool = True) -> tuple[int, int]:
    """Return (width, height) of an item as ``load(item, orient=orient)`` will see it.

    ``info`` is ``inspect(item)``: nothing is read here.
    """
    if info is None:
        assert isinstance(item, Picture)
        h, w = item.pixels.shape[:2]
        turned = orient and item.orientation >= 5
    else:
        w, h = info.width or 0, info.height or 0
        turned = orient and info.media_type in _ORIENTED_HERE and info.orientation >= 5
    return (h, w) if turned else (w, h)


def load(
    item: Item,
    ctx: OpContext,
    *,
    orient: bool = True,
    target: tuple[int, int] | None = None,
    info: ImageInfo | None = None,
) -> Picture:
    """Decode an item (a ``Picture`` is returned as it is, oriented if asked).

    ``target`` is the (width, height) the caller will scale to, upright: a JPEG is then
    decoded at the smallest DCT scale still at least that large. ``info`` is the item's
    ``inspect`` result when the caller has it (the headers are read otherwise).

    Raises:
        UsageError: see ``inspect``, or the decoder refuses the data.
    """
    if isinstance(item, Picture):
        return upright(item) if orient else item
    info = info or inspect(item, ctx)
    assert info is not None
    flags = _read_flags(info, target)
    data = np.fromfile(item.path, dtype=np.uint8)
    message = f"input {item.name!r}: cannot decode the {info.media_type} image"
    try:
        pixels, kinds, blocks = cv2.imdecodeWithMetadata(data, flags)
    except cv2.error as e:
        raise UsageError(message, str(e)) from e
    if pixels is None or pixels.size == 0:  # OpenCV logs the reason and returns nothing
        raise UsageError(message, "the decoder returned no image")
    meta: dict[str, bytes] = {}
    for kind, block in zip(kinds, blocks, strict=False):
        name = _META.get(int(kind))
        if name and block is not None and block.size:
            meta[name] = block.tobytes()
    exif = _strip_exif_prefix(meta.get("exif"))
    xmp = _clean_xmp(meta.get("xmp"))
    picture = Picture(
        pixels=pixels,
        name=item.name,
        source_type=info.media_type,
        orientation=info.orientation if info.media_type in _ORIENTED_HERE else 1,
        exif=exif,
        icc=meta.get("icc"),
        xmp=xmp,
    )
    return upright(picture) if orient else picture


def _read_flags(info: ImageInfo, target: tuple[int, int] | None) -> int:
    if info.media_type != JPEG:
        return cv2.IMREAD_UNCHANGED  # keeps alpha, 16-bit samples and gray
    flags = cv2.IMREAD_IGNORE_ORIENTATION
    if target is None:
        return flags | cv2.IMREAD_COLOR
    tw, th = target
    if info.orientation >= 5:  # the stored image is transposed
        tw, th = th, tw
    w, h = info.width or 0, info.height or 0
    for factor, flag in _REDUCED:
        if -(-w // factor) >= tw and -(-h // factor) >= th:  # libjpeg rounds scaled sides up
            return flags | flag
    return flags | cv2.IMREAD_COLOR


def upright(picture: Picture) -> Picture:
    """Apply the picture's pending EXIF orientation to its pixels."""
    turn = _ORIENT.get(picture.orientation)
    if turn is None:  # 1, or a value outside 1-8: nothing to apply
        return picture if picture.orientation == 1 else replace(picture, orientation=1)
    return picture.with_pixels(turn(picture.pixels), orientation=1)


# -- sizes and colours -----------------------------------------------------------------


def check_output(width: int, height: int, ctx: OpContext, what: str) -> None:
    """Refuse a result larger than ``max_output_pixels`` before allocating it."""
    limit = ctx.limits.max_output_pixels
    if width * height > limit:
        raise UsageError(f"{what} would be {width} x {height} pixels, more than {limit:,}")


def max_sample(pixels: MatLike) -> float:
    """The value of full intensity for the array's sample type."""
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, 1.0)


def colour(value: str, pixels: MatLike) -> tuple[float, ...]:
    """``#rrggbb[aa]`` as a fill value for ``pixels`` (BGR(A) order, scaled to the depth)."""
    r, g, b = (int(value[i : i + 2], 16) for i in (1, 3, 5))
    a = int(value[7:9], 16) if len(value) == 9 else 255
    top = max_sample(pixels) / 255
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 1:
        return (round((0.299 * r + 0.587 * g + 0.114 * b) * top),)
    bgra = (b * top, g * top, r * top, a * top)
    return bgra[:channels]


def with_alpha(pixels: MatLike) -> MatLike:
    """Return BGRA pixels (gray and BGR gain an opaque alpha channel)."""
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2BGRA)
    return pixels


def needs_alpha(value: str) -> bool:
    """Whether a background colour is not fully opaque."""
    return len(value) == 9 and value[7:9].lower() != "ff"


# -- writing ---------------------------------------------------------------------------


def finish(item: Item, ctx: OpContext, name: str | None = None) -> InputFile:
    """Turn what a pipeline left into a file: a picture is encoded in its source's format
    (PNG for GIF and BMP) with the default metadata policy; files pass through."""
    if isinstance(item, InputFile):
        return item
    fmt: ImageFormat = _DEFAULT_FORMAT.get(item.source_type, "png")
    if item.pixels.dtype != np.uint8 and fmt in ("jpeg", "webp"):
        fmt = "png"  # keep the depth an earlier step produced
    return write(item, ctx, Convert(format=fmt), name)


def write(picture: Picture, ctx: OpContext, op: Convert, name: str | None = None) -> InputFile:
    """Encode ``picture`` as ``op`` says into ``ctx.workdir``; return the file."""
    ext = EXTENSIONS[op.format]
    path = output_path(ctx.workdir, f"{name or picture.name}.{ext}")
    path.write_bytes(encode(picture, op))
    return InputFile(path=path, media_type=MEDIA_TYPES[op.format], name=name or picture.name)


def encode(picture: Picture, op: Convert) -> bytes:
    """Encode a picture: samples fitted to the format, metadata by ``op``'s policy.

    Raises:
        FatalError: the encoder fails on pixels it should accept.
    """
    if op.auto_orient:
        picture = upright(picture)
    pixels = _fit_samples(picture.pixels, op)
    params = _params(op, pixels)
    kinds, blocks = _metadata(picture, op)
    ext = "." + EXTENSIONS[op.format]
    try:
        ok, buf = cv2.imencodeWithMetadata(ext, pixels, kinds, blocks, params)
    except cv2.error as e:
        raise FatalError(f"cannot encode the image as {op.format}", str(e)) from e
    if not ok:
        raise FatalError(f"cannot encode the image as {op.format}")
    return bytes(buf.tobytes())


def _fit_samples(pixels: MatLike, op: Convert) -> MatLike:
    """8 bits for JPEG and WebP, 12 in 16 for AVIF, no alpha for JPEG, float to integers."""
    fmt = op.format
    if pixels.dtype == np.float32:
        deep = fmt in ("png", "tiff", "avif")
        top = 65535.0 if deep else 255.0
        pixels = np.clip(pixels * top + 0.5, 0, top).astype(np.uint16 if deep else np.uint8)
    if pixels.dtype == np.uint16 and fmt in ("jpeg", "webp"):
        # OpenCV would clip 16-bit samples to 255 rather than scale them.
        pixels = cv2.convertScaleAbs(pixels, alpha=255 / 65535)
    if pixels.dtype == np.uint16 and fmt == "avif":
        pixels = np.right_shift(pixels, 4).astype(np.uint16)  # 12-bit AVIF
    if fmt == "jpeg" and pixels.ndim == 3 and pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:].astype(np.float32) / 255
        background = np.array(colour(op.background, pixels[:, :, :3]), np.float32)
        flat = pixels[:, :, :3].astype(np.float32) * alpha + background * (1 - alpha)
        pixels = (flat + 0.5).astype(np.uint8)
    if fmt == "jpeg" and pixels.ndim == 3 and pixels.shape[2] == 2:
        pixels = pixels[:, :, 0]
    return pixels


def _params(op: Convert, pixels: MatLike) -> list[int]:
    quality = op.quality or _DEFAULT_QUALITY.get(op.format, 0)
    match op.format:
        case "jpeg":
            params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
            return params + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if op.progressive else [])
        case "webp":
            return [cv2.IMWRITE_WEBP_QUALITY, 101 if op.lossless else quality]
        case "png":
            return [cv2.IMWRITE_PNG_COMPRESSION, op.compression]
        case "tiff":
            deflate = cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE
            none = cv2.IMWRITE_TIFF_COMPRESSION_NONE
            return [cv2.IMWRITE_TIFF_COMPRESSION, deflate if op.compression else none]
        case _:  # avif
            depth = 12 if pixels.dtype == np.uint16 else 8
            return [
                cv2.IMWRITE_AVIF_QUALITY, 100 if op.lossless else quality,
                cv2.IMWRITE_AVIF_DEPTH, depth, cv2.IMWRITE_AVIF_SPEED, 8,
            ]  # fmt: skip


def _metadata(picture: Picture, op: Convert) -> tuple[list[int], list[Any]]:
    """The metadata blocks to write: ICC unless refused, EXIF/XMP unless stripped; GPS
    only when asked; the orientation tag says 1 once the pixels are upright."""
    kinds: list[int] = []
    blocks: list[Any] = []
    if op.format == "tiff":  # OpenCV's TIFF writer takes no metadata blocks
        return kinds, blocks

    def add(kind: int, data: bytes | None) -> None:
        if data:
            kinds.append(kind)
            blocks.append(np.frombuffer(data, np.uint8))

    if op.keep_icc:
        add(cv2.IMAGE_METADATA_ICCP, picture.icc)
    if op.metadata == "keep":
        exif = picture.exif
        if exif is not None:
            exif = edit_exif(exif, orientation=picture.orientation, drop_gps=not op.keep_gps)
        add(cv2.IMAGE_METADATA_EXIF, exif)
        if op.format != "jpeg" and picture.xmp:  # OpenCV's JPEG writer drops XMP blocks
            # OpenCV's PNG writer reads XMP as a C string: give it its terminator.
            add(cv2.IMAGE_METADATA_XMP, picture.xmp + (b"\x00" if op.format == "png" else b""))
    return kinds, blocks


# -- EXIF editing (bounded, never trusting offsets) ------------------------------------


_XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def _clean_xmp(xmp: bytes | None) -> bytes | None:
    """The XMP packet alone: without JPEG's APP1 namespace header or a C string's NULs."""
    if xmp is None:
        return None
    if xmp.startswith(_XMP_JPEG_HEADER):
        xmp = xmp[len(_XMP_JPEG_HEADER) :]
    return xmp.rstrip(b"\x00") or None


def _strip_exif_prefix(exif: bytes | None) -> bytes | None:
    if exif is None:
        return None
    if exif.startswith(_EXIF_PREFIX):
        exif = exif[len(_EXIF_PREFIX) :]
    return exif if exif[:4] in (b"II*\x00", b"MM\x00*") else None


def edit_exif(exif: bytes, *, orientation: int | None, drop_gps: bool) -> bytes | None:
    """Return EXIF (TIFF bytes) with the orientation tag set and GPS removed.

    Edits IFD0 in place: the orientation value is overwritten; the GPS IFD pointer entry is
    removed (later entries move up; the freed bytes are zeroed) and the GPS IFD itself, with
    the values it points to, is zeroed, so no coordinate survives anywhere in the block.
    Returns None when the block is too damaged to edit safely: the metadata is then dropped
    rather than written broken.
    """
    data = bytearray(exif)
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        entries = _entries(data, order, ifd)
        kept = []
        for at in entries:
            tag, kind, _, value = struct.unpack_from(order + "HHII", data, at)
            if tag == _ORIENTATION_TAG and kind == 3 and orientation is not None:
                struct.pack_into(order + "HHIHH", data, at, tag, 3, 1, orientation, 0)
            if tag == _GPS_IFD_TAG and drop_gps:
                _zero_ifd(data, order, value)
                continue
            kept.append(bytes(data[at : at + 12]))
        if len(kept) < len(entries):
            end = ifd + 2 + 12 * len(entries)
            tail = bytes(data[end : end + 4])  # the next IFD's offset
            block = struct.pack(order + "H", len(kept)) + b"".join(kept) + tail
            data[ifd : end + 4] = block.ljust(end + 4 - ifd, b"\0")
    except (struct.error, ValueError):
        return None
    return bytes(data)


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


def _entries(data: bytearray, order: str, ifd: int) -> list[int]:
    """Offsets of an IFD's 12-byte entries, checked to lie inside the block."""
    (count,) = struct.unpack_from(order + "H", data, ifd)
    if count > 1000 or ifd + 6 + 12 * count > len(data):
        raise ValueError("IFD out of bounds")
    return [ifd + 2 + 12 * i for i in range(count)]


def _zero_ifd(data: bytearray, order: str, ifd: int) -> None:
    """Zero an IFD and the out-of-line values its entries point to."""
    entries = _entries(data, order, ifd)
    for at in entries:
        _, kind, count, value = struct.unpack_from(order + "HHII", data, at)
        size = _TYPE_SIZES.get(kind, 1) * count
        if 4 < size <= len(data) - value:
            data[value : value + size] = bytes(size)
    end = ifd + 6 + 12 * len(entries)
    data[ifd:end] = bytes(end - ifd)
