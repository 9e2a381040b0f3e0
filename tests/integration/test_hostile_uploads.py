"""Hostile files through the real edge (PostgreSQL, Redis, RabbitMQ and a file store; no worker).

Refused files get an RFC 9457 problem document (415 not a supported image, 422 corrupt, a
polyglot or over a header limit, 413 too many bytes) and leave nothing behind: no upload row,
no stored object, no spool file. Files that are odd but whole, or that only a decode can fault
(a corrupt Huffman table), are accepted with the type and size read from their bytes. The
declared ``Content-Type`` never matters.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from contracts import names
from edge.errors import (
    TYPE_BASE,
    ImageRejectedError,
    PayloadTooLargeError,
    PixfleetError,
    UnsupportedMediaError,
)
from edge.settings import EdgeSettings
from pixfleet.store import FileStore
from tests import hostile
from tests.helpers import fetch_rows

Client = AsyncTestClient[Any]
MAX_FRAMES = 10
MAX_UPLOAD_BYTES = 1 << 20
W, H = hostile.W, hostile.H
UNSUPPORTED, REJECTED = UnsupportedMediaError, ImageRejectedError


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """Conftest's deployment with limits small enough to test (``client``, ``edge_settings``
    and ``live_edge`` all read it)."""
    return {
        **env,
        "PIXFLEET_LIMITS_MAX_FRAMES": str(MAX_FRAMES),
        "PIXFLEET_LIMITS_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }


async def _upload_rows(database: str) -> int:
    [(count,)] = await fetch_rows(database, "SELECT count(*) FROM uploads")
    return int(count)


def _left_in_store(settings: EdgeSettings) -> list[Path]:
    """Every object link, blob file and spool file under the store's root."""
    root = Path(settings.store.root)
    return sorted(p for p in root.rglob("*") if p.is_symlink() or p.is_file())


async def _assert_refused(
    r: Any, error: type[PixfleetError], detail: str, database: str, settings: EdgeSettings
) -> None:
    assert r.status_code == error.status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == TYPE_BASE + error.type
    assert (problem["title"], problem["status"]) == (error.title, error.status)
    assert detail in problem["detail"], problem["detail"]
    assert problem["instance"] == "/v1/uploads"
    assert await _upload_rows(database) == 0, "no upload row"
    assert _left_in_store(settings) == [], "no stored object and no spool file"


REFUSED: list[Any] = [
    pytest.param(hostile.empty, UNSUPPORTED, "empty upload", id="empty"),
    pytest.param(hostile.wrong_magic, UNSUPPORTED, "unknown signature 88 50", id="wrong-magic"),
    pytest.param(lambda: bytes(range(256)) * 8, UNSUPPORTED, "unknown signature", id="binary"),
    pytest.param(hostile.svg, UNSUPPORTED, "looks like an SVG document", id="svg"),
    pytest.param(
        lambda: hostile.svg(bom=True, leading="\r\n\t "),
        UNSUPPORTED,
        "looks like an SVG document",
        id="svg-bom-whitespace",
    ),
    pytest.param(hostile.html, UNSUPPORTED, "looks like an HTML document", id="html"),
    pytest.param(hostile.xml, UNSUPPORTED, "looks like an XML document", id="xml"),
    pytest.param(hostile.pdf, UNSUPPORTED, "looks like a PDF document", id="pdf"),
    pytest.param(hostile.zip_archive, UNSUPPORTED, "looks like a ZIP archive", id="zip"),
    pytest.param(hostile.elf, UNSUPPORTED, "looks like an ELF executable", id="elf"),
    pytest.param(hostile.windows_exe, UNSUPPORTED, "a Windows executable", id="exe"),
    pytest.param(hostile.heic, UNSUPPORTED, "looks like a HEIF image", id="heic"),
    pytest.param(hostile.tiff_compression, UNSUPPORTED, "compression 50000", id="tiff-zstd"),
    pytest.param(hostile.truncated_jpeg, REJECTED, "truncated", id="truncated-jpeg"),
    pytest.param(hostile.truncated_png, REJECTED, "truncated", id="truncated-png"),
    pytest.param(hostile.truncated_gif, REJECTED, "truncated", id="truncated-gif"),
    pytest.param(hostile.jpeg_bad_magic_tail, REJECTED, "JPEG: segment", id="jpeg-junk"),
    pytest.param(hostile.png_bomb, REJECTED, "100000x100000", id="png-bomb"),
    pytest.param(hostile.long_strip_png, REJECTED, "65,535 pixels a side", id="1x100000"),
    pytest.param(hostile.tiff_bogus_ifd_offset, REJECTED, "outside the file", id="tiff-ifd"),
    pytest.param(hostile.tiff_ifd_loop, REJECTED, "IFD chain loops", id="tiff-ifd-loop"),
    pytest.param(hostile.gif_zip_polyglot, REJECTED, "looking like a ZIP archive", id="gif+zip"),
    pytest.param(hostile.jpeg_html_polyglot, REJECTED, "like an HTML document", id="jpeg+html"),
    pytest.param(hostile.png_html_polyglot, REJECTED, "like an HTML document", id="png+html"),
    pytest.param(
        hostile.jpeg_script_comment, REJECTED, "holds markup (<script", id="jpeg-com-script"
    ),
    pytest.param(
        lambda: hostile.jpeg_padded(b"\0" * 5000), REJECTED, "5,000 bytes after", id="padding"
    ),
    *(
        pytest.param(
            lambda fmt=fmt: hostile.animated(fmt, MAX_FRAMES + 2, 16, 12),
            REJECTED,
            f"{MAX_FRAMES + 2} frames, at most {MAX_FRAMES}",
            id=f"{fmt.lower()}-{MAX_FRAMES + 2}-frames",
        )
        for fmt in ("GIF", "PNG", "WEBP", "TIFF", "AVIF")
    ),
    pytest.param(
        lambda: hostile.encode("BMP", 600, 600),
        PayloadTooLargeError,
        f"limited to {MAX_UPLOAD_BYTES} bytes",
        id="over-the-upload-limit",
    ),
]


