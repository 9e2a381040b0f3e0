"""Which exceptions mean "a backing service is unreachable or went away", named once.

PostgreSQL, Redis, RabbitMQ and the object store fail in their own libraries' exception
types; the edge maps these to 503 + Retry-After and the worker retries its bookkeeping in
place or gives the job back. Anything else is a bug and is treated as one.
"""

from __future__ import annotations

import asyncpg
import redis.exceptions
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, refused, reset, unreachable
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # a connection closed or broken under the pool
    asyncpg.InternalClientError,  # a connection left mid-operation by a lost server
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    AMQPConnectionError,
    ChannelInvalidStateError,
)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) is a backing service's outage."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OUTAGE_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False
