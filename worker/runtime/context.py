"""What every part of the runtime shares: settings, connections, slots, and the messages a
worker publishes itself (retries, dead letters, fan-out tasks). Built once in ``main`` and
passed to the attempts explicitly.

Must not import pixel libraries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import msgspec
import redis.asyncio as aioredis

from contracts import names
from contracts.jobs import ErrorDocument
from contracts.messages import JobMessage
from contracts.ops import OpCatalog
from pixfleet.broker import LiveChannel, job_message
from pixfleet.outages import is_outage
from pixfleet.store import ObjectStore
from worker.runtime.jobstore import WorkerJobStore
from worker.runtime.outcomes import StopReason
from worker.runtime.slots import SlotPool
from worker.runtime.taskstore import TaskStore
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class Running:
    """The stop switch of one running attempt: resolving it stops the child."""

    def __init__(self, job_id: UUID) -> None:
        self.job_id = job_id
        self.stop: asyncio.Future[StopReason] = asyncio.get_running_loop().create_future()

    def request_stop(self, reason: StopReason) -> None:
        if not self.stop.done():
            self.stop.set_result(reason)


@dataclass
class Runtime:
    """A worker's dependencies, shared by its attempts."""

    settings: WorkerSettings
    jobs: WorkerJobStore
    tasks: TaskStore
    redis: aioredis.Redis
    store: ObjectStore
    slots: SlotPool
    publisher: LiveChannel
    worker_name: str
    catalog: OpCatalog
    running: set[Running] = field(default_factory=set)

    @property
    def scratch(self) -> Path:
        return Path(self.settings.scratch_dir)

    def abort(self, job_id: UUID) -> None:
        """Stop every attempt of the job this worker runs (the job and its tasks)."""
        for running in list(self.running):
            if running.job_id == job_id:
                running.request_stop(StopReason.ABORTED)

    def stop_all(self, reason: StopReason) -> None:
        for running in list(self.running):
            running.request_stop(reason)

    async def persist(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run a bookkeeping step, retrying it in place while a backing service is out
        (jittered backoff, ``record_retry_seconds`` at most), so a blip costs the job
        neither its lease nor a retry delay.

        Raises:
            Exception: the step's own error when it is no outage, or when the outage outlasted
                the retries.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.record_retry_seconds
        delay = 0.05
        while True:
            try:
                return await step()
            except Exception as e:
                if not is_outage(e) or loop.time() + delay > deadline:
                    raise
                log.warning("%s failed (%r); retrying in %.2f s", what, e, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    # -- messages the worker publishes ---------------------------------------------------

    async def publish_retry(self, msg: JobMessage, level: int, attempt: int | None = None) -> None:
        """Put a message into the retry queue of ``level`` (it returns to its pool later)."""
        rabbit = self.settings.rabbit
        if attempt is not None:
            msg = msgspec.structs.replace(msg, attempt=attempt)
        channel = await self.publisher.get()
        await channel.default_exchange.publish(
            job_message(msg),
            names.retry_queue(rabbit.namespace, msg.pool, level),
            timeout=rabbit.publish_timeout,
        )

    async def park(self, msg: JobMessage, lease_remaining: float | None) -> None:
        """Look at a message again once a live lease could have expired (its holder may be
        alive, a duplicate delivery, or dead, this the redelivery after its crash)."""
        remaining = max(lease_remaining or 0.0, 0.0)
        delays = self.settings.rabbit.retry_delays
        level = next((i for i, d in enumerate(delays, 1) if d >= remaining), len(delays))
        await self.publish_retry(msg, level)

    async def publish_to_pool(self, msg: JobMessage) -> None:
        rabbit = self.settings.rabbit
        channel = await self.publisher.get()
        exchange = await channel.get_exchange(names.jobs_exchange(rabbit.namespace))
        await exchange.publish(job_message(msg), msg.pool.value, timeout=rabbit.publish_timeout)

    async def dead_letter(self, msg: JobMessage, attempts: int, error: ErrorDocument) -> None:
        rabbit = self.settings.rabbit
        channel = await self.publisher.get()
        exchange = await channel.get_exchange(names.dead_exchange(rabbit.namespace), ensure=False)
        headers: dict[str, Any] = {
            "x-pixfleet-error-code": error.code,
            "x-pixfleet-error": error.message[:1000],
            "x-pixfleet-attempts": attempts,
            "x-pixfleet-worker": self.worker_name,
        }
        await exchange.publish(
            job_message(msgspec.structs.replace(msg, attempt=attempts), headers),
            "",
            timeout=rabbit.publish_timeout,
        )

    async def discard_work(self, job_id: UUID) -> None:
        """Delete a fanned-out job's intermediate files (idempotent; the sweeper deletes
        them with the job at the latest)."""
        try:
            await self.store.delete_prefix(names.work_prefix(job_id))
        except Exception as e:
            log.warning("could not delete the work files of job %s: %r", job_id, e)
