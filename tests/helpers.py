"""Plain functions the tests share (fixtures live in ``tests/conftest.py``): the edge's API as
a client uses it, the store of record and the broker read directly, ``pixfleet`` commands run
as an operator runs them, and import probes in fresh interpreters.

Bounded waits here are bounds, not timed assertions: a test asserts on what it waited for.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from contracts import names
from tests.images import photo

ROOT = Path(__file__).resolve().parents[1]
Client = AsyncTestClient[Any]
FINAL = {"COMPLETED", "ERROR", "ABORTED"}
BOTH_STORES = pytest.mark.parametrize("store_backend", ["file", "s3"], indirect=True)
"""Run one test body over the file store and S3 (``store_backend`` is conftest's fixture)."""


# -- the API ------------------------------------------------------------------------------


async def upload(client: Client, headers: dict[str, str], data: bytes | None = None) -> str:
    """Upload ``data`` (a photo by default); return the upload's id."""
    r = await client.post("/v1/uploads", content=data or photo(), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def job_body(upload_id: str, **extra: Any) -> dict[str, Any]:
    """A small thumbnail job of one upload."""
    return {"inputs": [upload_id], "pipeline": [{"op": "thumbnail", "size": 64}], **extra}


async def submit(
    client: Client,
    headers: dict[str, str],
    inputs: list[str],
    pipeline: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """Submit a job; return its accepted snapshot."""
    r = await client.post(
        "/v1/jobs", json={"inputs": inputs, "pipeline": pipeline, **extra}, headers=headers
    )
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    return job


async def wait_for(
    client: Client,
    href: str,
    headers: dict[str, str],
    phases: set[str],
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Poll a job until it reaches one of ``phases`` (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await client.get(href, headers=headers)).json()
        if job["phase"] in phases or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


async def fetch_result(client: Client, headers: dict[str, str], result: dict[str, Any]) -> bytes:
    """Follow the result's 303 to its signed URL: the edge's own (file store) or S3's."""
    r = await client.get(result["href"], headers=headers, follow_redirects=False)
    assert r.status_code == 303, r.text
    signed = r.headers["location"]
    edge = "http://127.0.0.1:8000"
    if signed.startswith(edge):
        assert "sig=" in signed and "exp=" in signed
        got = await client.get(signed.removeprefix(edge))
    else:
        assert "X-Amz-Signature=" in signed and "X-Amz-Expires=" in signed
        async with httpx.AsyncClient() as http:  # no API key: the URL alone grants access
            got = await http.get(signed)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == result["media_type"]
    return bytes(got.content)


def assert_problem(r: Any, status: int, type_part: str | None = None) -> dict[str, Any]:
    """Check that ``r`` is an RFC 9457 problem with this status; return its document."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["title"]
    if type_part:
        assert type_part in doc["type"]
    return doc


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds (a bound, not a timed assertion).

    Raises:
        TimeoutError: it did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def child_pid(marker: Path) -> int:
    """Wait until a ``test_slow`` job has started in a child (it writes its pid); return it."""

    async def written() -> bool:
        return marker.exists() and marker.read_text() != ""

    await wait_until(written)
    return int(marker.read_text())


# -- the services, read directly ----------------------------------------------------------


async def fetch_rows(database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on a connection of its own (``database`` is the test's DSN)."""
    conn = await asyncpg.connect(database)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def queue_depth(namespace: str, pool: str = "standard") -> int:
    """Messages ready in a pool's queue of this test's RabbitMQ namespace."""
    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(names.pool_queue(namespace, pool), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await conn.close()


# -- processes ----------------------------------------------------------------------------


def run_pixfleet(
    env: dict[str, str], *args: str | Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``pixfleet <args>`` as an operator would, with this test's ``PIXFLEET_*`` variables;
    the caller checks the exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


_PROBE = """
import sys, importlib
for name in {modules!r}:
    importlib.import_module(name)
leaked = sorted({forbidden!r} & {{m.split('.')[0] for m in sys.modules}})
print(",".join(leaked))
"""


def leaked_imports(modules: Iterable[str], forbidden: set[str]) -> str:
    """Import ``modules`` in a fresh interpreter (nothing another test imported can hide a
    leak); return the ``forbidden`` top-level packages that came with them, comma-separated."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(modules=list(modules), forbidden=forbidden)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return out.stdout.strip()
