"""Live job events: one Redis pub/sub connection per edge process, fanned out in memory,
and the event stream an SSE client reads.

Workers publish a ``JobEvent`` on ``<prefix>:job:<id>`` for phase changes and progress of
jobs that run longer than the progress interval. Each SSE client registers a queue; the hub
subscribes a job's channel while at least one client listens to it, so N clients cost one
Redis connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

import msgspec
import redis.asyncio as aioredis

from contracts import names
from contracts.jobs import FINAL_PHASES, JobEvent, JobSnapshot

log = logging.getLogger(__name__)

_QUEUE_SIZE = 256
_event_decoder = msgspec.json.Decoder(JobEvent)
_encode = msgspec.json.encode


class EventHub:
    """Fan job events from Redis pub/sub out to in-process listeners."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._listeners: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        """Set while any channel is subscribed: the reader waits on it, not on a timer, so
        the first event of a new listener is read as soon as it arrives."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def listen(self, job_id: UUID) -> AsyncIterator[asyncio.Queue[bytes]]:
        """Receive the raw events of one job while the context is open."""
        channel = names.job_channel(self._prefix, job_id)
        queue: asyncio.Queue[bytes] = asyncio.Queue(_QUEUE_SIZE)
        async with self._lock:
            listeners = self._listeners.setdefault(channel, set())
            if not listeners:
                await self._pubsub.subscribe(channel)
            listeners.add(queue)
            self._listening.set()
        try:
            yield queue
        finally:
            async with self._lock:
                listeners = self._listeners.get(channel, set())
                listeners.discard(queue)
                if not listeners:
                    self._listeners.pop(channel, None)
                    if not self._listeners:
                        self._listening.clear()
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while True:
            if not self._listeners:
                await self._listening.wait()
                continue
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis went away: listeners fall back to polling
                log.warning("event hub read failed: %r", e)
                await asyncio.sleep(1.0)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            channel = msg["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            for queue in list(self._listeners.get(channel, ())):
                with contextlib.suppress(asyncio.QueueFull):  # a stuck client loses progress only
                    queue.put_nowait(msg["data"])


async def job_event_stream(
    hub: EventHub, job_id: UUID, read: Callable[[], Awaitable[JobSnapshot]], keepalive: float
) -> AsyncIterator[tuple[str | None, str]]:
    """A job's events as (name, data) pairs for Server-Sent Events: a ``snapshot``,
    ``progress`` while it runs, a final ``snapshot``; ``(None, "")`` is a keepalive. ``read``
    gives the job's current snapshot (the record is the truth; events only say when to look).
    """
    async with hub.listen(job_id) as queue:
        snap = await read()  # after subscribing: nothing missed
        yield "snapshot", _encode(snap).decode()
        if snap.phase in FINAL_PHASES:
            return
        while snap.phase not in FINAL_PHASES:
            try:
                raw = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                # Also covers events lost while Redis was away: re-read the record.
                snap = await read()
                if snap.phase not in FINAL_PHASES:
                    yield None, ""
                continue
            event = _event_decoder.decode(raw)
            if event.phase in FINAL_PHASES or event.phase is not snap.phase:
                snap = await read()
            if event.phase not in FINAL_PHASES:
                yield "progress", raw.decode()
        yield "snapshot", _encode(snap).decode()
