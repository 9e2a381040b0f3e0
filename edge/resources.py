"""Connections of one edge process: opened in the lifespan, closed in reverse order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from contracts.settings import RedisSettings
from edge.settings import EdgeSettings
from pixfleet import broker
from pixfleet.db import create_pool
from pixfleet.store import ObjectStore, open_store


@dataclass
class Resources:
    pg: asyncpg.Pool
    redis: aioredis.Redis
    events_redis: aioredis.Redis
    rabbit: AbstractRobustConnection
    store: ObjectStore


def redis_client(settings: RedisSettings, max_connections: int | None = None) -> aioredis.Redis:
    """A Redis client whose pool waits (bounded) for a free connection instead of failing."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url.reveal(),
        max_connections=max_connections or settings.max_connections,
        timeout=settings.timeout,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


@contextlib.asynccontextmanager
async def open_resources(settings: EdgeSettings) -> AsyncIterator[Resources]:
    """Connect to PostgreSQL, Redis, RabbitMQ (declaring the topology) and the object store.

    Raises:
        OSError: a service stayed unreachable through the bounded connect retries.
    """
    async with contextlib.AsyncExitStack() as stack:
        pg = await create_pool(settings.postgres)
        stack.push_async_callback(pg.close)
        redis = redis_client(settings.redis)
        stack.push_async_callback(redis.aclose)
        events_redis = redis_client(settings.redis, max_connections=4)
        stack.push_async_callback(events_redis.aclose)
        rabbit = await broker.connect(settings.rabbit)
        stack.push_async_callback(rabbit.close)
        channel = await rabbit.channel()
        await broker.declare(channel, settings.rabbit)
        await channel.close()
        store = await open_store(settings.store)
        stack.push_async_callback(store.close)
        yield Resources(pg, redis, events_redis, rabbit, store)
