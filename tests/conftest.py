"""Fixtures over the real services: a database cloned from a migrated template per test, a
RabbitMQ namespace and Redis prefix per test (deleted afterwards), a file store in tmp_path or a
bucket on moto, a pool and an object store on them, the edge app in the test's own loop, and
worker and edge processes started as the operator would; for the operations run in-process, a
context and spies on OpenCV's codecs. Plain helpers are in ``tests/helpers.py``."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import cv2
import httpx
import hypothesis
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from contracts.settings import (
    PostgresSettings,
    RabbitSettings,
    Secret,
    StoreSettings,
    load_settings,
)
from edge.app import create_app
from edge.settings import EdgeSettings
from pixfleet import broker
from pixfleet.db import create_pool, migrate
from pixfleet.registry.keys import create_key
from pixfleet.store import ObjectStore, open_store
from tests.helpers import ROOT
from worker.ops.api import LocalContext

# CI (CI=true) replays the same examples on every run: a landing gate must not fail at random.
# Elsewhere hypothesis explores anew each run, as it should while developing.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

PG = os.environ.get("PIXFLEET_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = "redis://127.0.0.1:6379/0"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database with every migration applied, cloned by each test."""
    name = f"pixfleet_tmpl_{os.getpid()}"

    async def create() -> None:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _admin(f'CREATE DATABASE "{name}"')
        await migrate(PostgresSettings(dsn=Secret(f"{PG}/{name}")))

    asyncio.run(create())
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def database(pg_template: str, namespace: str) -> Iterator[str]:
    asyncio.run(_admin(f'CREATE DATABASE "{namespace}" TEMPLATE "{pg_template}"'))
    yield f"{PG}/{namespace}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{namespace}" WITH (FORCE)'))


