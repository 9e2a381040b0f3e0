"""Settings of one worker process (one pool), read from ``PIXFLEET_*`` variables in ``main``."""

from __future__ import annotations

import os
from typing import Annotated

import msgspec

from contracts.jobs import Pool
from contracts.settings import (
    Positive,
    PositiveInt,
    ServiceSettings,
)


class WorkerSettings(ServiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Everything a worker reads from its environment."""

    pool: Pool = Pool.standard
    slots: PositiveInt = msgspec.field(default_factory=lambda: os.cpu_count() or 1)
    """Child processes, each running one job at a time."""
    prefetch: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Deliveries the broker may hand this worker ahead of acks (0: ``slots``). More than
    ``slots`` keeps a claimed job waiting for each slot, so no slot idles through the round
    trips between two jobs (measured: +15-28 % small jobs/s at twice ``slots``), at the cost
    of priority: an interactive job can wait behind that many prefetched batch jobs."""
    threads_per_child: PositiveInt = 1
    """Threads OpenCV/BLAS may use inside one child."""
    child_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 4096
    """Address-space limit of a child (0: none); a job over it fails instead of the host."""
    child_max_tasks: PositiveInt = 500
    """Jobs after which a child is replaced by a fresh one."""
    child_start_timeout: Positive = 60.0
    lease_seconds: Positive = 30.0
    """A claimed job is the worker's while it renews this lease (every third of it)."""
    record_retry_seconds: Positive = 30.0
    """How long recording a finished attempt is retried in place while PostgreSQL (or
    another backing service) is unreachable, before the job is given back."""
    max_attempts: PositiveInt = 4
    """Attempts of a job failing transiently before it is dead-lettered."""
    shutdown_grace: Positive = 30.0
    """Seconds SIGTERM waits for running jobs before requeueing them."""
    progress_interval: Positive = 0.25
    """Least seconds between two progress events of a job on Redis."""
    progress_db_interval: Positive = 2.0
    """Least seconds between two progress writes of a job to PostgreSQL."""
    scratch_dir: str = "var/scratch"
    name: str = ""
    """Worker name recorded on claimed jobs (default: host and PID)."""
    op_plugins: list[str] = msgspec.field(default_factory=list)
