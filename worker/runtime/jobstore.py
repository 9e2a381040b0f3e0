"""Job rows as a worker claims, renews and finishes them. Every write is guarded by the
lease token of the claim, so a worker that lost its job (aborted, taken over) changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from contracts.jobs import ErrorDocument, StoredResult

_results_decoder = msgspec.json.Decoder(list[StoredResult])


class Claim(msgspec.Struct, kw_only=True):
    job_id: UUID
    owner: str
    token: UUID
    attempts: int
    execution_duration: int
    request: str
    priority: int
    stage: str | None = None
    """``combine`` when this claim is a fanned-out job's combine step."""
    plan: bytes | None = None
    """The fanned-out operation's shared state (with ``stage == "combine"``)."""
    tasks_total: int = 0
    uploads: dict[UUID, tuple[str, str]] = {}
    """The job's live uploads, read with the claim: id -> (object key, media type)."""


# Claims the row and, in the same round trip, reads the uploads its request names.
_CLAIM = """
WITH claimed AS (
  UPDATE jobs SET phase = 'EXECUTING', attempts = attempts + 1, lease_token = $2,
    lease_expires_at = now() + make_interval(secs => $3), worker = $4,
    started_at = coalesce(started_at, now()), enqueued_at = coalesce(enqueued_at, now()),
    stage = CASE WHEN stage = 'tasks' THEN 'combine' ELSE stage END,
    progress = CASE WHEN stage IS NULL THEN 0 ELSE progress END,
    progress_message = CASE WHEN stage IS NULL THEN NULL ELSE 'combining' END
  WHERE id = $1 AND (phase = 'QUEUED'
    OR (phase = 'EXECUTING' AND lease_expires_at < now())
    OR (phase = 'EXECUTING' AND stage = 'tasks' AND lease_token IS NULL
        AND tasks_done = tasks_total))
  RETURNING id, owner, attempts, execution_duration, request, priority, stage, plan, tasks_total
)
SELECT c.*, coalesce((
  SELECT jsonb_agg(jsonb_build_array(u.id, u.object_key, u.media_type)) FROM uploads u
  WHERE u.id IN (SELECT jsonb_array_elements_text(c.request -> 'inputs')::uuid)
), '[]'::jsonb) AS uploads
FROM claimed c
"""
_uploads_decoder = msgspec.json.Decoder(list[tuple[UUID, str, str]])


class JobState(msgspec.Struct, kw_only=True):
    phase: str
    lease_remaining: float | None
    stage: str | None = None
    tasks_done: int = 0
    tasks_total: int = 0


class WorkerJobStore:
    """SQL on ``jobs`` for workers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, job_id: UUID, token: UUID, worker: str, lease: float) -> Claim | None:
        """Take a queued job, one whose lease expired, or a fanned-out job whose tasks are all
        done (its combine step); None when it is not ours to run."""
        row = await self.pool.fetchrow(_CLAIM, job_id, token, lease, worker)
        if row is None:
            return None
        return Claim(
            job_id=row["id"],
            owner=row["owner"],
            token=token,
            attempts=row["attempts"],
            execution_duration=row["execution_duration"],
            request=row["request"],
            priority=row["priority"],
            stage=row["stage"],
            plan=row["plan"],
            tasks_total=row["tasks_total"],
            uploads={u[0]: (u[1], u[2]) for u in _uploads_decoder.decode(row["uploads"])},
        )

    async def state(self, job_id: UUID) -> JobState | None:
        row = await self.pool.fetchrow(
            "SELECT phase, extract(epoch FROM lease_expires_at - now())::float8 AS remaining,"
            " stage, tasks_done, tasks_total FROM jobs WHERE id = $1",
            job_id,
        )
        if row is None:
            return None
        return JobState(
            phase=row["phase"],
            lease_remaining=row["remaining"],
            stage=row["stage"],
            tasks_done=row["tasks_done"],
            tasks_total=row["tasks_total"],
        )

    async def renew(self, claim: Claim, lease: float) -> bool:
        """Extend the lease; False when the job is no longer ours (aborted or taken over)."""
        ok = await self.pool.fetchval(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)"
            " WHERE id = $1 AND lease_token = $2 AND phase = 'EXECUTING' RETURNING true",
            claim.job_id,
            claim.token,
            lease,
        )
        return bool(ok)

    async def progress(self, claim: Claim, fraction: float, message: str | None) -> None:
        await self.pool.execute(
            "UPDATE jobs SET progress = $3, progress_message = $4"
            " WHERE id = $1 AND lease_token = $2 AND phase = 'EXECUTING'",
            claim.job_id,
            claim.token,
            fraction,
            message,
        )

    async def complete(self, claim: Claim, results: Sequence[StoredResult]) -> bool:
        """Record success exactly once; False if the claim was lost meanwhile."""
        ok = await self.pool.fetchval(
            "UPDATE jobs SET phase = 'COMPLETED', results = $3::jsonb, ended_at = now(),"
            " progress = 1, progress_message = NULL, error = NULL,"
            " lease_token = NULL, lease_expires_at = NULL"
            " WHERE id = $1 AND lease_token = $2 AND phase = 'EXECUTING' RETURNING true",
            claim.job_id,
            claim.token,
            msgspec.json.encode(list(results)).decode(),
        )
        return bool(ok)

    async def fail(self, claim: Claim, error: ErrorDocument) -> bool:
        """Record the job's failure; False if the claim was lost meanwhile."""
        ok = await self.pool.fetchval(
            "UPDATE jobs SET phase = 'ERROR', error = $3::jsonb, ended_at = now(),"
            " lease_token = NULL, lease_expires_at = NULL"
            " WHERE id = $1 AND lease_token = $2 AND phase = 'EXECUTING' RETURNING true",
            claim.job_id,
            claim.token,
            msgspec.json.encode(error).decode(),
        )
        return bool(ok)

    async def release(self, claim: Claim, error: ErrorDocument | None = None) -> bool:
        """Give the job back (``QUEUED``) for a retry or another worker; keeps the attempt."""
        ok = await self.pool.fetchval(
            "UPDATE jobs SET phase = 'QUEUED', error = $3::jsonb, progress = 0,"
            " progress_message = NULL, lease_token = NULL, lease_expires_at = NULL"
            " WHERE id = $1 AND lease_token = $2 AND phase = 'EXECUTING' RETURNING true",
            claim.job_id,
            claim.token,
            msgspec.json.encode(error).decode() if error else None,
        )
        return bool(ok)

    async def finished_results(
        self, owner: str, ids: Sequence[UUID]
    ) -> dict[UUID, list[StoredResult]]:
        """Results of the owner's COMPLETED jobs among ``ids`` (others are absent)."""
        rows = await self.pool.fetch(
            "SELECT id, results FROM jobs WHERE id = ANY($1::uuid[]) AND owner = $2"
            " AND phase = 'COMPLETED'",
            list(ids),
            owner,
        )
        return {r["id"]: _results_decoder.decode(r["results"] or "[]") for r in rows}

    async def inputs(self, ids: Sequence[UUID]) -> dict[UUID, Any]:
        rows = await self.pool.fetch(
            "SELECT id, object_key, media_type FROM uploads WHERE id = ANY($1::uuid[])", list(ids)
        )
        return {r["id"]: r for r in rows}
