"""Wire messages on RabbitMQ and Redis pub/sub.

Wire Structs tolerate unknown fields and give new fields defaults, so producers and consumers
of different versions interoperate (see msgspec's schema-evolution guide). The job row in
PostgreSQL is the record: a job message names the job, it does not carry its parameters.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import msgspec

from contracts.jobs import Pool


class JobMessage(msgspec.Struct, kw_only=True):
    """Published to the jobs exchange with routing key = pool; one per job execution request."""

    job_id: UUID
    pool: Pool
    priority: int = 2
    attempt: int = 0
    """Attempts already made when this message was published (0 on first publish)."""
    task: int | None = None
    """A task of a fanned-out job (its number); None for the job itself (its first run, or
    its combine step once every task is done)."""


class ControlMessage(msgspec.Struct, kw_only=True):
    """Broadcast to every worker on the control channel."""

    action: Literal["abort"]
    job_id: UUID
