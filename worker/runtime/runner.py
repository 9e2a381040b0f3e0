"""One delivery, start to finish: claim, run in a slot, record, then ack (or retry/dead-letter).

The runtime alone decides what a failure means:

- usage error, crash of the child, time limit: the job ends in ``ERROR`` at once;
- transient error: the job goes back to ``QUEUED`` and its message waits in a TTL retry
  queue (exponential backoff) until ``max_attempts``; then it is dead-lettered;
- fatal error: ``ERROR`` and a dead letter (an operator should look);
- abort or lost lease: nothing is recorded (someone else owns the row now);
- shutdown: the job is released and its message requeued for another worker.

The message is acknowledged only after the outcome is recorded in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage

from contracts import names
from contracts.api import JobRequest
from contracts.jobs import FINAL_PHASES, ErrorDocument, JobEvent, Phase, ResultItem
from contracts.messages import JobMessage
from contracts.ops import OpCatalog, ResultRef
from pixfleet.broker import LiveChannel, job_message, retry_delay
from pixfleet.store import ObjectNotFoundError, ObjectStore
from worker.ops.api import InputFile, result_name, unique_name
from worker.runtime.child import ChildTask
from worker.runtime.fanout import FanOutRunner
from worker.runtime.jobstore import Claim, WorkerJobStore
from worker.runtime.progress import ProgressReporter, publish_event
from worker.runtime.slots import ChildCrashedError, OpFailedError, SlotPool, SlotStoppedError
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class _Step(msgspec.Struct):
    """What the runtime reads of a pipeline step: the resources it needs fetched."""

    op: str
    name: str | None = None
    results: list[ResultRef] = []
    branches: list[_Branch] | None = None


class _Branch(msgspec.Struct):
    pipeline: list[_Step]


_request_decoder = msgspec.json.Decoder(JobRequest[msgspec.Raw])
_steps_decoder = msgspec.json.Decoder(list[_Step])
_message_decoder = msgspec.json.Decoder(JobMessage)


@dataclass
class Running:
    """A job this worker runs: resolve ``stop`` to stop it (reason as value)."""

    claim: Claim
    stop: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def request_stop(self, reason: str) -> None:
        if not self.stop.done():
            self.stop.set_result(reason)


class JobRunner:
    """Handle deliveries of one pool."""

    def __init__(
        self,
        settings: WorkerSettings,
        jobs: WorkerJobStore,
        redis: aioredis.Redis,
        store: ObjectStore,
        slots: SlotPool,
        publisher: LiveChannel,
        worker_name: str,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.redis = redis
        self.store = store
        self.slots = slots
        self.publisher = publisher
        self.worker_name = worker_name
        self.running: dict[UUID, Running] = {}
        self.scratch = Path(settings.scratch_dir)
        self.shutting_down = False
        self.catalog = OpCatalog.with_plugins(settings.op_plugins)
        self.fanout = FanOutRunner(self)

    # -- entry point -------------------------------------------------------------------

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Process one delivery; never raises (every path acks, nacks or rejects)."""
        try:
            msg = _message_decoder.decode(message.body)
        except msgspec.DecodeError as e:
            log.error("undecodable message dead-lettered: %s", e)
            await message.reject(requeue=False)
            return
        try:
            if msg.task is not None:
                await self.fanout.handle_task(message, msg)
            else:
                await self._handle(message, msg)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an outage mid-way: let the broker redeliver later
            log.exception("job %s: infrastructure error, message requeued: %r", msg.job_id, e)
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    async def _handle(self, message: AbstractIncomingMessage, msg: JobMessage) -> None:
        s = self.settings
        claim = await self.jobs.claim(msg.job_id, uuid.uuid4(), self.worker_name, s.lease_seconds)
        if claim is None:
            await self._not_claimed(message, msg)
            return
        running = Running(claim)
        self.running[claim.job_id] = running
        heartbeat = asyncio.create_task(self._heartbeat(running))
        try:
            await publish_event(
                self.redis, s.redis.prefix, JobEvent(job_id=claim.job_id, phase=Phase.EXECUTING)
            )
            await self._execute(message, msg, running)
        finally:
            heartbeat.cancel()
            self.running.pop(claim.job_id, None)
            shutil.rmtree(self.scratch / str(claim.job_id), ignore_errors=True)

    async def _not_claimed(self, message: AbstractIncomingMessage, msg: JobMessage) -> None:
        state = await self.jobs.state(msg.job_id)
        if state is None or Phase(state.phase) in FINAL_PHASES or state.phase == "QUEUED":
            await message.ack()  # a duplicate, or the job ended/was aborted: drop it
            return
        if state.stage == "tasks" and state.lease_remaining is None:
            # Its tasks run: the planner may have died before publishing all of them.
            await self.fanout.republish_queued(msg.job_id, msg.pool, msg.priority)
            await message.ack()
            return
        # EXECUTING under a live lease: its holder may be alive (duplicate) or dead (this is
        # the redelivery after its crash). Look again once the lease could have expired.
        remaining = max(state.lease_remaining or 0.0, 0.0)
        delays = self.settings.rabbit.retry_delays
        level = next((i for i, d in enumerate(delays, 1) if d >= remaining), len(delays))
        await self.publish_retry(msg, level)
        await message.ack()

    # -- running -----------------------------------------------------------------------

    async def _execute(
        self, message: AbstractIncomingMessage, msg: JobMessage, running: Running
    ) -> None:
        s, claim = self.settings, running.claim
        try:
            ops = self._ops(claim)
            if claim.stage == "combine":
                task = await self._prepare(claim, kind="combine")
                task = await self.fanout.combine_task(claim, task, Path(task.workdir).parent)
            else:
                task = await self._prepare(claim)
                if len(ops) == 1 and ops[0].fanout is not None:
                    await self.fanout.plan(message, claim, ops[0].pool, task, running)
                    return
            reporter = ProgressReporter(
                claim,
                self.redis,
                s.redis.prefix,
                self.jobs,
                s.progress_interval,
                s.progress_db_interval,
            )
            on_progress: Any = reporter
            if claim.stage == "combine":  # the tasks made the first n / (n + 1) of the job
                n = claim.tasks_total

                def on_progress(fraction: float, text: str | None) -> None:
                    reporter((n + fraction) / (n + 1), text or "combining")

            async with self.slots.borrow() as slot:
                outputs = await slot.run(
                    task,
                    timeout=claim.execution_duration,
                    stop=running.stop,
                    on_progress=on_progress,
                )
            await reporter.drain()
            results = await self._store_results(claim, outputs)
            await self._after(claim, ops, outputs)
        except OpFailedError as e:
            await self._failed(message, msg, claim, e.code, e.message, e.detail)
            return
        except ChildCrashedError as e:
            await self._failed(message, msg, claim, "worker_crashed", str(e), None)
            return
        except SlotStoppedError as e:
            await self._stopped(message, claim, e.reason)
            return
        except InputError as e:
            await self._failed(message, msg, claim, "usage_error", str(e), None)
            return
        if await self.jobs.complete(claim, results):
            await publish_event(
                self.redis,
                s.redis.prefix,
                JobEvent(job_id=claim.job_id, phase=Phase.COMPLETED, progress=1.0),
            )
        if claim.stage is not None:
            await self.fanout.discard_work(claim.job_id)
        await message.ack()

    def _ops(self, claim: Claim) -> list[Any]:
        """The operation classes of the job's top-level steps."""
        request = _request_decoder.decode(claim.request)
        pipeline = _steps_decoder.decode(msgspec.json.encode(request.pipeline))
        tags = [step.op for step in pipeline]
        return [self.catalog.ops[t] for t in tags if t in self.catalog.ops]

    async def _after(
        self, claim: Claim, ops: list[Any], outputs: list[tuple[str, str, str]]
    ) -> None:
        """Await the operations' ``after`` hooks (e.g. recording datasets).

        Raises:
            OpFailedError: a hook raised a ``UsageError``.
        """
        from worker.errors import UsageError
        from worker.runtime.pipeline import resolve

        for op in ops:
            if op.after:
                try:
                    await resolve(op.after)(self.jobs.pool, claim.owner, claim.job_id, outputs)
                except UsageError as e:
                    raise OpFailedError(e.code, e.message, e.detail) from e

    async def _prepare(
        self, claim: Claim, *, kind: str = "pipeline", workdir: Path | None = None
    ) -> ChildTask:
        request = _request_decoder.decode(claim.request)
        workdir = workdir or self.scratch / str(claim.job_id)
        workdir.mkdir(parents=True, exist_ok=True)
        inputs = [] if kind == "combine" else await self.input_files(claim.owner, request, workdir)
        pipeline = msgspec.json.encode(request.pipeline)
        resources = await self._resources(claim, _steps_decoder.decode(pipeline), workdir)
        return ChildTask(
            str(claim.job_id), pipeline, inputs, str(workdir / "out"), resources, kind=kind
        )

    async def input_files(
        self,
        owner: str,
        request: JobRequest[msgspec.Raw],
        workdir: Path,
        only: list[int] | None = None,
    ) -> list[tuple[str, str, str, str]]:
        """The job's input files (uploads, then datasets) as (path, media type, name, source
        id), fetched from the store when it is not local; ``only`` picks some by index.

        Raises:
            InputError: an input no longer exists, or a dataset is not visible to ``owner``.
        """
        wanted: list[tuple[str, str, str]] = []  # (object key, media type, name)
        if request.inputs:
            rows = await self.jobs.inputs(request.inputs)
            for upload_id in request.inputs:
                row = rows.get(upload_id)
                if row is None:
                    raise InputError(f"input {upload_id} no longer exists")
                wanted.append((row["object_key"], row["media_type"], str(upload_id)))
        if request.datasets:
            from pixfleet import datasets

            found = await datasets.lookup(self.jobs.pool, owner, request.datasets)
            for dataset_id in request.datasets:
                row = found.get(dataset_id)
                if row is None:
                    raise InputError(f"dataset {dataset_id!r} does not exist")
                wanted.append((row["object_key"], row["media_type"], dataset_id))
        picked = [wanted[i] for i in only] if only is not None else wanted
        files = []
        for n, (key, media_type, name) in enumerate(picked):
            path = self.store.local_path(key)
            if path is None:
                path = workdir / "in" / str(n)
                path.parent.mkdir(exist_ok=True)
                try:
                    await self.store.download(key, path)
                except ObjectNotFoundError as e:
                    raise InputError(f"input {name} is missing from the store") from e
            files.append((str(path), media_type, file_stem(name), name))
        return files

    async def _resources(
        self, claim: Claim, pipeline: list[_Step], workdir: Path
    ) -> dict[str, Any]:
        """Fetch what the steps need beyond the inputs: registered models, earlier results."""
        steps = [s for step in pipeline for s in _flatten(step)]
        resources: dict[str, Any] = {}
        wanted = {s.name for s in steps if s.op == "model" and s.name}
        if wanted:
            from pixfleet import models

            specs = await models.get_models(self.jobs.pool, wanted)
            for name in wanted:
                spec = specs.get(name)
                if spec is None:
                    raise InputError(f"model {name!r} is not registered")
                path = await models.fetch_model(self.store, spec, self.scratch / "models")
                resources[f"model:{name}"] = models.LocalModel.of(spec, path)
        refs = [ref for s in steps if s.op == "archive" for ref in s.results]
        if refs:
            resources["results"] = await self._earlier_results(claim, refs, workdir / "results")
        return resources

    async def _earlier_results(
        self, claim: Claim, refs: list[ResultRef], into: Path
    ) -> list[InputFile]:
        found = await self.jobs.finished_results(claim.owner, [r.job for r in refs])
        files = []
        for ref in refs:
            results = found.get(ref.job)
            if results is None:
                raise InputError(f"job {ref.job} is not one of your completed jobs")
            by_name = {r["name"]: r for r in results}
            for name in ref.names or list(by_name):
                if name not in by_name:
                    raise InputError(f"job {ref.job} has no result named {name!r}")
                path = into / str(ref.job) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    await self.store.download(names.result_object(ref.job, name), path)
                except ObjectNotFoundError as e:
                    raise InputError(f"result {name!r} of job {ref.job} has expired") from e
                media_type = by_name[name]["media_type"]
                files.append(InputFile(path=path, media_type=media_type, name=f"{ref.job}/{name}"))
        return files

    async def _store_results(
        self, claim: Claim, outputs: list[tuple[str, str, str]]
    ) -> list[ResultItem]:
        results: list[ResultItem] = []
        seen: set[str] = set()
        for path, name, media_type in outputs:
            base = result_name(name, Path(path)) if name else Path(path).name
            final = unique_name(base, seen.__contains__)
            seen.add(final)
            stored = await self.store.put_file(
                names.result_object(claim.job_id, final), Path(path), media_type
            )
            results.append(
                ResultItem(
                    name=final, media_type=media_type, size=stored.size, sha256=stored.sha256
                )
            )
        return results

    async def _heartbeat(self, running: Running) -> None:
        lease = self.settings.lease_seconds
        while not running.stop.done():
            await asyncio.sleep(lease / 3)
            try:
                if not await self.jobs.renew(running.claim, lease):
                    running.request_stop("lost")  # aborted, or taken over after a stall
            except Exception as e:  # keep running: the lease outlives a short outage
                log.warning("lease renewal of job %s failed: %r", running.claim.job_id, e)

    # -- outcomes ----------------------------------------------------------------------

    async def _stopped(self, message: AbstractIncomingMessage, claim: Claim, reason: str) -> None:
        prefix = self.settings.redis.prefix
        if reason == "execution_duration_exceeded":
            error = ErrorDocument(
                code="execution_duration_exceeded",
                message=f"the job ran longer than its limit of {claim.execution_duration} s",
            )
            if await self.jobs.fail(claim, error):
                await publish_event(
                    self.redis, prefix, JobEvent(job_id=claim.job_id, phase=Phase.ERROR)
                )
            await message.ack()
        elif reason == "shutdown":
            await self.jobs.release(claim)
            await message.nack(requeue=True)
        else:  # aborted or lost: the row is no longer ours to write
            log.info("job %s stopped: %s", claim.job_id, reason)
            await message.ack()

    async def _failed(
        self,
        message: AbstractIncomingMessage,
        msg: JobMessage,
        claim: Claim,
        code: str,
        text: str,
        detail: str | None,
    ) -> None:
        s = self.settings
        transient = code == "transient_error"
        exhausted = transient and claim.attempts >= s.max_attempts
        error = ErrorDocument(code=code, message=text, detail=detail, retryable=transient)
        if transient and not exhausted:
            level, delay = retry_delay(s.rabbit, claim.attempts)
            log.info(
                "job %s attempt %d failed transiently; retry in %.0f s",
                claim.job_id,
                claim.attempts,
                delay,
            )
            await self.publish_retry(msg, level, attempt=claim.attempts)
            await self.jobs.release(claim, error)
            await message.ack()
            return
        if exhausted or code == "fatal_error":
            if exhausted:
                error = msgspec.structs.replace(
                    error, message=f"{text} (gave up after {claim.attempts} attempts)"
                )
            await self._dead_letter(msg, claim, error)
        log.info("job %s failed: %s: %s", claim.job_id, code, text)
        if await self.jobs.fail(claim, error):
            await publish_event(
                self.redis, s.redis.prefix, JobEvent(job_id=claim.job_id, phase=Phase.ERROR)
            )
            if claim.stage is not None:
                await self.fanout.discard_work(claim.job_id)
        await message.ack()

    async def publish_retry(self, msg: JobMessage, level: int, attempt: int | None = None) -> None:
        ns = self.settings.rabbit.namespace
        if attempt is not None:
            msg = msgspec.structs.replace(msg, attempt=attempt)
        channel = await self.publisher.get()
        await channel.default_exchange.publish(
            job_message(msg),
            names.retry_queue(ns, msg.pool, level),
            timeout=self.settings.rabbit.publish_timeout,
        )

    async def _dead_letter(self, msg: JobMessage, claim: Claim, error: ErrorDocument) -> None:
        ns = self.settings.rabbit.namespace
        channel = await self.publisher.get()
        exchange = await channel.get_exchange(names.dead_exchange(ns), ensure=False)
        headers: dict[str, Any] = {
            "x-pixfleet-error-code": error.code,
            "x-pixfleet-error": error.message[:1000],
            "x-pixfleet-attempts": claim.attempts,
            "x-pixfleet-worker": self.worker_name,
        }
        await exchange.publish(
            job_message(msgspec.structs.replace(msg, attempt=claim.attempts), headers),
            "",
            timeout=self.settings.rabbit.publish_timeout,
        )

    def abort(self, job_id: UUID) -> None:
        running = self.running.get(job_id)
        if running is not None:
            running.request_stop("aborted")
        self.fanout.abort(job_id)

    def stop_all(self, reason: str) -> None:
        for running in list(self.running.values()):
            running.request_stop(reason)
        self.fanout.stop_all(reason)


def file_stem(name: str) -> str:
    """A name safe as a file name stem (dataset ids may hold ``/``, ``:`` or ``?``)."""
    stem = _UNSAFE.sub("_", name).strip("._")
    return stem[:100] or "input"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class InputError(Exception):
    """An input of the job is gone (expired or deleted) or not the owner's to use."""


def _flatten(step: _Step) -> list[_Step]:
    if step.branches is None:
        return [step]
    return [s for branch in step.branches for s in branch.pipeline]
