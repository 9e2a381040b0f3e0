"""Errors that operations raise to tell the worker runtime what to do with a failed job.

``UsageError`` fails the job now (bad input), ``TransientError`` retries it with backoff,
``FatalError`` fails it and alerts. Operations wrap library errors in one of these at the
boundary (``raise ... from e``); the runtime alone decides ack, retry or dead-letter.
They cross the child-process pipe, so they pickle with their message and detail.
Standard library only: both the worker parent and its children import this.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OpError(Exception):
    """Base of the errors an operation raises on purpose.

    ``message`` is shown to the user; ``detail`` (optional) is for operators and logs.
    The base itself is treated as fatal: raise one of the subclasses.
    """

    code: ClassVar[str] = "fatal_error"

    def __init__(self, message: str, detail: str | None = None) -> None:
        # args holds the message alone, so str(e) and the runtime's e.args[0] are the message.
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds from args and would drop detail; keep notes and attributes too.
        return (type(self), (self.message, self.detail), self.__dict__)


class UsageError(OpError):
    """The input or the request is wrong: fail the job now, retrying cannot help."""

    code: ClassVar[str] = "usage_error"


class TransientError(OpError):
    """A passing condition (a dependency down, a timeout): retry the job with backoff."""

    code: ClassVar[str] = "transient_error"


class FatalError(OpError):
    """A bug or a broken deployment: fail the job and alert an operator."""

    code: ClassVar[str] = "fatal_error"
