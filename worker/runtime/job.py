"""Attempts of a job: its pipeline, or for a fanned-out operation its plan or its combine.

``claim_job`` takes the row (see ``WorkerJobStore.claim``); ``job_not_claimed`` decides what
a delivery of a job that is not ours to run means. Must not import pixel libraries.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from contracts import names
from contracts.jobs import FINAL_PHASES, ErrorDocument, JobEvent, Phase, StoredResult
from contracts.messages import JobMessage
from worker.ops.api import result_name, unique_name
from worker.runtime import fanout
from worker.runtime.attempt import Attempt, Record
from worker.runtime.child import ChildTask, Output
from worker.runtime.context import Running, Runtime
from worker.runtime.inputs import (
    input_files,
    request_decoder,
    resources,
    steps_decoder,
    top_level_ops,
)
from worker.runtime.jobstore import Claim
from worker.runtime.progress import ProgressReporter, publish_event
from worker.runtime.slots import OpFailedError

log = logging.getLogger(__name__)


async def claim_job(rt: Runtime, msg: JobMessage) -> JobAttempt | None:
    s = rt.settings
    claim = await rt.jobs.claim(msg.job_id, uuid.uuid4(), rt.worker_name, s.lease_seconds)
    return None if claim is None else JobAttempt(rt, msg, claim)


async def job_not_claimed(rt: Runtime, message: AbstractIncomingMessage, msg: JobMessage) -> None:
    """A duplicate, an ended job, a fanned-out job whose tasks run, or a live lease."""
    state = await rt.jobs.state(msg.job_id)
    if state is None or Phase(state.phase) in FINAL_PHASES or state.phase == Phase.QUEUED:
        await message.ack()  # a duplicate, or the job ended/was aborted: drop it
        return
    if state.stage == "tasks" and state.lease_remaining is None:
        # Its tasks run: the planner may have died before publishing all of them.
        await fanout.republish_queued(rt, msg.job_id, msg.pool, msg.priority)
        await message.ack()
        return
    await rt.park(msg, state.lease_remaining)
    await message.ack()


class JobAttempt(Attempt):
    """An attempt at a job's row (a pipeline, a plan or a combine step)."""

    def __init__(self, rt: Runtime, msg: JobMessage, claim: Claim) -> None:
        super().__init__(rt, msg, claim, names.scratch_dir(claim.job_id, claim.token))
        self.claim = claim

    async def renew(self, seconds: float) -> bool:
        return await self.rt.jobs.renew(self.claim, seconds)

    async def release(self, error: ErrorDocument | None = None) -> bool:
        return await self.rt.jobs.release(self.claim, error)

    async def fail(self, error: ErrorDocument) -> bool:
        return await self.rt.jobs.fail(self.claim, error)

    async def failed(self) -> None:
        await self._event(Phase.ERROR)
        if self.claim.stage is not None:
            await self.rt.discard_work(self.job_id)

    async def work(self, running: Running) -> Record:
        reporter = self._reporter()  # announces EXECUTING once the job has run a while
        try:
            return await self._work(running, reporter)
        finally:
            await reporter.drain()

    async def _work(self, running: Running, reporter: ProgressReporter) -> Record:
        rt, claim = self.rt, self.claim
        request = request_decoder.decode(claim.request)
        pipeline = msgspec.json.encode(request.pipeline)
        steps = steps_decoder.decode(pipeline)
        ops = top_level_ops(rt, steps)
        needs = await resources(rt, claim.owner, steps, self.scratch)
        if claim.stage == "combine":
            task = await fanout.combine_task(rt, claim, pipeline, self.scratch, needs)
        else:
            inputs = await input_files(
                rt, claim.owner, request, self.scratch, uploads=claim.uploads
            )
            task = ChildTask(str(claim.job_id), pipeline, inputs, str(self.scratch / "out"), needs)
            if len(ops) == 1 and ops[0].fanout is not None:
                return await fanout.plan(rt, claim, ops[0].pool, task, running)
        async with rt.slots.borrow() as slot:
            outputs = await slot.run(
                task, timeout=claim.execution_duration, stop=running.stop, on_progress=reporter
            )
        await reporter.drain()
        await self._after(ops, [(p, n, m) for p, n, m, _, _ in outputs])  # before the move
        results = await self._store(outputs)

        async def record() -> None:
            if not await rt.persist(
                f"completing {self.label}", lambda: rt.jobs.complete(claim, results)
            ):
                log.info(
                    "%s: lease lost before completing; outputs left to the sweeper", self.label
                )
                return
            await self._event(Phase.COMPLETED, progress=1.0)
            if claim.stage is not None:
                await rt.discard_work(self.job_id)

        return record

    def _reporter(self) -> ProgressReporter:
        s, claim = self.rt.settings, self.claim
        n = claim.tasks_total if claim.stage == "combine" else 0
        # A combine is the last 1 / (n + 1) of its job: the tasks made the rest.
        return ProgressReporter(
            claim,
            self.rt.redis,
            s.redis.prefix,
            self.rt.jobs,
            s.progress_interval,
            s.progress_db_interval,
            start=n / (n + 1),
            default_message="combining" if n else None,
        )

    async def _store(self, outputs: list[Output]) -> list[StoredResult]:
        """Move the outputs into the store under this attempt's own keys (named as the job
        shows them), with the size and digest the child measured."""
        results: list[StoredResult] = []
        seen: set[str] = set()
        for path, name, media_type, _size, sha256 in outputs:
            base = result_name(name, Path(path)) if name else Path(path).name
            final = unique_name(base, seen.__contains__)
            seen.add(final)
            key = names.result_object(self.job_id, final, self.token)
            stored = await self.rt.store.put_file(
                key, Path(path), media_type, sha256=sha256, move=True, synced=True
            )
            results.append(
                StoredResult(
                    name=final,
                    media_type=media_type,
                    size=stored.size,
                    sha256=stored.sha256,
                    key=key,
                )
            )
        return results

    async def _after(self, ops: list[Any], outputs: list[tuple[str, str, str]]) -> None:
        """Await the operations' ``after`` hooks (e.g. recording datasets).

        Raises:
            OpFailedError: a hook raised a ``UsageError``.
        """
        from worker.errors import UsageError
        from worker.runtime.pipeline import resolve

        for op in ops:
            if op.after:
                try:
                    await resolve(op.after)(
                        self.rt.jobs.pool, self.claim.owner, self.job_id, outputs
                    )
                except UsageError as e:
                    raise OpFailedError(e.code, e.message, e.detail) from e

    async def _event(self, phase: Phase, progress: float = 0.0) -> None:
        event = JobEvent(job_id=self.job_id, phase=phase, progress=progress)
        await publish_event(self.rt.redis, self.rt.settings.redis.prefix, event)
