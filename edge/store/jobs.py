"""Job rows as the edge reads and writes them (the worker has its own claim/lease SQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from contracts.jobs import ABORTABLE_PHASES

JOB_COLUMNS = (
    "id, owner, run_id, idempotency_key, request_digest, phase, pool, priority_class, priority,"
    " created_at, started_at, ended_at, destruction_at, execution_duration, attempts, progress,"
    " progress_message, results, error"
)


class NewJob(msgspec.Struct, kw_only=True):
    """A job row to insert (phase ``QUEUED``, not yet enqueued)."""

    id: UUID
    owner: str
    run_id: str | None
    idempotency_key: str | None
    request_digest: bytes
    pool: str
    priority_class: str
    priority: int
    request: str
    destruction_at: datetime
    execution_duration: int
    created_at: datetime


_INSERT = """
INSERT INTO jobs (id, owner, run_id, idempotency_key, request_digest, phase, pool,
                  priority_class, priority, request, destruction_at, execution_duration,
                  created_at)
SELECT u.id, u.owner, u.run_id, u.idem, u.digest, 'QUEUED', u.pool, u.pclass, u.prio,
       u.request::jsonb, u.destruction_at, u.duration, u.created_at
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[],
            $7::text[], $8::smallint[], $9::text[], $10::timestamptz[], $11::integer[],
            $12::timestamptz[])
     AS u(id, owner, run_id, idem, digest, pool, pclass, prio, request, destruction_at, duration,
          created_at)
ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id
"""


class JobStore:
    """SQL on ``jobs`` for the edge."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert_many(self, jobs: Sequence[NewJob]) -> list[bool]:
        """Insert jobs in one statement; return per job whether it was inserted (False: its
        idempotency key already names another job of the owner)."""
        columns = list(
            zip(
                *(
                    (
                        j.id,
                        j.owner,
                        j.run_id,
                        j.idempotency_key,
                        j.request_digest,
                        j.pool,
                        j.priority_class,
                        j.priority,
                        j.request,
                        j.destruction_at,
                        j.execution_duration,
                        j.created_at,
                    )
                    for j in jobs
                ),
                strict=True,
            )
        )
        rows = await self.pool.fetch(_INSERT, *columns)
        inserted = {r[0] for r in rows}
        return [j.id in inserted for j in jobs]

    async def get(self, owner: str, job_id: UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND owner = $2", job_id, owner
        )

    async def get_by_idempotency_key(self, owner: str, key: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = $1 AND idempotency_key = $2",
            owner,
            key,
        )

    async def list_for_owner(
        self, owner: str, *, phases: Sequence[str], before: UUID | None, limit: int
    ) -> list[asyncpg.Record]:
        """The owner's jobs, newest first, optionally of some phases and older than a cursor."""
        return await self.pool.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = $1"
            " AND ($2::text[] IS NULL OR phase = ANY($2::text[]))"
            " AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            owner,
            list(phases) or None,
            before,
            limit,
        )

    async def abort(self, owner: str, job_id: UUID) -> asyncpg.Record | None:
        """Move a job to ``ABORTED`` if it has not ended; return the row after the change."""
        return await self.pool.fetchrow(
            f"UPDATE jobs SET phase = 'ABORTED', ended_at = now(), lease_token = NULL"
            f" WHERE id = $1 AND owner = $2 AND phase = ANY($3::text[]) RETURNING {JOB_COLUMNS}",
            job_id,
            owner,
            [p.value for p in ABORTABLE_PHASES],
        )

    async def mark_enqueued(self, ids: Sequence[UUID]) -> None:
        """Record broker confirms for many jobs at once."""
        await self.pool.execute(
            "UPDATE jobs SET enqueued_at = now()"
            " WHERE id = ANY($1::uuid[]) AND enqueued_at IS NULL",
            list(ids),
        )

    async def unenqueued(self, *, older_than: float, limit: int) -> list[asyncpg.Record]:
        """Queued jobs that no broker confirmed within ``older_than`` seconds (the outbox)."""
        return await self.pool.fetch(
            "SELECT id, pool, priority, attempts FROM jobs"
            " WHERE phase = 'QUEUED' AND enqueued_at IS NULL"
            " AND created_at < now() - make_interval(secs => $1)"
            " ORDER BY created_at LIMIT $2",
            older_than,
            limit,
        )

    async def release_expired_leases(self, *, older_than: float, limit: int) -> int:
        """Return jobs whose worker vanished long ago (lease expired, message lost) to the
        outbox so the relay publishes them again."""
        result: str = await self.pool.execute(
            "UPDATE jobs SET phase = 'QUEUED', enqueued_at = NULL, lease_token = NULL"
            " WHERE id IN (SELECT id FROM jobs WHERE phase = 'EXECUTING'"
            "   AND lease_expires_at < now() - make_interval(secs => $1) LIMIT $2)"
            " AND phase = 'EXECUTING'",
            older_than,
            limit,
        )
        return int(result.split()[-1])

    async def expired(self, *, limit: int) -> list[UUID]:
        """Jobs past their destruction time that have ended or never started."""
        rows = await self.pool.fetch(
            "SELECT id FROM jobs WHERE destruction_at < now() AND phase <> 'ARCHIVED'"
            " AND phase <> 'EXECUTING' ORDER BY destruction_at LIMIT $1",
            limit,
        )
        return [r[0] for r in rows]

    async def archive(self, ids: Sequence[UUID]) -> None:
        """Mark destroyed jobs ``ARCHIVED`` (their results are gone)."""
        await self.pool.execute(
            "UPDATE jobs SET phase = 'ARCHIVED', results = NULL, lease_token = NULL"
            " WHERE id = ANY($1::uuid[]) AND phase <> 'EXECUTING'",
            list(ids),
        )
