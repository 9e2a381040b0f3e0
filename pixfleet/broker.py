"""RabbitMQ: the topology as data, declared idempotently at start and exported as definitions.

Topology (``ns`` is ``RabbitSettings.namespace``):

- ``ns.jobs``: direct exchange; routing key = pool.
- ``ns.<pool>``: durable classic queue with ``x-max-priority``; rejected messages dead-letter
  to ``ns.dead``.
- ``ns.<pool>.retry.<n>``: durable TTL queue (delay ``retry_delays[n-1]``) whose expired
  messages dead-letter back to ``ns.jobs`` with routing key ``<pool>``.
- ``ns.dead``: fanout exchange and durable queue of dead letters.

RabbitMQ 3.10 has no per-queue consumer timeout: the broker-wide ``consumer_timeout`` must
exceed the longest allowed job (``infra/rabbitmq/rabbitmq.conf``; ``pixfleet`` raises it at
run time with ``rabbitmqctl eval`` where it can).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractRobustConnection, ExchangeType
from aiormq import spec
from yarl import URL

from contracts import media, names
from contracts.jobs import Pool
from contracts.messages import JobMessage
from contracts.settings import RabbitSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    bind_to: str | None = None
    routing_key: str = ""


@dataclass(frozen=True)
class Topology:
    exchanges: list[Exchange]
    queues: list[Queue]


def retry_delay(rabbit: RabbitSettings, attempt: int) -> tuple[int, float]:
    """Return (retry level, delay seconds) for the retry after ``attempt`` failed attempts."""
    level = min(max(attempt, 1), len(rabbit.retry_delays))
    return level, rabbit.retry_delays[level - 1]


def topology(rabbit: RabbitSettings) -> Topology:
    """Describe every exchange and queue of a namespace."""
    ns = rabbit.namespace
    jobs, dead = names.jobs_exchange(ns), names.dead_exchange(ns)
    queues = [Queue(names.dead_queue(ns), bind_to=dead)]
    for pool in Pool:
        queues.append(
            Queue(
                names.pool_queue(ns, pool),
                {"x-max-priority": rabbit.max_priority, "x-dead-letter-exchange": dead},
                bind_to=jobs,
                routing_key=pool.value,
            )
        )
        for level, delay in enumerate(rabbit.retry_delays, start=1):
            queues.append(
                Queue(
                    names.retry_queue(ns, pool, level),
                    {
                        "x-message-ttl": int(delay * 1000),
                        "x-dead-letter-exchange": jobs,
                        "x-dead-letter-routing-key": pool.value,
                    },
                )
            )
    return Topology([Exchange(jobs, "direct"), Exchange(dead, "fanout")], queues)


async def declare(channel: AbstractChannel, rabbit: RabbitSettings) -> None:
    """Declare the topology (idempotent: declaring an existing identical entity is a no-op)."""
    topo = topology(rabbit)
    exchanges = {}
    for ex in topo.exchanges:
        exchanges[ex.name] = await channel.declare_exchange(
            ex.name, ExchangeType(ex.type), durable=True
        )
    for q in topo.queues:
        queue = await channel.declare_queue(q.name, durable=True, arguments=q.arguments)
        if q.bind_to:
            await queue.bind(exchanges[q.bind_to], routing_key=q.routing_key)


async def delete(channel: AbstractChannel, rabbit: RabbitSettings) -> None:
    """Delete every queue and exchange of a namespace (tests and ``pixfleet topology --delete``)."""
    topo = topology(rabbit)
    for q in topo.queues:
        await channel.queue_delete(q.name)
    for ex in topo.exchanges:
        await channel.exchange_delete(ex.name)


def definitions(rabbit: RabbitSettings, vhost: str = "/") -> dict[str, Any]:
    """Return the topology as a RabbitMQ definitions document (``import_definitions``)."""
    topo = topology(rabbit)
    return {
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in topo.exchanges
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": q.arguments,
            }
            for q in topo.queues
        ],
        "bindings": [
            {
                "source": q.bind_to,
                "vhost": vhost,
                "destination": q.name,
                "destination_type": "queue",
                "routing_key": q.routing_key,
                "arguments": {},
            }
            for q in topo.queues
            if q.bind_to
        ],
    }


async def connect(rabbit: RabbitSettings, *, attempts: int = 10) -> AbstractRobustConnection:
    """Open a robust (self-reconnecting) connection, retrying the first connect boundedly.

    Raises:
        aio_pika.exceptions.AMQPConnectionError: the broker stayed unreachable.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await aio_pika.connect_robust(_url(rabbit), timeout=rabbit.connect_timeout)
        except (OSError, aio_pika.exceptions.AMQPConnectionError, TimeoutError) as e:
            if attempt == attempts:
                raise
            log.warning("rabbitmq connect attempt %d/%d failed: %s", attempt, attempts, e)
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


