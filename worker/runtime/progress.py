"""Progress of a running job: child -> worker -> Redis pub/sub (throttled) and PostgreSQL
(throttled further). Called synchronously from the slot reader; writes are tasks.

A job shorter than the progress interval sends nothing while it runs: its ``EXECUTING``
event and its first progress go out only once it has run for ``interval`` (watchers learn of
a short job from its final event, and its row from the completion). Most jobs are short, and
two messages per job less is a share of a small job's cost worth having.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from contracts import names
from contracts.jobs import JobEvent, Phase
from worker.runtime.jobstore import Claim, WorkerJobStore

log = logging.getLogger(__name__)


async def publish_event(redis: aioredis.Redis, prefix: str, event: JobEvent) -> None:
    """Publish a job event; losing one only delays what SSE clients see."""
    try:
        await redis.publish(names.job_channel(prefix, event.job_id), msgspec.json.encode(event))
    except Exception as e:
        log.warning("could not publish event of job %s: %r", event.job_id, e)


class ProgressReporter:
    """Throttle one job's progress messages."""

    def __init__(
        self,
        claim: Claim,
        redis: aioredis.Redis,
        prefix: str,
        jobs: WorkerJobStore,
        interval: float,
        db_interval: float,
        *,
        start: float = 0.0,
        default_message: str | None = None,
    ) -> None:
        """``start``: where the child's 0 lies in the job's progress (its 1 is the job's 1);
        ``default_message`` stands in for a step that reports none."""
        self.claim, self.redis, self.prefix, self.jobs = claim, redis, prefix, jobs
        self.start, self.default_message = start, default_message
        self.interval, self.db_interval = interval, db_interval
        self._last_event = self._last_db = time.monotonic()  # nothing before ``interval``
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fraction, self._message = start, default_message
        self._announce = asyncio.get_running_loop().call_later(interval, self._executing)

    def _executing(self) -> None:
        event = JobEvent(
            job_id=self.claim.job_id,
            phase=Phase.EXECUTING,
            progress=self._fraction,
            message=self._message,
        )
        self._spawn(publish_event(self.redis, self.prefix, event))

    def __call__(self, fraction: float, message: str | None) -> None:
        fraction = self.start + (1.0 - self.start) * fraction
        message = message or self.default_message
        self._fraction, self._message = fraction, message
        now = time.monotonic()
        if now - self._last_event >= self.interval:
            self._last_event = now
            event = JobEvent(
                job_id=self.claim.job_id, phase=Phase.EXECUTING, progress=fraction, message=message
            )
            self._spawn(publish_event(self.redis, self.prefix, event))
        if now - self._last_db >= self.db_interval:
            self._last_db = now
            self._spawn(self._write(fraction, message))

    async def _write(self, fraction: float, message: str | None) -> None:
        try:
            await self.jobs.progress(self.claim, fraction, message)
        except Exception as e:
            log.warning("could not record progress of job %s: %r", self.claim.job_id, e)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Stop reporting and wait for pending writes so none lands after the final phase."""
        self._announce.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
