"""Hostile files made on the fly: each function returns the bytes of one case.

For the edge's upload tests (refused at upload, or accepted and left for a worker to fail),
the sniffer's unit tests and the workers' tests. The valid parts are made with Pillow (and
OpenCV for a 16-bit RGB PNG); the hostile parts are written by hand. Nothing binary is
committed. Sizes default to ``W`` x ``H``.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import cv2
import numpy as np
from PIL import Image

W, H = 64, 48
ORIENTATION = 0x0112
SHORT, LONG, ASCII, RATIONAL = 3, 4, 2, 5

# Images that are fine (the valid parts of everything else)


def pixels(width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    """An RGB gradient with a block whose colour follows ``seed`` (so frames differ)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 128)],
        axis=-1,
    ).astype(np.uint8)
    rgb[: max(height // 4, 1), : max(width // 4, 1)] = ((seed * 37) % 256, (seed * 91) % 256, 255)
    return rgb


def encode(fmt: str, width: int = W, height: int = H, mode: str = "RGB", **kwargs: object) -> bytes:
    """One image in a Pillow format (``JPEG``, ``PNG``, ``GIF``, ``WEBP``, ``TIFF``, ``AVIF``)."""
    buf = io.BytesIO()
    Image.fromarray(pixels(width, height)).convert(mode).save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg() -> bytes:
    return encode("JPEG")


def png() -> bytes:
    return encode("PNG")


def gif() -> bytes:
    return encode("GIF")


def avif() -> bytes:
    return encode("AVIF")


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG (Adobe APP14), as print workflows write them."""
    return encode("JPEG", mode="CMYK")


def png_16bit() -> bytes:
    """An RGB PNG with 16-bit samples."""
    ok, buf = cv2.imencode(".png", pixels().astype(np.uint16) * 257)
    assert ok
    return buf.tobytes()


def animated(fmt: str, frames: int, width: int = W, height: int = H) -> bytes:
    """An animated ``GIF``, ``PNG`` (APNG), ``WEBP`` or ``AVIF``, or a multi-page ``TIFF``."""
    images = [Image.fromarray(pixels(width, height, seed=i)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=True, append_images=images[1:], duration=50, loop=0)
    return buf.getvalue()


def multipage_tiff(pages: int = 3) -> bytes:
    return animated("TIFF", pages)


# Not images


def empty() -> bytes:
    return b""


def wrong_magic() -> bytes:
    """A PNG whose signature's first byte is wrong."""
    return b"\x88" + png()[1:]


def svg(bom: bool = False, leading: str = "") -> bytes:
    """An SVG drawing, optionally after a UTF-8 byte order mark and whitespace."""
    text = (
        f'{leading}<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
        '<script>alert(document.domain)</script><rect width="64" height="48"/></svg>\n'
    )
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def html() -> bytes:
    return b"<!DOCTYPE html>\n<html><body><img src=x onerror=alert(1)></body></html>\n"


def xml() -> bytes:
    return b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>t</title></channel></rss>'


def pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )


def zip_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("payload.html", "<html><script>alert(1)</script></html>")
    return buf.getvalue()


def elf() -> bytes:
    """The start of a 64-bit little-endian ELF executable header."""
    return b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + struct.pack("<HHI", 2, 0x3E, 1) + bytes(40)


def windows_exe() -> bytes:
    return b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(50) + b"\x80\x00\x00\x00" + bytes(64)


def heic() -> bytes:
    """The start of a HEIC file: an ftyp box with HEVC brands (not supported)."""
    ftyp = b"heic" + b"\0\0\0\0" + b"mif1heic"
    return struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp + bytes(64)


# Broken or lying images


def truncated_jpeg() -> bytes:
    data = jpeg()
    return data[: len(data) * 2 // 3]


def truncated_png() -> bytes:
    data = png()
    return data[: len(data) * 2 // 3]


def truncated_gif() -> bytes:
    data = animated("GIF", 3)
    return data[: len(data) * 2 // 3]


def jpeg_bad_magic_tail() -> bytes:
    """A JPEG signature followed by junk."""
    return b"\xff\xd8\xff\xe0" + b"\x13\x37" * 64


def corrupt_huffman_jpeg() -> bytes:
    """A JPEG whose headers are valid but whose Huffman tables are impossible.

    Every table in every DHT segment is replaced by one declaring two 1-bit codes (a code of
    all ones is not allowed), so libjpeg stops with "Bogus Huffman table definition" when it
    starts decoding. Only a decode tells: the edge accepts it, a worker fails.
    """
    data, out, pos = jpeg(), bytearray(b"\xff\xd8"), 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = data[pos : pos + 2 + length]
        if marker == 0xC4:
            tables, body, at = b"", segment[4:], 0
            while at < len(body):
                tables += bytes([body[at], 2]) + bytes(15) + b"\x00\x01"
                at += 17 + sum(body[at + 1 : at + 17])
            segment = b"\xff\xc4" + struct.pack(">H", 2 + len(tables)) + tables
        out += segment
        if marker == 0xDA:
            return bytes(out + data[pos + 2 + length :])
        pos += 2 + length


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes of well-formed PNG whose header claims ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def long_strip_png(width: int = 100_000, height: int = 1) -> bytes:
    """A real, small PNG of 1 x 100,000 pixels (over the default 65,535 a side)."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


def _tiff_ifd0(data: bytes) -> tuple[str, int, int]:
    """Return a little- or big-endian TIFF's struct prefix, IFD0 offset and entry count."""
    o = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(o + "I", data[4:8])[0]
    return o, ifd, struct.unpack(o + "H", data[ifd : ifd + 2])[0]


def tiff_bogus_ifd_offset() -> bytes:
    """A TIFF whose header points its first IFD far beyond the end of the file."""
    data = bytearray(encode("TIFF"))
    o, _, _ = _tiff_ifd0(bytes(data))
    data[4:8] = struct.pack(o + "I", 0xFFFFFF00)
    return bytes(data)


def tiff_ifd_loop() -> bytes:
    """A TIFF whose first IFD names itself as the next one: an endless page chain."""
    data = bytearray(encode("TIFF"))
    o, ifd, count = _tiff_ifd0(bytes(data))
    at = ifd + 2 + 12 * count
    data[at : at + 4] = struct.pack(o + "I", ifd)
    return bytes(data)


def tiff_compression(code: int = 50000) -> bytes:
    """An uncompressed TIFF relabelled with another compression (50000: Zstd)."""
    data = bytearray(encode("TIFF", compression="raw"))
    o, ifd, count = _tiff_ifd0(bytes(data))
    for at in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if struct.unpack(o + "H", data[at : at + 2])[0] == 259:
            data[at + 8 : at + 10] = struct.pack(o + "H", code)
            return bytes(data)
    raise AssertionError("Pillow wrote no Compression tag")


# EXIF that lies (the image itself is fine)


def exif_block(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """A big-endian TIFF stream with one IFD at offset 8: (tag, type, count, 4 value bytes)."""
    ifd = struct.pack(">H", len(entries))
    ifd += b"".join(struct.pack(">HHI", tag, kind, n) + value for tag, kind, n, value in entries)
    return b"MM\0*" + struct.pack(">I", 8) + ifd + struct.pack(">I", next_ifd)


def short(value: int) -> bytes:
    return struct.pack(">HH", value, 0)


def with_exif(tiff: bytes, image: bytes | None = None) -> bytes:
    """A JPEG with ``tiff`` as its EXIF block (APP1 right after SOI)."""
    data = image or jpeg()
    payload = b"Exif\0\0" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + data[2:]


def exif_orientation(value: int = 0, kind: int = SHORT, count: int = 1) -> bytes:
    """A JPEG whose EXIF orientation is out of range (0, 9, 65535) or of the wrong type."""
    if kind == ASCII:
        raw = b"6\0\0\0"
    else:
        raw = short(value) if kind == SHORT else struct.pack(">I", value)
    return with_exif(exif_block([(ORIENTATION, kind, count, raw)]))


def exif_huge_tag() -> bytes:
    """A JPEG whose EXIF has a tag claiming 2 GiB at an offset past the end, before a good
    orientation (6)."""
    entries = [
        (0x010E, ASCII, 0x7FFFFFFF, struct.pack(">I", 0xFFFFFFF0)),  # ImageDescription
        (0x8298, ASCII, 0x40000000, struct.pack(">I", 26)),  # Copyright, inside the block
        (ORIENTATION, SHORT, 1, short(6)),
    ]
    return with_exif(exif_block(entries))


def exif_too_many_entries() -> bytes:
    """A JPEG whose EXIF IFD claims 65,535 entries in a block of a few bytes."""
    return with_exif(b"MM\0*" + struct.pack(">IH", 8, 0xFFFF) + short(0) * 3)


def exif_ifd_loop() -> bytes:
    """A JPEG whose EXIF IFD0 is its own next IFD and its own Exif sub-IFD (orientation 3)."""
    entries = [(ORIENTATION, SHORT, 1, short(3)), (0x8769, LONG, 1, struct.pack(">I", 8))]
    return with_exif(exif_block(entries, next_ifd=8))


# Polyglots: an image and something else


def gif_zip_polyglot() -> bytes:
    """A GIF with a ZIP archive after its trailer (ZIP readers look from the end)."""
    return gif() + zip_archive()


def jpeg_html_polyglot() -> bytes:
    """A JPEG with an HTML page after its end-of-image marker."""
    return jpeg() + html()


def png_html_polyglot() -> bytes:
    return png() + b"\n" + html()


def jpeg_script_comment() -> bytes:
    """A JPEG whose COM segment holds a script tag."""
    data = jpeg()
    text = b"<script>alert(document.cookie)</script>"
    return data[:2] + b"\xff\xfe" + struct.pack(">H", 2 + len(text)) + text + data[2:]


def jpeg_padded(padding: bytes = b"\0" * 64) -> bytes:
    """A JPEG with a little padding after its end (accepted)."""
    return jpeg() + padding
