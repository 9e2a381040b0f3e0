"""Why an attempt stops and how a failed one is classified: each word named once.

Standard library only: slots, attempts and the child boundary all use these.
"""

from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    """Why a running attempt was stopped from outside its child."""

    ABORTED = "aborted"
    """The user aborted the job, or a sibling task failed it."""
    LOST = "lost"
    """The lease is no longer this attempt's (aborted, or taken over after a stall)."""
    SHUTDOWN = "shutdown"
    """The worker is stopping: the job goes back to the queue."""
    TIME_LIMIT = "execution_duration_exceeded"
    """The attempt ran past the job's execution duration."""


class ErrorCode(StrEnum):
    """The ``code`` of a job's error document."""

    USAGE = "usage_error"
    TRANSIENT = "transient_error"
    FATAL = "fatal_error"
    CRASHED = "worker_crashed"
    TIME_LIMIT = "execution_duration_exceeded"

    @classmethod
    def of(cls, code: str) -> ErrorCode:
        """The code an operation's error carried; an unknown one is fatal (a bug)."""
        try:
            return cls(code)
        except ValueError:
            return cls.FATAL
