"""Job phases (IVOA UWS names), priority classes, pools and the job snapshot.

Imports msgspec and the standard library only.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec


class Phase(enum.StrEnum):
    """Execution phase of a job, with the names of IVOA UWS 1.1."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    ARCHIVED = "ARCHIVED"


FINAL_PHASES = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED, Phase.ARCHIVED})
"""Phases a job never leaves (except towards ``ARCHIVED`` on destruction)."""

ABORTABLE_PHASES = frozenset({Phase.PENDING, Phase.QUEUED, Phase.EXECUTING})


class Pool(enum.StrEnum):
    """Worker pool an operation runs on."""

    standard = "standard"
    heavy = "heavy"


class PriorityClass(enum.StrEnum):
    """Request class of a job; mapped to an AMQP message priority by ``amqp_priority``."""

    interactive = "interactive"
    normal = "normal"
    batch = "batch"


_AMQP_PRIORITY = {PriorityClass.interactive: 4, PriorityClass.normal: 2, PriorityClass.batch: 1}


def amqp_priority(priority: PriorityClass) -> int:
    """Return the AMQP message priority (0-9) of a request class."""
    return _AMQP_PRIORITY[priority]


class ResultItem(msgspec.Struct, kw_only=True, frozen=True):
    """One stored output of a job."""

    name: str
    media_type: str
    size: int
    sha256: str
    href: str | None = None
    """URL that redirects to a signed, short-lived download URL (set by the edge)."""


class StoredResult(ResultItem, kw_only=True, frozen=True):
    """A result as the job row records it: the item and the object-store key it lives at
    (the key of the attempt that completed the job; ``None`` in records that predate it)."""

    key: str | None = None


class ErrorDocument(msgspec.Struct, kw_only=True, frozen=True):
    """Why a job ended in ``ERROR``."""

    code: str
    """Machine-readable slug, e.g. ``usage_error``, ``transient_error``, ``worker_crashed``."""
    message: str
    detail: str | None = None
    retryable: bool = False


Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class JobSnapshot(msgspec.Struct, kw_only=True):
    """The state of a job as the API shows it."""

    id: UUID
    phase: Phase
    href: str
    priority: PriorityClass
    pool: Pool
    run_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    destruction_at: datetime
    execution_duration: int
    """Execution time limit in seconds (UWS ``executionDuration``)."""
    attempts: int = 0
    progress: Fraction = 0.0
    progress_message: str | None = None
    results: list[ResultItem] = []
    error: ErrorDocument | None = None


class JobPage(msgspec.Struct, kw_only=True):
    """One page of the owner's jobs, newest first."""

    items: list[JobSnapshot]
    next: str | None = None
    """Cursor for the next page (pass it back as ``cursor``), absent on the last page."""


class JobEvent(msgspec.Struct, kw_only=True):
    """A change of a job published on its event channel (progress or a new phase)."""

    job_id: UUID
    phase: Phase
    progress: float = 0.0
    message: str | None = None