def _url(rabbit: RabbitSettings) -> str:
    """The broker URL with the settings' heartbeat, unless the URL names its own."""
    url = URL(rabbit.url.reveal())
    if "heartbeat" not in url.query:
        url = url.update_query(heartbeat=rabbit.heartbeat)
    return str(url)


def job_properties(msg: JobMessage) -> spec.Basic.Properties:
    """AMQP properties of a job message (for publishing through aiormq directly)."""
    return spec.Basic.Properties(
        content_type=media.JSON,
        delivery_mode=2,  # persistent
        priority=msg.priority,
        message_id=str(msg.job_id),
        message_type="pixfleet.job",
    )


def job_message(msg: JobMessage, headers: dict[str, Any] | None = None) -> aio_pika.Message:
    """Wrap a job message as a persistent AMQP message with its priority."""
    return aio_pika.Message(
        msgspec.json.encode(msg),
        content_type=media.JSON,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=msg.priority,
        message_id=str(msg.job_id),
        type="pixfleet.job",
        headers=headers or {},
    )


async def declare_pool_queue(channel: AbstractChannel, rabbit: RabbitSettings, pool: Pool) -> Any:
    """Declare (not just look up) a pool's queue, so a robust channel restores its consumers
    after a broker restart."""
    name = names.pool_queue(rabbit.namespace, pool)
    spec = next(q for q in topology(rabbit).queues if q.name == name)
    return await channel.declare_queue(name, durable=True, arguments=spec.arguments)


async def channel_alive(channel: AbstractChannel) -> bool:
    """Whether a (robust) channel has an open channel underneath right now."""
    if channel.is_closed:
        return False
    try:
        return not (await channel.get_underlay_channel()).is_closed
    except Exception:  # not (re)opened yet
        return False


class LiveChannel:
    """A channel on a robust connection that is reopened when a reconnect did not restore it.

    ``get()`` returns an open channel (declaring the topology on each new one) or raises while
    the connection is still reconnecting.
    """

    def __init__(
        self, connection: AbstractRobustConnection, rabbit: RabbitSettings, *, confirms: bool
    ) -> None:
        self.connection = connection
        self.rabbit = rabbit
        self.confirms = confirms
        self.channel: AbstractChannel | None = None

    async def get(self) -> AbstractChannel:
        """Raises: ConnectionError: the broker is unreachable or still reconnecting."""
        if self.channel is not None and await channel_alive(self.channel):
            return self.channel
        if self.connection.is_closed or not self.connection.connected.is_set():
            raise ConnectionError("rabbitmq is reconnecting")
        old = self.channel
        try:
            channel = await self.connection.channel(publisher_confirms=self.confirms)
            await declare(channel, self.rabbit)
        except Exception as e:
            raise ConnectionError(f"cannot open a rabbitmq channel: {e!r}") from e
        if old is not None:
            log.warning("a channel was not restored after a reconnect; opened a new one")
            with contextlib.suppress(Exception):
                await old.close()
        self.channel = channel
        return channel