@pytest.fixture
def env(
    database: str, namespace: str, tmp_path: Path, store_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """``PIXFLEET_*`` variables of this test's deployment (edge and workers)."""
    values = {
        "PIXFLEET_POSTGRES_DSN": database,
        "PIXFLEET_POSTGRES_POOL_MIN": "1",
        "PIXFLEET_REDIS_PREFIX": namespace,
        "PIXFLEET_RABBIT_NAMESPACE": namespace,
        "PIXFLEET_RABBIT_RETRY_DELAYS": "0.3,0.6",
        "PIXFLEET_STORE_ROOT": str(tmp_path / "store"),
        "PIXFLEET_SCRATCH_DIR": str(tmp_path / "scratch"),
        "PIXFLEET_OP_PLUGINS": "tests.plugin_ops",
        "PIXFLEET_LEASE_SECONDS": "3",
        "PIXFLEET_RELAY_INTERVAL": "0.3",
        "PIXFLEET_RELAY_GRACE": "1",
        "PIXFLEET_SLOTS": "1",
        "PIXFLEET_MAX_ATTEMPTS": "3",
        "PIXFLEET_SHUTDOWN_GRACE": "5",
        **store_env,
    }
    yield values
    asyncio.run(_cleanup_broker(namespace))


async def _cleanup_broker(namespace: str) -> None:
    rabbit = RabbitSettings(namespace=namespace, retry_delays=[0.3, 0.6])
    conn = await broker.connect(rabbit, attempts=3)
    try:
        channel = await conn.channel()
        await broker.delete(channel, rabbit)
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(f"{namespace}:*", count=10_000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def edge_settings(env: dict[str, str]) -> EdgeSettings:
    return load_settings(EdgeSettings, env)


@pytest.fixture
async def client(edge_settings: EdgeSettings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The edge app, lifespan and all, in this test's loop."""
    app = create_app(edge_settings)
    async with AsyncTestClient(app, base_url="http://127.0.0.1:8000", timeout=30) as c:
        yield c


async def _key(dsn: str, owner: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        key = await create_key(conn, owner)
    finally:
        await conn.close()
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def alice(database: str) -> dict[str, str]:
    """Authorization headers of owner ``alice``."""
    return await _key(database, "alice")


@pytest.fixture
async def bob(database: str) -> dict[str, str]:
    return await _key(database, "bob")


@pytest.fixture
async def pool(env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on this test's database, opened as the edge and workers open it."""
    p = await create_pool(load_settings(PostgresSettings, env, "PIXFLEET_POSTGRES_"), attempts=3)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def store(env: dict[str, str]) -> AsyncIterator[ObjectStore]:
    """The object store of this test's deployment (``store_backend`` says which)."""
    s = await open_store(load_settings(StoreSettings, env, "PIXFLEET_STORE_"))
    try:
        yield s
    finally:
        await s.close()


# -- processes ----------------------------------------------------------------------------


def _start_pixfleet(command: str, variables: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``pixfleet <command>`` with ``variables`` over the environment, output to ``log``."""
    with log.open("wb") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "cli", command],
            env={**os.environ, **variables, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def _stop(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process still running, then SIGKILL those not gone within ``grace``."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_serving(
    what: str,
    proc: subprocess.Popen[bytes],
    url: str,
    log: Path,
    ready: Callable[[httpx.Response], bool],
    timeout: float = 30.0,
) -> None:
    """Poll ``url`` until its answer is ``ready`` (a bound, not a timed assertion); fail the
    test with the tail of the process's log if it exits first or the bound passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with status {proc.returncode}:\n{_tail(log)}")
        try:
            if ready(httpx.get(url, timeout=1.0)):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} was not ready at {url} within {timeout:.0f} s:\n{_tail(log)}")


@pytest.fixture
def start_worker(
    env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``pixfleet worker`` processes; each is stopped (SIGTERM, then SIGKILL) at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        pool: str = "standard", slots: int = 1, *, ready: bool = False, **extra: str
    ) -> subprocess.Popen[bytes]:
        """``ready``: return once the worker consumes (its children have started)."""
        variables = {**env, "PIXFLEET_POOL": pool, "PIXFLEET_SLOTS": str(slots), **extra}
        log = tmp_path / f"worker-{len(procs)}.log"
        proc = _start_pixfleet("worker", variables, log)
        procs.append(proc)
        deadline = time.monotonic() + 60  # a bound, not a timed assertion
        while ready and "consuming" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker did not start consuming:\n{log.read_text()[-4000:]}")
            time.sleep(0.05)
        return proc

    yield start
    _stop(procs, grace=30)


@pytest.fixture
def live_edge(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``pixfleet edge`` as its own process (uvicorn), for what needs a real HTTP server; the
    test fails, showing the edge's log, if the edge does not become ready."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    variables = {**env, "PIXFLEET_PORT": str(port), "PIXFLEET_STORE_PUBLIC_URL": base}
    log = tmp_path / "edge.log"
    proc = _start_pixfleet("edge", variables, log)
    try:
        _wait_serving("pixfleet edge", proc, f"{base}/readyz", log, lambda r: r.status_code == 200)
        yield base
    finally:
        _stop([proc], grace=20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server in a subprocess for the session (our only stand-in), then stopped."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(port), "-H", "127.0.0.1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_serving("moto.server", proc, url, log, lambda r: True)  # any answer will do
        yield url
    finally:
        _stop([proc], grace=10)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """``file`` unless a test parametrizes it (``indirect=True``) with ``s3``."""
    return str(getattr(request, "param", "file"))


@pytest.fixture
def store_env(store_backend: str, request: pytest.FixtureRequest, namespace: str) -> dict[str, str]:
    if store_backend != "s3":
        return {}
    endpoint = request.getfixturevalue("moto_endpoint")
    return {
        "PIXFLEET_STORE_BACKEND": "s3",
        "PIXFLEET_STORE_ENDPOINT_URL": endpoint,
        "PIXFLEET_STORE_BUCKET": namespace,
        "PIXFLEET_STORE_ACCESS_KEY_ID": "test",
        "PIXFLEET_STORE_SECRET_ACCESS_KEY": "test",
    }


# -- operations in-process ----------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> LocalContext:
    """An operation context writing under ``tmp_path / "out"``, with the default limits."""
    workdir = tmp_path / "out"
    workdir.mkdir()
    return LocalContext(workdir=workdir)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The flags of every ``cv2.imdecodeWithMetadata`` call the operations make."""
    flags: list[int] = []
    decode = cv2.imdecodeWithMetadata

    def spy(data: Any, flag: int) -> Any:
        flags.append(flag)
        return decode(data, flag)

    monkeypatch.setattr(cv2, "imdecodeWithMetadata", spy)
    return flags


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The extension of every ``cv2.imencodeWithMetadata`` call the operations make."""
    exts: list[str] = []
    encode = cv2.imencodeWithMetadata

    def spy(ext: str, *args: Any) -> Any:
        exts.append(ext)
        return encode(ext, *args)

    monkeypatch.setattr(cv2, "imencodeWithMetadata", spy)
    return exts
