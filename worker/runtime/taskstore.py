"""Task rows of fanned-out jobs, as workers plan, claim, finish and combine them.

A task is claimed like a job (a guarded update taking a lease token), and only while its job
is ``EXECUTING`` in stage ``tasks``: a task of an aborted or failed job is never started.
Completing a task and counting it on the job happen in one transaction, so exactly one
completion sees the last task done, however often messages are delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from contracts.jobs import ErrorDocument
from worker.runtime.jobstore import Claim


class TaskClaim(msgspec.Struct, kw_only=True):
    job_id: UUID
    idx: int
    token: UUID
    attempts: int
    label: str
    inputs: list[int]
    payload: bytes
    owner: str
    request: str
    execution_duration: int
    plan: bytes
    priority: int


class TaskState(msgspec.Struct, kw_only=True):
    phase: str
    lease_remaining: float | None
    job_phase: str
    stage: str | None
    tasks_done: int
    tasks_total: int


class PlannedTask(msgspec.Struct, kw_only=True):
    inputs: list[int]
    payload: bytes
    label: str


class TaskOutput(msgspec.Struct, kw_only=True):
    """A file a task stored: its name, media type and object-store key."""

    name: str
    media_type: str
    key: str


_outputs_decoder = msgspec.json.Decoder(list[TaskOutput])


class TaskStore:
    """SQL on ``job_tasks`` (and the fan-out columns of ``jobs``) for workers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def start_tasks(self, claim: Claim, plan: bytes, tasks: Sequence[PlannedTask]) -> bool:
        """Record the plan and its tasks and give up the job's lease (stage ``tasks``);
        False if the claim was lost meanwhile (nothing is written)."""
        async with self.pool.acquire() as conn, conn.transaction():
            ok = await conn.fetchval(
                "UPDATE jobs SET stage = 'tasks', plan = $3, tasks_total = $4, tasks_done = 0,"
                " lease_token = NULL, lease_expires_at = NULL, progress = 0,"
                " progress_message = format('0 of %s tasks done', $4::int)"
                " WHERE id = $1 AND lease_token = $2 AND phase = 'EXECUTING' RETURNING true",
                claim.job_id,
                claim.token,
                plan,
                len(tasks),
            )
            if not ok:
                return False
            await conn.executemany(
                "INSERT INTO job_tasks (job_id, idx, label, inputs, payload)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(claim.job_id, i, t.label, t.inputs, t.payload) for i, t in enumerate(tasks)],
            )
        return True

    async def queued(self, job_id: UUID) -> list[int]:
        """Tasks of the job still waiting for a worker (to publish again after a crash)."""
        rows = await self.pool.fetch(
            "SELECT idx FROM job_tasks WHERE job_id = $1 AND phase = 'QUEUED' ORDER BY idx",
            job_id,
        )
        return [r["idx"] for r in rows]

    async def claim(
        self, job_id: UUID, idx: int, token: UUID, worker: str, lease: float
    ) -> TaskClaim | None:
        """Take a queued task (or one whose lease expired) of a job whose tasks run."""
        row = await self.pool.fetchrow(
            "UPDATE job_tasks t SET phase = 'EXECUTING', attempts = t.attempts + 1,"
            " lease_token = $3, lease_expires_at = now() + make_interval(secs => $4),"
            " worker = $5, started_at = coalesce(t.started_at, now())"
            " FROM jobs j"
            " WHERE t.job_id = $1 AND t.idx = $2 AND j.id = t.job_id"
            " AND j.phase = 'EXECUTING' AND j.stage = 'tasks'"
            " AND (t.phase = 'QUEUED' OR (t.phase = 'EXECUTING' AND t.lease_expires_at < now()))"
            " RETURNING t.attempts, t.label, t.inputs, t.payload, j.owner, j.request,"
            " j.execution_duration, j.plan, j.priority",
            job_id,
            idx,
            token,
            lease,
            worker,
        )
        if row is None:
            return None
        return TaskClaim(
            job_id=job_id,
            idx=idx,
            token=token,
            attempts=row["attempts"],
            label=row["label"],
            inputs=list(row["inputs"]),
            payload=bytes(row["payload"]),
            owner=row["owner"],
            request=row["request"],
            execution_duration=row["execution_duration"],
            plan=bytes(row["plan"] or b""),
            priority=row["priority"],
        )

    async def state(self, job_id: UUID, idx: int) -> TaskState | None:
        row = await self.pool.fetchrow(
            "SELECT t.phase, extract(epoch FROM t.lease_expires_at - now())::float8 AS remaining,"
            " j.phase AS job_phase, j.stage, j.tasks_done, j.tasks_total"
            " FROM job_tasks t JOIN jobs j ON j.id = t.job_id"
            " WHERE t.job_id = $1 AND t.idx = $2",
            job_id,
            idx,
        )
        if row is None:
            return None
        return TaskState(
            phase=row["phase"],
            lease_remaining=row["remaining"],
            job_phase=row["job_phase"],
            stage=row["stage"],
            tasks_done=row["tasks_done"],
            tasks_total=row["tasks_total"],
        )

    async def renew(self, claim: TaskClaim, lease: float) -> bool:
        """Extend the task's lease; False when the task or its job is no longer running."""
        ok = await self.pool.fetchval(
            "UPDATE job_tasks t SET lease_expires_at = now() + make_interval(secs => $4)"
            " FROM jobs j WHERE t.job_id = $1 AND t.idx = $2 AND t.lease_token = $3"
            " AND t.phase = 'EXECUTING' AND j.id = t.job_id AND j.phase = 'EXECUTING'"
            " RETURNING true",
            claim.job_id,
            claim.idx,
            claim.token,
            lease,
        )
        return bool(ok)

    async def complete(
        self, claim: TaskClaim, outputs: Sequence[TaskOutput]
    ) -> tuple[int, int] | None:
        """Record the task done and count it on the job; return (done, total) of the job, or
        None if the claim was lost or the job is no longer running its tasks."""
        async with self.pool.acquire() as conn, conn.transaction():
            ok = await conn.fetchval(
                "UPDATE job_tasks SET phase = 'COMPLETED', outputs = $4::jsonb, ended_at = now(),"
                " error = NULL, lease_token = NULL, lease_expires_at = NULL"
                " WHERE job_id = $1 AND idx = $2 AND lease_token = $3 AND phase = 'EXECUTING'"
                " RETURNING true",
                claim.job_id,
                claim.idx,
                claim.token,
                msgspec.json.encode(list(outputs)).decode(),
            )
            if not ok:
                return None
            row = await conn.fetchrow(
                "UPDATE jobs SET tasks_done = tasks_done + 1,"
                " progress = (tasks_done + 1)::real / (tasks_total + 1),"
                " progress_message = format('%s of %s tasks done', tasks_done + 1, tasks_total)"
                " WHERE id = $1 AND phase = 'EXECUTING' AND stage = 'tasks'"
                " RETURNING tasks_done, tasks_total",
                claim.job_id,
            )
        return None if row is None else (row["tasks_done"], row["tasks_total"])

    async def fail(self, claim: TaskClaim, error: ErrorDocument, job_error: ErrorDocument) -> bool:
        """Record the task's failure and fail its job with ``job_error``; True if this call
        ended the job (False: the claim was lost, or the job had already ended)."""
        async with self.pool.acquire() as conn, conn.transaction():
            ok = await conn.fetchval(
                "UPDATE job_tasks SET phase = 'ERROR', error = $4::jsonb, ended_at = now(),"
                " lease_token = NULL, lease_expires_at = NULL"
                " WHERE job_id = $1 AND idx = $2 AND lease_token = $3 AND phase = 'EXECUTING'"
                " RETURNING true",
                claim.job_id,
                claim.idx,
                claim.token,
                msgspec.json.encode(error).decode(),
            )
            if not ok:
                return False
            ended = await conn.fetchval(
                "UPDATE jobs SET phase = 'ERROR', error = $2::jsonb, ended_at = now(),"
                " lease_token = NULL, lease_expires_at = NULL"
                " WHERE id = $1 AND phase = 'EXECUTING' RETURNING true",
                claim.job_id,
                msgspec.json.encode(job_error).decode(),
            )
        return bool(ended)

    async def release(self, claim: TaskClaim, error: ErrorDocument | None = None) -> bool:
        """Give the task back (``QUEUED``) for a retry or another worker."""
        ok = await self.pool.fetchval(
            "UPDATE job_tasks SET phase = 'QUEUED', error = $4::jsonb,"
            " lease_token = NULL, lease_expires_at = NULL"
            " WHERE job_id = $1 AND idx = $2 AND lease_token = $3 AND phase = 'EXECUTING'"
            " RETURNING true",
            claim.job_id,
            claim.idx,
            claim.token,
            msgspec.json.encode(error).decode() if error else None,
        )
        return bool(ok)

    async def outputs(self, job_id: UUID) -> list[list[TaskOutput]]:
        """Every task's stored files, in task order (for the combine step).

        Raises:
            LookupError: a task is not completed.
        """
        rows = await self.pool.fetch(
            "SELECT idx, phase, outputs FROM job_tasks WHERE job_id = $1 ORDER BY idx", job_id
        )
        parts = []
        for r in rows:
            if r["phase"] != "COMPLETED":
                raise LookupError(f"task {r['idx']} of job {job_id} is {r['phase']}")
            parts.append(_outputs_decoder.decode(r["outputs"]))
        return parts

    async def counts(self, job_id: UUID) -> dict[str, Any]:
        """Tasks of a job by phase (for tests and operators)."""
        rows = await self.pool.fetch(
            "SELECT phase, count(*) AS n FROM job_tasks WHERE job_id = $1 GROUP BY phase", job_id
        )
        return {r["phase"]: r["n"] for r in rows}
