"""Recognise an image by its magic bytes, read its size and frame count from its headers, and
check that a file is one whole image and nothing else, never decoding a pixel.

The edge calls :func:`inspect_image` and :func:`check_complete` before it stores an upload and
worker operations call them again before any decode, so a header that lies (a decompression
bomb), a truncated file or a polyglot is refused before anything allocates pixels.
Standard library only (and ``contracts.media``, the media types it answers with), in every
module of the package: the edge imports it and must never import numpy, scipy, astropy,
OpenCV (cv2) or Pillow. Every walk over markers, chunks, blocks, boxes, IFDs or HDUs is
bounded, and reads seek to the bytes they need; the JPEG and GIF end walks read the file
through a 1 MiB window.

Supported: JPEG, PNG (and APNG), WebP (and animated), GIF (frames counted; the first is
used), TIFF (pages counted; compressions OpenCV cannot decode are refused), BMP, AVIF (still
and sequence), FITS. Three errors, and nothing else, come out of the public functions (and
``OSError`` from the file system): ``NotAnImageError`` (empty, or no supported signature: the
message names what the bytes look like, "an SVG document", "a ZIP archive"),
``CorruptImageError`` (the format is recognised but broken, truncated or carrying something
else) and ``ImageTooLargeError`` (over a limit).

Policies:

- Frames: GIF image descriptors, APNG ``acTL``, WebP ``ANMF`` chunks, the TIFF IFD chain, the
  ``stsz`` sample count of an AVIF sequence's first track, FITS planes past the second axis.
  Counting stops at ``_MAX_FRAMES`` (ImageTooLargeError whatever ``max_frames`` says). A GIF
  frame reaching past the logical screen widens the reported size, as Pillow's canvas does.
  A TIFF IFD chain that loops or points outside the file is corrupt.
- EXIF orientation is read from IFD0 only (no IFD chains, so no loops), from a single BYTE,
  SHORT or LONG value inside the entry (never at an offset, so a count of gigabytes reads
  nothing). A value outside 1-8, another type or count, or an unreadable block gives 1:
  decoders ignore broken EXIF and the pixels are fine, so the image is accepted as stored.
- Trailing data (``check_complete``): a JPEG ends at the first EOI after its first scan (the
  images an MPF segment announces, MPO and gain maps, may follow), a PNG at IEND, a GIF at its
  trailer, a WebP where its RIFF size says, an AVIF after its last top-level box. Up to
  ``_TAIL`` bytes of NULs or ASCII whitespace may follow (writers pad); anything else, an
  appended ZIP, HTML, script or a second file, is corrupt: a polyglot is refused. So are
  motion photos (an MP4 after a JPEG). TIFF, BMP and FITS have no end marker; data after them
  is not looked for.
- Markup inside: JPEG COM and APPn segments, PNG text chunks (compressed ones read up to
  1 MiB) and GIF comments holding an HTML, SVG or script tag (``<script``,
  ``<html``, ``<svg``, ``<?php``...) are corrupt. XMP is XML but uses none of those tags.

This module holds the public API, the signatures and the dispatch; ``base`` ``ImageInfo``,
the errors and the bounded ``Reader``; ``refusals`` what non-images look like and the markup
search; one module per format (``jpeg``, ``png``, ``gif``, ``webp``, ``tiff``
with EXIF, ``bmp``, ``isobmff`` for AVIF, ``fits``) reads its headers (``inspect``) and, where
the format has an end, finds it (``image_end``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from contracts.media import AVIF, BMP, FITS, GIF, JPEG, PNG, TIFF, WEBP
from pixfleet.sniff import bmp, fits, gif, isobmff, jpeg, png, tiff, webp
from pixfleet.sniff.base import (
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    Reader,
)
from pixfleet.sniff.refusals import describe

__all__ = [
    "CorruptImageError",
    "ImageInfo",
    "ImageTooLargeError",
    "NotAnImageError",
    "check_complete",
    "inspect_image",
    "sniff",
]

_SIGNATURES = (
    (b"\xff\xd8\xff", JPEG), (png.SIGNATURE, PNG), (b"GIF87a", GIF), (b"GIF89a", GIF),
    (b"II*\x00", TIFF), (b"MM\x00*", TIFF), (b"II+\x00", TIFF), (b"MM\x00+", TIFF),
)  # fmt: skip
_MAX_FRAMES = 100_000  # frames or pages counted before an image is refused as too long
_PADDING = b"\0 \t\r\n"
_TAIL = 4096  # bytes of padding (NULs, whitespace) allowed after an image's end


def sniff(head: bytes) -> str | None:
    """Return the media type that the first bytes of a file announce, or None if unknown."""
    for magic, media_type in _SIGNATURES:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in bmp.HEADER_SIZES:
        return BMP
    if head.startswith(b"SIMPLE  =") and head[10:30].strip() == b"T":
        return FITS
    if isobmff.is_avif(head):
        return AVIF
    return None


def inspect_image(
    path: Path, *, max_pixels: int, max_side: int, max_frames: int | None = None
) -> ImageInfo:
    """Read an image's type, size and frame count from its headers and check them against limits.

    Raises:
        NotAnImageError: the file is empty, has no supported signature (the message says what
            it looks like), or is a TIFF compressed in a way the workers cannot decode.
        CorruptImageError: the headers are truncated or inconsistent.
        ImageTooLargeError: width x height exceeds ``max_pixels``, a side ``max_side``, or the
            frame count ``max_frames`` (None: not checked).
        OSError: the file cannot be read.
    """
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            raise NotAnImageError("empty file: 0 bytes")
        f.seek(0)
        head = f.read(1024)
        media_type = sniff(head)
        if media_type is None:
            what = describe(head)
            if what is None:
                raise NotAnImageError(
                    f"unknown signature {head[:8].hex(' ')}: not a supported image"
                    " (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF or FITS)"
                )
            raise NotAnImageError(f"looks like {what}, not a supported image")
        info = _PARSERS[media_type](Reader(f, size))
    _check_limits(info, max_pixels, max_side, max_frames)
    return info


def _check_limits(info: ImageInfo, max_pixels: int, max_side: int, max_frames: int | None) -> None:
    w, h, frames = info.width, info.height, info.frames
    if w is not None and h is not None:
        if w <= 0 or h <= 0:
            raise CorruptImageError(f"{info.media_type} header gives a size of {w}x{h}")
        if w > max_side or h > max_side or w * h > max_pixels:
            raise ImageTooLargeError(
                f"image is {w}x{h} ({w * h:,} pixels); the limits are {max_pixels:,} pixels"
                f" and {max_side:,} pixels a side"
            )
    # A FITS cube's planes are data, not an animation: the pixel limit covers them.
    if (
        max_frames is not None
        and frames is not None
        and frames > max_frames
        and info.media_type != FITS
    ):
        raise ImageTooLargeError(f"{info.media_type} has {frames:,} frames, at most {max_frames:,}")


def check_complete(path: Path, media_type: str) -> None:
    """Check that a file is one whole image and nothing else (see the module's policies).

    JPEG, PNG, GIF, WebP and AVIF: the structure ends where the file does (give or take some
    padding) and no markup hides in comments or text. Other media types are not checked.
    Reads headers, segments and the file's tail; JPEG and GIF walk the file in windows.

    Raises:
        CorruptImageError: the file is truncated, its structure is broken, it goes on after
            the image's end, or it carries markup.
        ImageTooLargeError: a GIF or WebP has more than ``_MAX_FRAMES`` frames.
        OSError: the file cannot be read.
    """
    found = _ENDS.get(media_type)
    if found is None:
        return
    image_end, what = found
    with path.open("rb") as f:
        r = Reader(f, f.seek(0, os.SEEK_END))
        _check_tail(r, image_end(r), what)


def _check_tail(r: Reader, end: int, what: str) -> None:
    """Refuse anything but a little padding after ``end``, where the image ``what`` ends."""
    extra = r.size - end
    if extra <= 0:
        return
    data = r.read(end, min(extra, _TAIL), "tail")
    if extra <= _TAIL and not data.strip(_PADDING):
        return
    rest = data.lstrip(_PADDING)
    other = sniff(rest)
    looks = f"another image ({other})" if other else describe(rest)
    raise CorruptImageError(
        f"{extra:,} bytes after the {what}"
        + (f", looking like {looks}" if looks else "")
        + ": data after an image is refused (a polyglot or a damaged file)"
    )


# The lambdas read _MAX_FRAMES when called, not when the table is built (tests lower it).
_PARSERS: dict[str, Callable[[Reader], ImageInfo]] = {
    JPEG: jpeg.inspect, PNG: png.inspect, WEBP: lambda r: webp.inspect(r, _MAX_FRAMES),
    GIF: lambda r: gif.inspect(r, _MAX_FRAMES), BMP: bmp.inspect,
    TIFF: lambda r: tiff.inspect(r, _MAX_FRAMES), AVIF: isobmff.inspect, FITS: fits.inspect,
}  # fmt: skip
# Where each format with an end marker ends, and what that end is called in errors.
_ENDS: dict[str, tuple[Callable[[Reader], int], str]] = {
    JPEG: (jpeg.image_end, "JPEG's end-of-image marker"),
    PNG: (png.image_end, "PNG's IEND chunk"),
    GIF: (lambda r: gif.image_end(r, _MAX_FRAMES), "GIF's trailer"),
    WEBP: (lambda r: webp.image_end(r, _MAX_FRAMES), "WebP's RIFF data"),
    AVIF: (isobmff.image_end, "AVIF's last box"),
}
