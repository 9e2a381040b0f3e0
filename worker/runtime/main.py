"""Worker process: connect, declare, start the slots, consume with prefetch = slots, and on
SIGTERM stop consuming, let running jobs finish within the grace period, requeue the rest,
close everything, exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage

from contracts import names
from contracts.messages import ControlMessage
from contracts.ops import OpCatalog
from pixfleet import broker
from pixfleet.db import create_pool
from pixfleet.store import open_store
from worker.runtime.child import ChildConfig
from worker.runtime.context import Runtime
from worker.runtime.jobstore import WorkerJobStore
from worker.runtime.outcomes import StopReason
from worker.runtime.runner import handle
from worker.runtime.slots import SlotPool
from worker.runtime.taskstore import TaskStore
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_control_decoder = msgspec.json.Decoder(ControlMessage)
_WATCH_INTERVAL = 2.0  # seconds between checks that the consumer channel is alive


async def _listen_control(client: aioredis.Redis, prefix: str, rt: Runtime) -> None:
    """Abort running jobs on request (the lease renewal catches what this misses)."""
    while True:
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(names.control_channel(prefix))
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    with contextlib.suppress(msgspec.DecodeError):
                        control = _control_decoder.decode(msg["data"])
                        if control.action == "abort":
                            rt.abort(control.job_id)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("control channel lost (%r); resubscribing", e)
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def _open(settings: WorkerSettings) -> AsyncIterator[dict[str, Any]]:
    async with contextlib.AsyncExitStack() as stack:
        pg = await create_pool(settings.postgres)
        stack.push_async_callback(pg.close)
        r = settings.redis
        redis = aioredis.Redis.from_url(
            r.url.reveal(),
            socket_timeout=r.timeout,
            socket_connect_timeout=r.timeout,
            max_connections=r.max_connections,
        )
        stack.push_async_callback(redis.aclose)
        control_redis = aioredis.Redis.from_url(r.url.reveal(), socket_connect_timeout=r.timeout)
        stack.push_async_callback(control_redis.aclose)
        rabbit = await broker.connect(settings.rabbit)
        stack.push_async_callback(rabbit.close)
        store = await open_store(settings.store)
        stack.push_async_callback(store.close)
        yield {
            "pg": pg,
            "redis": redis,
            "control_redis": control_redis,
            "rabbit": rabbit,
            "store": store,
        }


async def run_worker(settings: WorkerSettings, stop: asyncio.Event | None = None) -> None:
    """Run one worker until ``stop`` is set or SIGTERM/SIGINT arrives.

    Raises:
        OSError: a backing service stayed unreachable through the connect retries.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    name = settings.name or f"{socket.gethostname()}:{os.getpid()}:{settings.pool}"
    config = ChildConfig(
        op_plugins=list(settings.op_plugins),
        pool=settings.pool.value,
        limits=settings.limits,
        memory_mb=settings.child_memory_mb,
        threads=settings.threads_per_child,
    )
    slots = SlotPool(config, settings.slots, settings.child_max_tasks, settings.child_start_timeout)
    async with _open(settings) as res:
        await slots.start()
        try:
            publisher = broker.LiveChannel(res["rabbit"], settings.rabbit, confirms=True)
            rt = Runtime(
                settings=settings,
                jobs=WorkerJobStore(res["pg"]),
                tasks=TaskStore(res["pg"]),
                redis=res["redis"],
                store=res["store"],
                slots=slots,
                publisher=publisher,
                worker_name=name,
                catalog=OpCatalog.with_plugins(settings.op_plugins),
            )
            tasks: set[asyncio.Task[None]] = set()

            async def on_message(message: AbstractIncomingMessage) -> None:
                task = asyncio.create_task(handle(rt, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            control = asyncio.create_task(
                _listen_control(res["control_redis"], settings.redis.prefix, rt)
            )
            consumer = broker.LiveChannel(res["rabbit"], settings.rabbit, confirms=False)
            queue, tag, consuming = None, None, None
            while not stop.is_set():
                try:
                    channel = await consumer.get()
                    if channel is not consuming:  # new channel: (re)start the consumer
                        await channel.set_qos(prefetch_count=settings.prefetch or settings.slots)
                        queue = await broker.declare_pool_queue(
                            channel, settings.rabbit, settings.pool
                        )
                        tag = await queue.consume(on_message)
                        consuming = channel
                        log.info(
                            "worker %s consuming %s with %d slots (pids %s)",
                            name,
                            queue.name,
                            settings.slots,
                            slots.pids(),
                        )
                except ConnectionError as e:
                    log.warning("not consuming: %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _WATCH_INTERVAL)
            log.info("worker %s stopping: no new jobs; %d running", name, len(tasks))
            if queue is not None and tag is not None:
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
            await _drain(tasks, rt, settings.shutdown_grace)
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await control
        finally:
            slots.close()
    log.info("worker %s stopped", name)


async def _drain(tasks: set[asyncio.Task[None]], rt: Runtime, grace: float) -> None:
    """Let running jobs finish within ``grace``; then stop and requeue the rest."""
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=grace)
        if pending:
            log.warning("requeueing %d jobs still running after %.0f s", len(pending), grace)
            rt.stop_all(StopReason.SHUTDOWN)
            await asyncio.wait(pending, timeout=30)
