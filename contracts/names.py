"""Names of exchanges, queues, Redis keys and channels, and object-store keys: one place.

Every name takes the namespace or prefix from settings so that deployments (and tests) can
share one broker, one Redis and one bucket.
"""

from __future__ import annotations

from uuid import UUID

from contracts.jobs import Pool


def jobs_exchange(ns: str) -> str:
    """Direct exchange that routes job messages by pool."""
    return f"{ns}.jobs"


def pool_queue(ns: str, pool: Pool | str) -> str:
    """Durable priority queue consumed by one worker pool."""
    return f"{ns}.{pool}"


def retry_queue(ns: str, pool: Pool | str, n: int) -> str:
    """TTL queue holding messages for retry level ``n`` (1-based); expires back to the pool."""
    return f"{ns}.{pool}.retry.{n}"


def dead_exchange(ns: str) -> str:
    """Fanout exchange receiving dead letters of every pool."""
    return f"{ns}.dead"


def dead_queue(ns: str) -> str:
    """Queue of dead-lettered job messages, listed and replayed by ``pixfleet dead``."""
    return f"{ns}.dead"


def job_channel(prefix: str, job_id: UUID | str) -> str:
    """Redis pub/sub channel carrying a job's progress and phase changes."""
    return f"{prefix}:job:{job_id}"


def control_channel(prefix: str) -> str:
    """Redis pub/sub channel of control messages to every worker (abort)."""
    return f"{prefix}:control"


def idempotency_key(prefix: str, owner: str, key: str) -> str:
    """Redis key of one owner's idempotency key (the owner is length-prefixed: no collisions)."""
    return f"{prefix}:idem:{len(owner)}:{owner}:{key}"


def upload_object(upload_id: UUID | str) -> str:
    """Object-store key of an upload."""
    return f"uploads/{upload_id}"


def result_prefix(job_id: UUID | str) -> str:
    """Object-store prefix of every result of a job (all attempts)."""
    return f"results/{job_id}/"


def result_object(job_id: UUID | str, name: str, attempt: UUID | None = None) -> str:
    """Object-store key of a job result written by the attempt holding lease ``attempt``.

    Each attempt writes under its own lease token, so a stale attempt (a worker that lost its
    lease while stalled) never overwrites what the job serves; the job row records the key of
    the attempt that completed it. Keys without an attempt are those of older records.
    """
    if attempt is None:
        return f"results/{job_id}/{name}"
    return f"results/{job_id}/{attempt.hex}/{name}"


def work_prefix(job_id: UUID | str) -> str:
    """Object-store prefix of a fanned-out job's intermediate files (deleted when it ends)."""
    return f"work/{job_id}/"


def task_object(job_id: UUID | str, task: int, attempt: UUID, name: str) -> str:
    """Object-store key of a file one attempt (lease ``attempt``) of a fanned-out job's task
    wrote; the task row records the keys of the attempt that completed it."""
    return f"work/{job_id}/{task}/{attempt.hex}/{name}"


def model_prefix(name: str) -> str:
    """Object-store prefix of every stored version of model ``name``."""
    return f"models/{name}/"


def model_object(name: str, sha256: str) -> str:
    """Object-store key of one version of a registered model (its bytes' SHA-256)."""
    return f"{model_prefix(name)}{sha256}.onnx"


def dataset_object(sha256: str) -> str:
    """Object-store key of a registered dataset's bytes: one object for equal bytes under
    several ids."""
    return f"datasets/{sha256}"


def scratch_dir(job_id: UUID | str, attempt: UUID, task: int | None = None) -> str:
    """Name of one attempt's local scratch folder (attempts on one host never share one)."""
    return f"{job_id}.{attempt.hex}" if task is None else f"{job_id}.{task}.{attempt.hex}"
