"""Fixtures over the real services: a database cloned from a migrated template per test, a
RabbitMQ namespace and Redis prefix per test (deleted afterwards), a file store in tmp_path,
the edge app in the test's own loop, and worker processes started as the operator would."""

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
import httpx
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from contracts.settings import RabbitSettings, load_settings
from edge.app import create_app
from edge.settings import EdgeSettings
from pixfleet import broker
from pixfleet.db import migrate
from pixfleet.keys import create_key

ROOT = Path(__file__).resolve().parents[1]
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
    from contracts.settings import PostgresSettings, Secret

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
def start_worker(
    env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``pixfleet worker`` processes; each is stopped (SIGTERM, then SIGKILL) at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(pool: str = "standard", slots: int = 1, **extra: str) -> subprocess.Popen[bytes]:
        variables = {
            **os.environ,
            **env,
            "PIXFLEET_POOL": pool,
            "PIXFLEET_SLOTS": str(slots),
            "PYTHONPATH": str(ROOT),
            **extra,
        }
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - closed by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixfleet", "worker"],
            env=variables,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_for(
    client: AsyncTestClient[Any],
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


@pytest.fixture
def live_edge(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``pixfleet edge`` as its own process (uvicorn), for what needs a real HTTP server."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    variables = {
        **os.environ,
        **env,
        "PIXFLEET_PORT": str(port),
        "PIXFLEET_STORE_PUBLIC_URL": base,
        "PYTHONPATH": str(ROOT),
    }
    with open(tmp_path / "edge.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixfleet", "edge"],
            env=variables,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "edge.log").read_text()
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


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
        for _ in range(300):  # up to ~30 s: a bound, not a timed assert
            if proc.poll() is not None:
                pytest.fail(f"moto server exited: {log.read_text()}")
            try:
                httpx.get(url, timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(f"moto server did not answer: {log.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
