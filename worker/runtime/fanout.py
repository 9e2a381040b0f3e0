r"""Fan-out and fan-in: a job whose operation fans out runs as a plan, tasks and a combine step.

1. **Plan** (the job's first delivery, under its lease): the operation's ``plan`` runs in a
   slot; its tasks are written to ``job_tasks`` and the job gives up its lease (stage
   ``tasks``) in one transaction; then one message per task is published to the operation's
   pool and the job's own message is acknowledged. The job holds no slot while its tasks run.
2. **Tasks** (messages with ``task`` set, on any worker of the pool): a task is claimed with
   its own lease, retried on transient errors through the retry queues, and its files are kept
   under ``work/<job>/<task>/`` in the store. Completing a task counts it on the job in the same
   transaction; the completion that makes the count whole publishes the job's message again.
3. **Combine** (that message): the job is claimed once more (stage ``combine``); the
   operation's ``combine`` runs over every task's files and the job completes as any other.

Crash windows are closed by redelivery: a job message that finds its job in stage ``tasks``
republishes the tasks still queued (the planner died before publishing them), and a task
message that finds its task done and every task done publishes the job's message (the last
task's worker died before publishing it). Duplicates are harmless: every step is a guarded
update. A failing task fails the job with the task's error and stops its siblings; aborting
the job stops its tasks (they are never claimed once the job is not ``EXECUTING``).

Tasks run as ``attempt.Attempt``\ s like jobs do: this module gives their claim and records.
Must not import pixel libraries.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from contracts import names
from contracts.jobs import ErrorDocument, JobEvent, Phase, Pool
from contracts.messages import ControlMessage, JobMessage
from worker.runtime.attempt import Attempt, Record
from worker.runtime.child import ChildTask
from worker.runtime.context import Running, Runtime
from worker.runtime.inputs import input_files, request_decoder
from worker.runtime.jobstore import Claim
from worker.runtime.outcomes import StopReason
from worker.runtime.progress import publish_event
from worker.runtime.slots import OpFailedError
from worker.runtime.taskstore import PlannedTask, TaskClaim, TaskOutput

log = logging.getLogger(__name__)


# -- plan (an attempt of the job) ----------------------------------------------------------


async def plan(rt: Runtime, claim: Claim, pool: Pool, task: ChildTask, running: Running) -> Record:
    """Run the operation's plan in a slot; the returned step records the tasks (giving up
    the job's lease in the same transaction) and publishes them.

    Raises:
        OpFailedError: the plan failed, or planned no work.
    """
    planning = ChildTask(
        task.job_id, task.pipeline, task.inputs, task.workdir, task.resources, kind="plan"
    )
    async with rt.slots.borrow() as slot:
        shared, specs = await slot.run(
            planning,
            timeout=claim.execution_duration,
            stop=running.stop,
            on_progress=lambda f, m: None,
        )
    planned = [PlannedTask(inputs=list(i), payload=p, label=lbl) for i, p, lbl in specs]
    if not planned:
        raise OpFailedError("usage_error", "the operation planned no work", None)

    async def record() -> None:
        started = await rt.persist(
            f"recording the tasks of job {claim.job_id}",
            lambda: rt.tasks.start_tasks(claim, shared, planned),
        )
        if not started:
            return  # aborted or taken over meanwhile
        log.info("job %s fans out into %d tasks", claim.job_id, len(planned))
        # A failure from here on is repaired by redelivery: the job message then finds its
        # tasks queued and publishes them again (``republish_queued``).
        await _publish_tasks(rt, claim.job_id, pool, claim.priority, range(len(planned)))
        await _tasks_done(rt, claim.job_id, 0, len(planned))

    return record


async def republish_queued(rt: Runtime, job_id: uuid.UUID, pool: Pool, priority: int) -> None:
    """Publish the tasks still queued again (their first publication may be lost)."""
    queued = await rt.tasks.queued(job_id)
    if queued:
        log.info("job %s: publishing %d queued tasks again", job_id, len(queued))
        await _publish_tasks(rt, job_id, pool, priority, queued)


async def _publish_tasks(
    rt: Runtime, job_id: uuid.UUID, pool: Pool, priority: int, indexes: Iterable[int]
) -> None:
    for i in indexes:
        await rt.publish_to_pool(JobMessage(job_id=job_id, pool=pool, priority=priority, task=i))


async def _tasks_done(rt: Runtime, job_id: uuid.UUID, done: int, total: int) -> None:
    """Tell the job's watchers how many tasks are done (the combine is the last share)."""
    event = JobEvent(
        job_id=job_id,
        phase=Phase.EXECUTING,
        progress=done / (total + 1),
        message=f"{done} of {total} tasks done",
    )
    await publish_event(rt.redis, rt.settings.redis.prefix, event)


# -- combine (an attempt of the job) -------------------------------------------------------