@pytest.mark.parametrize(("make", "error", "detail"), REFUSED)
async def test_hostile_upload_is_refused(
    client: Client,
    alice: dict[str, str],
    database: str,
    edge_settings: EdgeSettings,
    make: Callable[[], bytes],
    error: type[PixfleetError],
    detail: str,
) -> None:
    headers = {**alice, "Content-Type": "image/png"}  # a declared image type does not help
    r = await client.post("/v1/uploads", content=make(), headers=headers)
    await _assert_refused(r, error, detail, database, edge_settings)


async def test_streamed_upload_over_the_limit_leaves_no_spool_file(
    live_edge: str, alice: dict[str, str], database: str, edge_settings: EdgeSettings
) -> None:
    """Without a Content-Length the limit is found while streaming to the spool file (a real
    server: the test client cannot stream a request body)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield hostile.png()
        for _ in range(4):
            yield b"\0" * (MAX_UPLOAD_BYTES // 2)

    async with httpx.AsyncClient(base_url=live_edge, timeout=30) as http:
        r = await http.post("/v1/uploads", content=chunks(), headers=alice)
    await _assert_refused(r, PayloadTooLargeError, "limited to", database, edge_settings)


def test_too_many_pixels_and_too_many_bytes_are_told_apart() -> None:
    assert ImageRejectedError.type != PayloadTooLargeError.type
    assert ImageRejectedError.status == 422 and PayloadTooLargeError.status == 413


ACCEPTED: list[Any] = [
    pytest.param(hostile.cmyk_jpeg, "image/jpeg", id="cmyk-jpeg"),
    pytest.param(hostile.png_16bit, "image/png", id="png-16bit"),
    pytest.param(hostile.multipage_tiff, "image/tiff", id="multipage-tiff"),
    pytest.param(lambda: hostile.animated("GIF", MAX_FRAMES), "image/gif", id="gif-at-limit"),
    pytest.param(lambda: hostile.animated("PNG", 3), "image/png", id="apng"),
    pytest.param(lambda: hostile.animated("WEBP", 3), "image/webp", id="webp-animated"),
    pytest.param(hostile.avif, "image/avif", id="avif"),
    pytest.param(lambda: hostile.animated("AVIF", 3), "image/avif", id="avif-sequence"),
    pytest.param(hostile.corrupt_huffman_jpeg, "image/jpeg", id="corrupt-huffman"),
    pytest.param(lambda: hostile.exif_orientation(0), "image/jpeg", id="exif-orientation-0"),
    pytest.param(lambda: hostile.exif_orientation(9), "image/jpeg", id="exif-orientation-9"),
    pytest.param(lambda: hostile.exif_orientation(65535), "image/jpeg", id="exif-65535"),
    pytest.param(
        lambda: hostile.exif_orientation(6, kind=hostile.RATIONAL), "image/jpeg", id="exif-type"
    ),
    pytest.param(hostile.exif_huge_tag, "image/jpeg", id="exif-huge-tag"),
    pytest.param(hostile.exif_too_many_entries, "image/jpeg", id="exif-too-many-entries"),
    pytest.param(hostile.exif_ifd_loop, "image/jpeg", id="exif-ifd-loop"),
    pytest.param(hostile.jpeg_padded, "image/jpeg", id="jpeg-zero-padding"),
]


@pytest.mark.parametrize(("make", "media_type"), ACCEPTED)
async def test_odd_but_whole_upload_is_accepted(
    client: Client,
    alice: dict[str, str],
    database: str,
    edge_settings: EdgeSettings,
    make: Callable[[], bytes],
    media_type: str,
) -> None:
    data = make()
    headers = {**alice, "Content-Type": "application/octet-stream"}
    r = await client.post("/v1/uploads", content=data, headers=headers)
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["media_type"], up["width"], up["height"]) == (media_type, W, H)
    assert (up["size"], up["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert await _upload_rows(database) == 1
    store = FileStore(Path(edge_settings.store.root), "test", "http://127.0.0.1", 60)
    key = names.upload_object(up["id"])
    assert await store.get_bytes(key) == data
    stored = await store.head(key)
    assert stored is not None and stored.media_type == media_type
    spool = Path(edge_settings.store.root) / "tmp"
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(
    "declared",
    [
        "image/gif",
        "image/jpeg",
        "image/svg+xml",
        "text/html",
        "application/json",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        None,
    ],
)
async def test_the_bytes_decide_the_type_not_the_declared_one(
    client: Client, alice: dict[str, str], declared: str | None
) -> None:
    headers = dict(alice) if declared is None else {**alice, "Content-Type": declared}
    r = await client.post("/v1/uploads", content=hostile.png(), headers=headers)
    assert r.status_code == 201, r.text
    assert (r.json()["media_type"], r.json()["width"]) == ("image/png", W)
