"""The ``thumbnail`` operation: scale each input so its longer side is ``op.size`` pixels.

Runs in a worker child process and imports OpenCV and numpy. Headers are checked with
``pixfleet.sniff`` before any decode, so a header that lies is refused before pixels are
allocated. JPEGs are decoded at 1/2, 1/4 or 1/8 scale when the target allows: libjpeg scales
in the DCT, so a 12 MP photo never exists at full size. EXIF orientation is applied here, to the
small result: OpenCV skips it with IMREAD_UNCHANGED (needed to keep alpha and 16-bit samples),
and one path for JPEG, PNG and WebP keeps the target size exact. Nothing is set at import.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from cv2.typing import MatLike

from contracts.ops import Thumbnail
from pixfleet.sniff import (
    BMP,
    GIF,
    JPEG,
    PNG,
    TIFF,
    WEBP,
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    check_complete,
    inspect_image,
)
from worker.errors import FatalError, UsageError
from worker.ops.api import InputFile, OpContext, OutputFile

_DECODABLE = frozenset({JPEG, PNG, WEBP, GIF, BMP, TIFF})
# OpenCV keeps alpha and 16-bit samples only with IMREAD_UNCHANGED, which ignores orientation.
_UNCHANGED = frozenset({PNG, WEBP})
# libtiff applies a TIFF's orientation while decoding; GIF and BMP have none.
_ORIENTED_HERE = frozenset({JPEG, PNG, WEBP})
_OUTPUT = {"jpeg": ("jpg", JPEG), "png": ("png", PNG), "webp": ("webp", WEBP)}
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


def thumbnail(op: Thumbnail, inputs: list[InputFile], ctx: OpContext) -> list[OutputFile]:
    """Scale each input so its longer side is ``op.size`` (never up) and encode it as ``op.format``.

    Writes ``<input name>.<jpg|png|webp>`` under ``ctx.workdir`` per input, in order. The first
    frame of an animation is used. Alpha is kept for PNG and WebP output and composited onto
    white for JPEG; 16-bit samples are kept for PNG output only.

    Raises:
        UsageError: an input is not a supported image, is truncated or corrupt, exceeds the
            pixel limits, or cannot be decoded.
        FatalError: OpenCV cannot encode the result.
    """
    outputs = []
    for i, item in enumerate(inputs, 1):
        outputs.append(_thumbnail_one(op, item, ctx))
        ctx.progress(i / len(inputs), f"{i} of {len(inputs)} thumbnails")
    return outputs


def _thumbnail_one(op: Thumbnail, item: InputFile, ctx: OpContext) -> OutputFile:
    info = _inspect(item, ctx)
    width, height = info.width or 0, info.height or 0  # _inspect refused unknown sizes
    image = _decode(item, info.media_type, _read_flags(info.media_type, width, height, op.size))
    image = _resize(image, _target_size(width, height, op.size))
    if info.media_type in _ORIENTED_HERE and info.orientation in _ORIENT:
        image = _ORIENT[info.orientation](image)
    ext, media_type = _OUTPUT[op.format]
    path = ctx.workdir / f"{item.name}.{ext}"
    path.write_bytes(_encode(_convert(image, op.format), op, ext))
    return OutputFile(path=path, name=item.name, media_type=media_type)


def _inspect(item: InputFile, ctx: OpContext) -> ImageInfo:
    """Check the headers and completeness of an input (the bytes decide its type, not the label)."""
    try:
        info = inspect_image(item.path, max_pixels=ctx.max_pixels, max_side=ctx.max_side)
        check_complete(item.path, info.media_type)
    except NotAnImageError as e:
        raise UsageError(f"input {item.name!r} is not a supported image: {e}") from e
    except CorruptImageError as e:
        raise UsageError(f"input {item.name!r} is corrupt or truncated: {e}") from e
    except ImageTooLargeError as e:
        raise UsageError(f"input {item.name!r} is too large: {e}") from e
    if info.media_type not in _DECODABLE or info.width is None or info.height is None:
        raise UsageError(f"input {item.name!r}: thumbnail cannot read {info.media_type} images")
    return info


def _target_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Return (width, height) with the longer side ``size`` and the aspect kept, never larger."""
    longer = max(width, height)
    if longer <= size:
        return width, height

    def scale(side: int) -> int:  # round half up, at least one pixel
        return max(1, (2 * side * size + longer) // (2 * longer))

    return (size, scale(height)) if width >= height else (scale(width), size)


def _reduction_flag(width: int, height: int, size: int) -> int:
    """Return the imread flag decoding a JPEG at the smallest scale still covering the target.

    That is 1/8, 1/4 or 1/2 when both scaled sides stay at least the target's (libjpeg rounds
    scaled sides up), else a full decode.
    """
    tw, th = _target_size(width, height, size)
    for factor, flag in _REDUCED:
        if -(-width // factor) >= tw and -(-height // factor) >= th:
            return flag
    return cv2.IMREAD_COLOR


def _read_flags(media_type: str, width: int, height: int, size: int) -> int:
    if media_type == JPEG:
        return _reduction_flag(width, height, size) | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.IMREAD_UNCHANGED if media_type in _UNCHANGED else cv2.IMREAD_COLOR


def _decode(item: InputFile, media_type: str, flags: int) -> MatLike:
    message = f"input {item.name!r}: cannot decode the {media_type} image"
    try:
        image = cv2.imread(str(item.path), flags)
    except cv2.error as e:
        raise UsageError(message, str(e)) from e
    if image is None:  # OpenCV logs the reason and returns nothing
        raise UsageError(message, "cv2.imread returned no image")
    return image


def _resize(image: MatLike, target: tuple[int, int]) -> MatLike:
    tw, th = target
    h, w = image.shape[:2]
    if (w - h) * (tw - th) < 0:  # libtiff turned it upright: the target turns too
        tw, th = th, tw
    if (w, h) == (tw, th):
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return _resize_premultiplied(image, (tw, th))
    return cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)


def _resize_premultiplied(image: MatLike, target: tuple[int, int]) -> MatLike:
    """Resize BGRA weighting colours by alpha.

    Averaging straight colours lets the (often black) colour of invisible pixels bleed into
    the edges of what is visible.
    """
    top = _max_sample(image)
    alpha = image[:, :, 3]
    if int(alpha.min()) == top:  # opaque: the plain path is exact and cheaper
        return cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    weights = cv2.merge([alpha, alpha, alpha, np.full_like(alpha, top)])
    small = cv2.resize(
        cv2.multiply(image, weights, scale=1 / top), target, interpolation=cv2.INTER_AREA
    )
    small = small.astype(np.float32)
    a = small[:, :, 3:]
    small[:, :, :3] = np.where(a > 0, small[:, :, :3] * top / np.maximum(a, 1), 0)
    result: MatLike = np.clip(small + 0.5, 0, top).astype(image.dtype)
    return result


def _max_sample(image: MatLike) -> int:
    return 65535 if image.dtype == np.uint16 else 255  # decoded PNGs are 8 or 16 bits


def _convert(image: MatLike, fmt: str) -> MatLike:
    """Fit the samples to the output format: 8 bits for JPEG and WebP, no alpha for JPEG."""
    if image.dtype != np.uint8 and fmt != "png":
        # OpenCV would clip 16-bit samples to 255 rather than scale them.
        image = cv2.convertScaleAbs(image, alpha=255 / _max_sample(image))
    if fmt == "jpeg" and image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:].astype(np.float32) / 255
        flat = image[:, :, :3].astype(np.float32) * alpha + 255 * (1 - alpha)  # onto white
        image = (flat + 0.5).astype(np.uint8)
    return image


def _encode(image: MatLike, op: Thumbnail, ext: str) -> bytes:
    params = {
        "jpeg": [cv2.IMWRITE_JPEG_QUALITY, op.quality],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, op.quality],
        "png": [cv2.IMWRITE_PNG_COMPRESSION, 6],
    }[op.format]
    try:
        ok, buf = cv2.imencode(f".{ext}", image, params)
    except cv2.error as e:
        raise FatalError(f"cannot encode the thumbnail as {op.format}", str(e)) from e
    if not ok:
        raise FatalError(f"cannot encode the thumbnail as {op.format}")
    return bytes(buf.tobytes())
