"""Which exceptions mean "a backing service is unreachable, going away or overloaded": named
once for the edge (503 + Retry-After) and the worker (bookkeeping retried in place, or the job
given back). Anything else is a bug and is treated as one.
"""

from __future__ import annotations

import aiormq.exceptions
import asyncpg
import redis.exceptions

# asyncpg's InterfaceError and InternalClientError are not here: most are misuses (a bug). The
# ones from a connection PostgreSQL ended are retried, or raised as ConnectionDoesNotExistError,
# by ``pixfleet.db.LivePool``.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; aiormq's AMQPConnectionError is a ConnectionError
    TimeoutError,  # connect, statement, pool acquire
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections
    asyncpg.exceptions.TargetServerAttributeNotMatched,  # no primary reachable (failover)
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,  # the robust connection is reconnecting
)

# OSErrors that name a path, not a service: a missing or misplaced file is a bug.
_NOT_OUTAGES: tuple[type[Exception], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says a backing service is down or slow (try again later), not a bug."""
    return isinstance(exc, OUTAGE_ERRORS) and not isinstance(exc, _NOT_OUTAGES)
