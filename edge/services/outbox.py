"""Transactional outbox: publish accepted jobs with confirms; relay what was never confirmed.

A job row is committed (``enqueued_at IS NULL``) before its message is published. The
publisher sends whatever has accumulated with many confirms in flight and marks the confirmed
ids in one UPDATE per batch. The relay (one active across all edge processes, elected with a
PostgreSQL session advisory lock) republishes rows that stayed unconfirmed and returns jobs
whose worker vanished to the outbox; after each pass it runs the leader's other duty (the
``Sweeper``). So an accepted job is never lost: broker down, edge crash or full buffer only
delay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from aio_pika.abc import AbstractRobustConnection
from aiormq import spec

from contracts import names
from contracts.jobs import Pool
from contracts.messages import JobMessage
from edge.settings import EdgeSettings
from edge.store.jobs import JobStore
from pixfleet.broker import LiveChannel, job_properties

log = logging.getLogger(__name__)

_encode = msgspec.json.encode
_properties = job_properties

RELAY_LOCK = 0x70697872  # "pixr": advisory lock of the active relay
_BATCH = 512


class Outbox:
    """Publisher and relay of one edge process."""

    def __init__(
        self,
        settings: EdgeSettings,
        connection: AbstractRobustConnection,
        jobs: JobStore,
        *,
        after_relay: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.jobs = jobs
        self.after_relay = after_relay
        """Leader-only work run after each relay pass (the sweeper)."""
        self._queue: asyncio.Queue[JobMessage] = asyncio.Queue(settings.publish_buffer)
        self._confirmed: list[UUID] = []
        self._confirmed_event = asyncio.Event()
        self._publisher = LiveChannel(connection, settings.rabbit, confirms=True)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock_conn: Any = None
        self.is_leader = False

    async def start(self) -> None:
        await self._publisher.get()  # declares the topology
        self._spawn(self._publish_loop())
        self._spawn(self._mark_loop())
        self._spawn(self._relay_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._confirmed:  # confirmed while the mark loop waited: spare the relay the work
            with contextlib.suppress(Exception):
                await self.jobs.mark_enqueued(self._confirmed)
            self._confirmed = []
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close(timeout=2)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def enqueue(self, msg: JobMessage) -> None:
        """Hand a committed job to the publisher; when the buffer is full the relay takes it."""
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("publish buffer full; job %s left to the relay", msg.job_id)

    async def publish(self, messages: Sequence[JobMessage]) -> list[UUID]:
        """Publish with confirms, all in flight at once; return the confirmed job ids.

        Goes to aiormq under aio-pika's robust channel: the frames are the same, without the
        per-message wrappers and the per-message wait for the socket to drain.
        """
        timeout = self.settings.rabbit.publish_timeout
        exchange = names.jobs_exchange(self.settings.rabbit.namespace)
        try:
            channel = await (await self._publisher.get()).get_underlay_channel()
        except Exception as e:  # closed or reconnecting: the relay will publish them
            log.warning("%d publishes deferred to the relay: %r", len(messages), e)
            return []
        results = await asyncio.gather(
            *(
                # aiormq's Channel takes wait=; its AbstractChannel stub does not declare it
                channel.basic_publish(  # type: ignore[call-arg]
                    _encode(m),
                    exchange=exchange,
                    routing_key=m.pool.value,
                    properties=_properties(m),
                    timeout=timeout,
                    wait=False,
                )
                for m in messages
            ),
            return_exceptions=True,
        )
        confirmed = [
            m.job_id
            for m, r in zip(messages, results, strict=True)
            if isinstance(r, spec.Basic.Ack)  # a Nack or an exception: left to the relay
        ]
        failed = len(messages) - len(confirmed)
        if failed:
            first = next(r for r in results if isinstance(r, BaseException))
            log.warning("%d publishes unconfirmed (left to the relay): %r", failed, first)
        return confirmed

    def fill(self) -> float:
        """How full the publish buffer is, 0 to 1 (admission control lowers its limit past
        one half)."""
        return self._queue.qsize() / self.settings.publish_buffer

    @property
    def saturated(self) -> bool:
        """True while the publish buffer is full: the broker takes jobs slower than they come."""
        return self._queue.full()

    async def _mark_loop(self) -> None:
        """Record confirms with one UPDATE at a time, of everything confirmed meanwhile."""
        while True:
            await self._confirmed_event.wait()
            if self.settings.mark_delay:  # gather what confirms next into the same UPDATE
                await asyncio.sleep(self.settings.mark_delay)
            self._confirmed_event.clear()
            ids, self._confirmed = self._confirmed, []
            for i in range(0, len(ids), 5000):
                try:
                    await self.jobs.mark_enqueued(ids[i : i + 5000])
                except Exception as e:  # the relay republishes them; claims drop duplicates
                    log.warning("could not mark %d jobs enqueued: %r", len(ids), e)

    async def _publish_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                confirmed = await self.publish(batch)
            except Exception:  # never let the loop die: the relay covers this batch
                log.exception("publishing %d jobs failed; left to the relay", len(batch))
                continue
            if confirmed:
                self._confirmed.extend(confirmed)
                self._confirmed_event.set()

    async def _lead(self) -> bool:
        """Hold the relay lock on a dedicated connection; True while this process holds it."""
        if self._lock_conn is not None and not self._lock_conn.is_closed():
            try:
                await self._lock_conn.fetchval("SELECT 1", timeout=2)
                return self.is_leader or await self._try_lock()
            except Exception:
                with contextlib.suppress(Exception):
                    self._lock_conn.terminate()
        self._lock_conn, self.is_leader = None, False
        pg = self.settings.postgres
        self._lock_conn = await asyncpg.connect(pg.dsn.reveal(), timeout=pg.connect_timeout)
        return await self._try_lock()

    async def _try_lock(self) -> bool:
        self.is_leader = bool(
            await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK, timeout=2)
        )
        return self.is_leader

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.relay_interval)
            try:
                if await self._lead():
                    await self.relay_once()
            except Exception as e:
                log.warning("outbox relay pass failed: %r", e)

    async def relay_once(self) -> int:
        """One relay pass; return how many jobs were republished."""
        s = self.settings
        released = await self.jobs.release_expired_leases(older_than=60.0, limit=_BATCH)
        if released:
            log.warning("returned %d jobs with long-expired leases to the outbox", released)
        total = 0
        while True:  # drain the backlog at publishing speed, one batch at a time
            rows = await self.jobs.unenqueued(older_than=s.relay_grace, limit=_BATCH)
            if not rows:
                break
            total += len(rows)
            messages = [
                JobMessage(
                    job_id=r["id"],
                    pool=Pool(r["pool"]),
                    priority=r["priority"],
                    attempt=r["attempts"],
                )
                for r in rows
            ]
            confirmed = await self.publish(messages)
            if confirmed:
                await self.jobs.mark_enqueued(confirmed)
            log.info("relay republished %d of %d unconfirmed jobs", len(confirmed), len(rows))
            if len(confirmed) < len(rows) or len(rows) < _BATCH:
                break  # the broker refuses, or the backlog is drained
        if self.after_relay is not None:
            await self.after_relay()
        return total
