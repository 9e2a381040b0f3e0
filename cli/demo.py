"""The demo job of ``pixfleet run``: upload a generated image, thumbnail it, fetch the result.

Standard library only (urllib, zlib) and ``contracts.media``: it is also a small example of the
HTTP API.
"""

from __future__ import annotations

import json
import struct
import time
import urllib.error
import urllib.request
import zlib
from typing import Any

from contracts import media


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def gradient_png(width: int = 640, height: int = 480) -> bytes:
    """A colourful RGB PNG made without any imaging library."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            row += bytes((x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)))
        rows.append(bytes(row))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + png_chunk(b"IEND", b"")
    )


def _call(
    base: str,
    key: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    req = urllib.request.Request(
        base + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_ready(base: str, timeout: float = 60.0) -> None:
    """Wait until the edge's readiness probe says ready.

    Raises:
        TimeoutError: not ready in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{base} not ready after {timeout:.0f} s")


def run_demo(base: str, key: str, timeout: float = 60.0) -> dict[str, Any]:
    """Upload, submit a thumbnail job, wait for it, download the result; return a summary.

    Raises:
        RuntimeError: the job did not complete.
    """
    upload = _call(base, key, "POST", "/v1/uploads", gradient_png(), {"Content-Type": media.PNG})
    body = {
        "inputs": [upload["id"]],
        "pipeline": [{"op": "thumbnail", "size": 256, "format": "webp"}],
    }
    started = time.monotonic()
    job = _call(
        base,
        key,
        "POST",
        "/v1/jobs",
        json.dumps(body).encode(),
        {"Content-Type": media.JSON, "Idempotency-Key": f"demo-{upload['id']}"},
    )
    deadline = started + timeout
    while job["phase"] not in ("COMPLETED", "ERROR", "ABORTED") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = _call(base, key, "GET", job["href"])
    if job["phase"] != "COMPLETED":
        raise RuntimeError(f"demo job ended {job['phase']}: {job.get('error')}")
    result = job["results"][0]
    req = urllib.request.Request(base + result["href"], headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # follows the 303 to the signed URL
        data = resp.read()
    return {
        "job": job["id"],
        "seconds": round(time.monotonic() - started, 3),
        "result": result["name"],
        "media_type": result["media_type"],
        "bytes": len(data),
        "href": result["href"],
    }
