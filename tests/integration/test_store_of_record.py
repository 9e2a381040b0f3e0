"""PostgreSQL as the store of record: migrations, the outbox relay, guarded transitions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from contracts.settings import PostgresSettings, Secret
from pixfleet.db import migrate, migrations
from tests.conftest import PG, _admin
from tests.helpers import Client, job_body, queue_depth, upload, wait_for


@pytest.fixture
def empty_database(namespace: str) -> Any:
    name = f"{namespace}_empty"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield PostgresSettings(dsn=Secret(f"{PG}/{name}"))
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_migrate_is_idempotent_and_safe_concurrently(
    empty_database: PostgresSettings,
) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(4)))
    applied = sorted(name for r in results for name in r)
    assert applied == [name for _, name, _ in migrations()]
    assert await migrate(empty_database) == []
    conn = await asyncpg.connect(empty_database.dsn.reveal())
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert versions == [v for v, _, _ in migrations()]


async def test_relay_publishes_jobs_an_edge_never_published(
    client: Client, alice: dict[str, str], database: str, namespace: str
) -> None:
    """An edge that crashed between INSERT and publish leaves a row; the relay sends it."""
    up = await upload(client, alice)
    r = await client.post("/v1/jobs", json=job_body(up), headers=alice)
    assert r.status_code == 202
    conn = await asyncpg.connect(database)
    try:
        orphan = uuid.uuid4()
        await conn.execute(
            "INSERT INTO jobs (id, owner, request_digest, phase, pool, priority_class, priority,"
            " request, destruction_at, execution_duration, created_at)"
            " SELECT $1, owner, request_digest, 'QUEUED', pool, priority_class, priority,"
            " request, destruction_at, execution_duration, now() - interval '1 minute'"
            " FROM jobs LIMIT 1",
            orphan,
        )
        for _ in range(200):
            enqueued = await conn.fetchval("SELECT enqueued_at FROM jobs WHERE id = $1", orphan)
            if enqueued is not None:
                break
            await asyncio.sleep(0.05)
        assert enqueued is not None
    finally:
        await conn.close()
    assert await queue_depth(namespace) == 2


async def test_illegal_transitions_are_no_ops(
    client: Client, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    from edge.store.jobs import JobStore
    from worker.runtime.jobstore import WorkerJobStore

    up = await upload(client, alice)
    job = (await client.post("/v1/jobs", json=job_body(up), headers=alice)).json()
    job_id = uuid.UUID(job["id"])
    worker = WorkerJobStore(pool)
    claim = await worker.claim(job_id, uuid.uuid4(), "w1", 30)
    assert claim is not None and claim.attempts == 1
    assert await worker.claim(job_id, uuid.uuid4(), "w2", 30) is None  # lease is live
    stale = claim.__class__(
        **{**{f: getattr(claim, f) for f in claim.__struct_fields__}, "token": uuid.uuid4()}
    )
    assert not await worker.complete(stale, [])  # not the lease holder
    assert await JobStore(pool).abort("alice", job_id) is not None
    assert not await worker.complete(claim, [])  # aborted meanwhile: no completion
    assert not await worker.renew(claim, 30)
    phase = await pool.fetchval("SELECT phase FROM jobs WHERE id = $1", job_id)
    assert phase == "ABORTED"


async def test_expired_jobs_are_archived_and_their_results_deleted(
    env: dict[str, str], alice: dict[str, str], start_worker: Any, database: str
) -> None:
    from pathlib import Path

    from contracts.settings import load_settings
    from edge.app import create_app
    from edge.settings import EdgeSettings

    settings = load_settings(EdgeSettings, {**env, "PIXFLEET_JOB_TTL": "2"})
    start_worker(ready=True)  # the job must run within its 2 s of life
    async with AsyncTestClient(create_app(settings)) as client:
        up = await upload(client, alice)
        job = (
            await client.post(
                "/v1/jobs",
                headers=alice,
                json={"inputs": [up], "pipeline": [{"op": "thumbnail", "size": 16}]},
            )
        ).json()
        done = await wait_for(client, job["href"], alice, {"COMPLETED", "ERROR"})
        assert done["phase"] == "COMPLETED"
        results = Path(settings.store.root) / "objects" / "results" / job["id"]
        assert results.exists()
        archived = await wait_for(client, job["href"], alice, {"ARCHIVED"}, timeout=30)
        assert archived["phase"] == "ARCHIVED" and archived["results"] == []
        assert not any(results.glob("*"))
        r = await client.get(f"{job['href']}/results/{done['results'][0]['name']}", headers=alice)
        assert r.status_code == 409
