"""What is refused for not being an image or for hiding something else: naming what bytes
without an image signature look like (a PDF, a ZIP archive, an executable, HTML or SVG, text),
and finding markup (HTML, SVG, script or PHP tags) inside an image's comments and text.

Standard library only: the edge imports this, so it must never import numpy, scipy, astropy or
OpenCV (cv2).
"""

from __future__ import annotations

import re

from pixfleet.sniff.base import WINDOW, CorruptImageError, Reader
from pixfleet.sniff.isobmff import ftyp_brands

_LOOKALIKES = (
    (b"%PDF-", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"), (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"), (b"\xca\xfe\xba\xbe", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"), (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"#!", "a script"), (b"\x1f\x8b", "a gzip archive"), (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"%!PS", "a PostScript document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document"), (b"{\\rtf", "an RTF document"),
    (b"8BPS", "a Photoshop document"), (b"\0\0\0\x0cjP  \r\n", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 image"), (b"\xff\x0a", "a JPEG XL image"),
    (b"\0\0\0\x0cJXL \r\n", "a JPEG XL image"), (b"qoif", "a QOI image"),
)  # fmt: skip
_HEIF_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"})
_HTML_TAG = re.compile(rb"<(svg|!doctype\s+html|html|head|body|script|iframe)\b")
# Tags that make bytes inside or after an image dangerous where something sniffs for HTML.
_MARKUP = re.compile(rb"<(?:script|html|head|body|iframe|svg|object|embed)\b|<\?php", re.I)
_TEXT = frozenset(range(32, 127)) | frozenset(b"\t\r\n\f")


def describe(data: bytes) -> str | None:
    """Say what bytes that are no supported image look like ("an SVG document"), None if unsure."""
    for magic, what in _LOOKALIKES:
        if data.startswith(magic):
            return what
    brands = ftyp_brands(data)
    if brands is not None:
        return "a HEIF image" if brands & _HEIF_IMAGE_BRANDS else "an MP4 or QuickTime video"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte order mark
        data = data[2:].decode("utf-16-le" if data[0] == 0xFF else "utf-16-be", "ignore").encode()
    text = data.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(b"<"):
        tag = _HTML_TAG.search(text)
        if tag is not None:
            return "an SVG document" if tag.group(1) == b"svg" else "an HTML document"
        return "an XML document" if text.startswith(b"<?xml") else "markup (HTML or XML)"
    if data and all(b in _TEXT for b in data[:512]):
        return "plain text"
    return None


def refuse_markup(data: bytes, where: str) -> None:
    """Refuse ``data`` (found ``where`` in an image) if it holds an HTML, SVG or script tag.

    Raises:
        CorruptImageError: it does.
    """
    found = _MARKUP.search(data)
    if found is not None:
        tag = found.group().decode("latin-1")
        raise CorruptImageError(f"{where} holds markup ({tag}...): refused as a polyglot")


def scan_markup(r: Reader, start: int, stop: int, where: str) -> None:
    """Refuse markup in ``[start, stop)``, read in windows that overlap by a tag's length.

    Raises:
        CorruptImageError: markup is found, or the range reaches past the end.
    """
    while start < stop:
        data = r.read(start, min(WINDOW, stop - start), where)
        refuse_markup(data, where)
        if start + len(data) >= stop:
            return
        start += len(data) - 16