async def combine_task(
    rt: Runtime, claim: Claim, pipeline: bytes, workdir: Path, needs: dict[str, Any]
) -> ChildTask:
    """The combine step's child task: the plan and every task's files, fetched."""
    parts = []
    for idx, outputs in enumerate(await rt.tasks.outputs(claim.job_id)):
        files = []
        for out in outputs:
            path = rt.store.local_path(out.key)
            if path is None:
                path = workdir / "parts" / str(idx) / out.name
                path.parent.mkdir(parents=True, exist_ok=True)
                await rt.store.download(out.key, path)
            files.append((str(path), out.media_type, out.name))
        parts.append(files)
    return ChildTask(
        str(claim.job_id),
        pipeline,
        [],
        str(workdir / "out"),
        needs,
        kind="combine",
        shared=claim.plan or b"",
        parts=parts,
    )


# -- tasks ---------------------------------------------------------------------------------


async def claim_task(rt: Runtime, msg: JobMessage) -> TaskAttempt | None:
    assert msg.task is not None
    s = rt.settings
    claim = await rt.tasks.claim(
        msg.job_id, msg.task, uuid.uuid4(), rt.worker_name, s.lease_seconds
    )
    return None if claim is None else TaskAttempt(rt, msg, claim)


async def task_not_claimed(rt: Runtime, message: AbstractIncomingMessage, msg: JobMessage) -> None:
    """A duplicate, a task of an ended job, a lost combine publication, or a live lease."""
    assert msg.task is not None
    state = await rt.tasks.state(msg.job_id, msg.task)
    if state is None or state.phase == Phase.ERROR:
        await message.ack()
        return
    if state.job_phase != Phase.EXECUTING:  # the job ended (aborted, failed): tidy up
        await rt.discard_work(msg.job_id)
        await message.ack()
        return
    if state.phase == Phase.COMPLETED:
        # A redelivery after the last task's worker died before publishing the combine.
        if state.stage == "tasks" and state.tasks_done == state.tasks_total:
            await _publish_combine(rt, msg)
        await message.ack()
        return
    await rt.park(msg, state.lease_remaining)
    await message.ack()


async def _publish_combine(rt: Runtime, msg: JobMessage) -> None:
    await rt.publish_to_pool(JobMessage(job_id=msg.job_id, pool=msg.pool, priority=msg.priority))


class TaskAttempt(Attempt):
    """An attempt at one task of a fanned-out job (its failure fails the job)."""

    noun = "task"
    dead_letters = False  # the job fails with the task's error; its message is not replayable

    def __init__(self, rt: Runtime, msg: JobMessage, claim: TaskClaim) -> None:
        super().__init__(
            rt, msg, claim, names.scratch_dir(claim.job_id, claim.token, task=claim.idx)
        )
        self.claim = claim

    @property
    def label(self) -> str:
        return f"job {self.job_id} task {self.claim.idx}"

    async def renew(self, seconds: float) -> bool:
        return await self.rt.tasks.renew(self.claim, seconds)

    async def release(self, error: ErrorDocument | None = None) -> bool:
        return await self.rt.tasks.release(self.claim, error)

    async def fail(self, error: ErrorDocument) -> bool:
        job_error = ErrorDocument(
            code=error.code,
            message=f"task {self.claim.idx + 1} ({self.claim.label}): {error.message}",
            detail=error.detail,
        )
        return await self.rt.tasks.fail(self.claim, error, job_error)

    async def failed(self) -> None:
        rt, prefix = self.rt, self.rt.settings.redis.prefix
        await publish_event(rt.redis, prefix, JobEvent(job_id=self.job_id, phase=Phase.ERROR))
        # Stop the job's other tasks wherever they run.
        await rt.redis.publish(
            names.control_channel(prefix),
            msgspec.json.encode(ControlMessage(action="abort", job_id=self.job_id)),
        )
        await rt.discard_work(self.job_id)

    async def stopped(self, reason: StopReason) -> None:
        if reason is StopReason.ABORTED:
            await self.rt.discard_work(self.job_id)

    async def work(self, running: Running) -> Record:
        rt, claim = self.rt, self.claim
        request = request_decoder.decode(claim.request)
        inputs = await input_files(rt, claim.owner, request, self.scratch, only=claim.inputs)
        task = ChildTask(
            str(claim.job_id),
            msgspec.json.encode(request.pipeline),
            inputs,
            str(self.scratch / "out"),
            kind="task",
            shared=claim.plan,
            payload=claim.payload,
        )
        async with rt.slots.borrow() as slot:
            outputs = await slot.run(
                task,
                timeout=claim.execution_duration,
                stop=running.stop,
                on_progress=lambda f, m: None,
            )
        stored = []
        for path, name, media_type, _size, sha256 in outputs:
            final = Path(path).name if not name else f"{name}{Path(path).suffix}"
            key = names.task_object(claim.job_id, claim.idx, claim.token, final)
            await rt.store.put_file(
                key, Path(path), media_type, sha256=sha256, move=True, synced=True
            )
            stored.append(TaskOutput(name=final, media_type=media_type, key=key))

        async def record() -> None:
            counted = await rt.persist(
                f"completing {self.label}", lambda: rt.tasks.complete(claim, stored)
            )
            if counted is None:
                return  # lost: another attempt's files are the task's
            done, total = counted
            await _tasks_done(rt, claim.job_id, done, total)
            if done == total:
                await _publish_combine(rt, self.msg)

        return record
