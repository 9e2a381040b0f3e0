"""Test images made on the fly (nothing binary is committed)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(
    width: int = 800,
    height: int = 600,
    fmt: str = "JPEG",
    orientation: int | None = None,
    mode: str = "RGB",
) -> bytes:
    """A smooth colour image with a bright top-left marker block, optionally EXIF-rotated."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [
            x * 255 // max(width - 1, 1),
            y * 255 // max(height - 1, 1),
            ((x + y) * 127 // max(width + height, 1)),
        ],
        axis=-1,
    ).astype(np.uint8)
    rgb[: height // 5, : width // 5] = (255, 0, 0)
    img = Image.fromarray(rgb, "RGB").convert(mode)
    buf = io.BytesIO()
    kwargs: dict[str, object] = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb)."""
    import struct
    import zlib

    from cli.demo import png_chunk as chunk

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
