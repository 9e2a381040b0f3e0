"""Fan-out and fan-in: a job whose operation fans out runs as a plan, tasks and a combine step.

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
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from contracts import names
from contracts.api import JobRequest
from contracts.jobs import ErrorDocument, JobEvent, Phase, Pool
from contracts.messages import ControlMessage, JobMessage
from pixfleet.broker import job_message, retry_delay
from worker.runtime.child import ChildTask
from worker.runtime.jobstore import Claim
from worker.runtime.progress import publish_event
from worker.runtime.slots import ChildCrashedError, OpFailedError, SlotStoppedError
from worker.runtime.taskstore import PlannedTask, TaskClaim, TaskOutput, TaskStore

if TYPE_CHECKING:
    from worker.runtime.runner import JobRunner, Running

log = logging.getLogger(__name__)

_request_decoder = msgspec.json.Decoder(JobRequest[msgspec.Raw])


class _Lost(Exception):
    """The task's claim is gone (its job ended, or another worker took it over)."""


class FanOutRunner:
    """The fan-out half of a worker's runner (see the module docstring)."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.tasks = TaskStore(runner.jobs.pool)
        self.running: dict[tuple[uuid.UUID, int], asyncio.Future[str]] = {}

    # -- plan ----------------------------------------------------------------------------

    async def plan(
        self,
        message: AbstractIncomingMessage,
        claim: Claim,
        pool: Pool,
        task: ChildTask,
        running: Running,
    ) -> None:
        """Run the plan, record the tasks, publish them; ack the job's message."""
        r = self.runner
        planning = ChildTask(
            task.job_id, task.pipeline, task.inputs, task.workdir, task.resources, kind="plan"
        )
        async with r.slots.borrow() as slot:
            shared, specs = await slot.run(
                planning,
                timeout=claim.execution_duration,
                stop=running.stop,
                on_progress=lambda f, m: None,
            )
        planned = [PlannedTask(inputs=list(i), payload=p, label=lbl) for i, p, lbl in specs]
        if not planned:
            raise OpFailedError("usage_error", "the operation planned no work", None)
        if not await self.tasks.start_tasks(claim, shared, planned):
            await message.ack()  # aborted or taken over meanwhile
            return
        log.info("job %s fans out into %d tasks", claim.job_id, len(planned))
        await self._publish_tasks(claim.job_id, pool, claim.priority, range(len(planned)))
        await self._tasks_done(claim.job_id, 0, len(planned))
        await message.ack()

    async def republish_queued(self, job_id: uuid.UUID, pool: Pool, priority: int) -> None:
        """Publish the tasks still queued again (their first publication may be lost)."""
        queued = await self.tasks.queued(job_id)
        if queued:
            log.info("job %s: publishing %d queued tasks again", job_id, len(queued))
            await self._publish_tasks(job_id, pool, priority, queued)

    async def _publish_tasks(
        self, job_id: uuid.UUID, pool: Pool, priority: int, indexes: Any
    ) -> None:
        r = self.runner
        channel = await r.publisher.get()
        exchange = await channel.get_exchange(names.jobs_exchange(r.settings.rabbit.namespace))
        for i in indexes:
            msg = JobMessage(job_id=job_id, pool=pool, priority=priority, task=i)
            await exchange.publish(
                job_message(msg), pool.value, timeout=r.settings.rabbit.publish_timeout
            )

    # -- tasks ---------------------------------------------------------------------------

    async def handle_task(self, message: AbstractIncomingMessage, msg: JobMessage) -> None:
        """Run one task delivery; every path acks, nacks or republishes."""
        r, s = self.runner, self.runner.settings
        assert msg.task is not None
        token = uuid.uuid4()
        claim = await self.tasks.claim(msg.job_id, msg.task, token, r.worker_name, s.lease_seconds)
        if claim is None:
            await self._task_not_claimed(message, msg)
            return
        key = (claim.job_id, claim.idx)
        stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.running[key] = stop
        heartbeat = asyncio.create_task(self._heartbeat(claim, stop))
        workdir = r.scratch / f"{claim.job_id}.{claim.idx}"
        try:
            await self._run_task(message, msg, claim, stop, workdir)
        finally:
            heartbeat.cancel()
            self.running.pop(key, None)
            shutil.rmtree(workdir, ignore_errors=True)

    async def _run_task(
        self,
        message: AbstractIncomingMessage,
        msg: JobMessage,
        claim: TaskClaim,
        stop: asyncio.Future[str],
        workdir: Path,
    ) -> None:
        r = self.runner
        from worker.runtime.runner import InputError

        try:
            request = _request_decoder.decode(claim.request)
            await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
            inputs = await r.input_files(claim.owner, request, workdir, only=claim.inputs)
            task = ChildTask(
                str(claim.job_id),
                msgspec.json.encode(request.pipeline),
                inputs,
                str(workdir / "out"),
                kind="task",
                shared=claim.plan,
                payload=claim.payload,
            )
            async with r.slots.borrow() as slot:
                outputs = await slot.run(
                    task, timeout=claim.execution_duration, stop=stop, on_progress=lambda f, m: None
                )
            stored = []
            for path, name, media_type in outputs:
                final = Path(path).name if not name else f"{name}{Path(path).suffix}"
                key = names.task_object(claim.job_id, claim.idx, final)
                await r.store.put_file(key, Path(path), media_type)
                stored.append(TaskOutput(name=final, media_type=media_type, key=key))
        except OpFailedError as e:
            await self._task_failed(message, msg, claim, e.code, e.message, e.detail)
            return
        except ChildCrashedError as e:
            await self._task_failed(message, msg, claim, "worker_crashed", str(e), None)
            return
        except InputError as e:
            await self._task_failed(message, msg, claim, "usage_error", str(e), None)
            return
        except SlotStoppedError as e:
            await self._task_stopped(message, msg, claim, e.reason)
            return
        counted = await self.tasks.complete(claim, stored)
        if counted is not None:
            done, total = counted
            await self._tasks_done(claim.job_id, done, total)
            if done == total:
                await self._publish_combine(msg)
        await message.ack()

    async def _tasks_done(self, job_id: uuid.UUID, done: int, total: int) -> None:
        """Tell the job's watchers how many tasks are done (the combine is the last share)."""
        event = JobEvent(
            job_id=job_id,
            phase=Phase.EXECUTING,
            progress=done / (total + 1),
            message=f"{done} of {total} tasks done",
        )
        await publish_event(self.runner.redis, self.runner.settings.redis.prefix, event)

    async def _publish_combine(self, msg: JobMessage) -> None:
        r = self.runner
        channel = await r.publisher.get()
        exchange = await channel.get_exchange(names.jobs_exchange(r.settings.rabbit.namespace))
        parent = JobMessage(job_id=msg.job_id, pool=msg.pool, priority=msg.priority)
        await exchange.publish(
            job_message(parent), msg.pool.value, timeout=r.settings.rabbit.publish_timeout
        )

    async def _task_not_claimed(self, message: AbstractIncomingMessage, msg: JobMessage) -> None:
        assert msg.task is not None
        state = await self.tasks.state(msg.job_id, msg.task)
        if state is None or state.phase == "ERROR":
            await message.ack()
            return
        if state.job_phase != "EXECUTING":  # the job ended (aborted, failed): tidy up
            await self.discard_work(msg.job_id)
            await message.ack()
            return
        if state.phase == "COMPLETED":
            # A redelivery after the last task's worker died before publishing the combine.
            if state.stage == "tasks" and state.tasks_done == state.tasks_total:
                await self._publish_combine(msg)
            await message.ack()
            return
        # EXECUTING under a live lease: look again once it could have expired.
        remaining = max(state.lease_remaining or 0.0, 0.0)
        delays = self.runner.settings.rabbit.retry_delays
        level = next((i for i, d in enumerate(delays, 1) if d >= remaining), len(delays))
        await self.runner.publish_retry(msg, level)
        await message.ack()

    async def _task_failed(
        self,
        message: AbstractIncomingMessage,
        msg: JobMessage,
        claim: TaskClaim,
        code: str,
        text: str,
        detail: str | None,
    ) -> None:
        r, s = self.runner, self.runner.settings
        transient = code == "transient_error"
        exhausted = transient and claim.attempts >= s.max_attempts
        error = ErrorDocument(code=code, message=text, detail=detail, retryable=transient)
        if transient and not exhausted:
            level, delay = retry_delay(s.rabbit, claim.attempts)
            log.info(
                "job %s task %d failed transiently; retry in %.0f s", claim.job_id, claim.idx, delay
            )
            await r.publish_retry(msg, level, attempt=claim.attempts)
            await self.tasks.release(claim, error)
            await message.ack()
            return
        if exhausted:
            text = f"{text} (gave up after {claim.attempts} attempts)"
        job_error = ErrorDocument(
            code=code,
            message=f"task {claim.idx + 1} ({claim.label}): {text}",
            detail=detail,
        )
        log.info("job %s task %d failed: %s: %s", claim.job_id, claim.idx, code, text)
        if await self.tasks.fail(claim, error, job_error):
            prefix = s.redis.prefix
            await publish_event(r.redis, prefix, JobEvent(job_id=claim.job_id, phase=Phase.ERROR))
            # Stop the job's other tasks wherever they run.
            await r.redis.publish(
                names.control_channel(prefix),
                msgspec.json.encode(ControlMessage(action="abort", job_id=claim.job_id)),
            )
            await self.discard_work(claim.job_id)
        await message.ack()

    async def _task_stopped(
        self, message: AbstractIncomingMessage, msg: JobMessage, claim: TaskClaim, reason: str
    ) -> None:
        if reason == "execution_duration_exceeded":
            limit = claim.execution_duration
            await self._task_failed(
                message,
                msg,
                claim,
                reason,
                f"the task ran longer than its limit of {limit} s",
                None,
            )
        elif reason == "shutdown":
            await self.tasks.release(claim)
            await message.nack(requeue=True)
        else:  # the job was aborted or failed, or the task was taken over
            log.info("job %s task %d stopped: %s", claim.job_id, claim.idx, reason)
            if reason == "aborted":
                await self.discard_work(claim.job_id)
            await message.ack()

    async def _heartbeat(self, claim: TaskClaim, stop: asyncio.Future[str]) -> None:
        lease = self.runner.settings.lease_seconds
        while not stop.done():
            await asyncio.sleep(lease / 3)
            try:
                if not await self.tasks.renew(claim, lease) and not stop.done():
                    stop.set_result("lost")
            except Exception as e:  # keep running: the lease outlives a short outage
                log.warning(
                    "lease renewal of job %s task %d failed: %r", claim.job_id, claim.idx, e
                )

    # -- combine -------------------------------------------------------------------------

    async def combine_task(self, claim: Claim, task: ChildTask, workdir: Path) -> ChildTask:
        """The combine step's child task: the plan and every task's files, fetched."""
        r = self.runner
        parts = []
        for idx, outputs in enumerate(await self.tasks.outputs(claim.job_id)):
            files = []
            for out in outputs:
                path = r.store.local_path(out.key)
                if path is None:
                    path = workdir / "parts" / str(idx) / out.name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    await r.store.download(out.key, path)
                files.append((str(path), out.media_type, out.name))
            parts.append(files)
        return ChildTask(
            task.job_id,
            task.pipeline,
            [],
            task.workdir,
            task.resources,
            kind="combine",
            shared=claim.plan or b"",
            parts=parts,
        )

    async def discard_work(self, job_id: uuid.UUID) -> None:
        """Delete a fanned-out job's intermediate files (idempotent)."""
        try:
            await self.runner.store.delete_prefix(names.work_prefix(job_id))
        except Exception as e:  # the sweeper deletes it with the job at the latest
            log.warning("could not delete the work files of job %s: %r", job_id, e)

    def abort(self, job_id: uuid.UUID) -> None:
        for (job, _), stop in list(self.running.items()):
            if job == job_id and not stop.done():
                stop.set_result("aborted")

    def stop_all(self, reason: str) -> None:
        for stop in list(self.running.values()):
            if not stop.done():
                stop.set_result(reason)
