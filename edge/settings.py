"""Settings of the edge deployable, read from ``PIXFLEET_*`` variables once in ``main``."""

from __future__ import annotations

from typing import Annotated

import msgspec

from contracts.settings import (
    Positive,
    PositiveInt,
    ServiceSettings,
)


class AdmissionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Admission control of job submissions (``edge/services/admission.py``)."""

    initial_limit: PositiveInt = 32
    """Concurrent submissions admitted at start; the limit then adapts between the bounds."""
    min_limit: PositiveInt = 4
    max_limit: PositiveInt = 512
    target_latency: Positive = 0.02
    """Seconds a submission may take inside the edge before the limit is lowered."""
    window: Positive = 0.25
    """Seconds between adjustments of the limit."""
    max_wait: Positive = 0.1
    """Seconds a submission may wait for a permit; one that could not get one in time is
    refused at once (503 + Retry-After) before anything reads it."""
    max_queue: PositiveInt = 1_000
    """Submissions waiting for a permit, at most."""
    interactive_share: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.2
    """Share of the permits only interactive submissions may take."""
    peek_bytes: PositiveInt = 64 * 1024
    """Largest body read ahead to learn a waiting submission's priority."""


class EdgeSettings(ServiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Everything the edge reads from its environment."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    processes: PositiveInt = 1
    """Edge server processes (each with its own pools; one relay is active across all)."""
    max_body_bytes: PositiveInt = 64 * 1024
    """Largest JSON request body (job submissions)."""
    max_inputs: PositiveInt = 64
    max_pipeline: PositiveInt = 16
    default_execution_duration: PositiveInt = 600
    max_execution_duration: PositiveInt = 3600
    """Cap on a job's execution time limit; keep it below RabbitMQ's consumer_timeout."""
    job_ttl: PositiveInt = 7 * 24 * 3600
    """Seconds from submission to a job's destruction (results deleted, phase ARCHIVED)."""
    upload_ttl: PositiveInt = 24 * 3600
    idempotency_ttl: PositiveInt = 24 * 3600
    """Seconds the Redis fast path remembers an idempotency key (PostgreSQL keeps it forever)."""
    key_cache_ttl: Positive = 30.0
    """Seconds an API key lookup is cached (a revoked key works at most this long)."""
    relay_interval: Positive = 2.0
    """Seconds between outbox relay passes."""
    relay_grace: Positive = 10.0
    """Seconds a job may stay unconfirmed before the relay republishes it."""
    mark_delay: Annotated[float, msgspec.Meta(ge=0)] = 0.2
    """Seconds the outbox gathers broker confirms before marking those jobs enqueued in one
    UPDATE: at moderate rates one statement per many jobs instead of one per job. Keep it
    well under ``relay_grace`` (a job unmarked meanwhile is at most published twice, and a
    worker's claim drops the duplicate)."""
    publish_buffer: PositiveInt = 2_000
    """Accepted jobs waiting for their first publish. While it is full the edge sheds new
    submissions (503 + Retry-After): the broker takes jobs slower than they arrive. Keep it
    a few seconds of publishing, well under ``relay_grace``."""
    insert_batch: PositiveInt = 256
    """Largest multi-row INSERT of submitted jobs (group commit)."""
    admission: AdmissionSettings = msgspec.field(default_factory=AdmissionSettings)
    retry_after: PositiveInt = 5
    """Retry-After seconds sent with 503 answers."""
    sse_keepalive: Positive = 15.0
    gc_threshold: list[int] = msgspec.field(default_factory=lambda: [20_000, 20, 20])
    """Python collector thresholds of the edge process (generation 0, 1, 2)."""
    op_plugins: list[str] = msgspec.field(default_factory=list)
    """Modules exposing extra operations (``OPS``) to accept."""
