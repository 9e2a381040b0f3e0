"""Errors the edge answers with, rendered as RFC 9457 problem documents.

Every deliberate refusal is a ``PixfleetError`` subclass carrying its status, type slug and
title. Litestar's own HTTP exceptions (413, 404 route, 405) and outages of PostgreSQL, Redis or
RabbitMQ (503 + Retry-After) are rendered the same way. Anything else is a 500: a bug.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import asyncpg
import msgspec
import redis.exceptions
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from contracts.api import FieldError, Problem

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://pixfleet.dev/problems/"


class PixfleetError(Exception):
    """Base of every refusal; subclasses set ``status``, ``type`` and ``title``."""

    status: ClassVar[int] = 400
    type: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class InvalidRequestError(PixfleetError):
    status, type, title = 422, "invalid-request", "The request body is invalid"


class MalformedBodyError(PixfleetError):
    status, type, title = 400, "malformed-body", "The request body is not valid JSON"


class UnauthorizedError(PixfleetError):
    status, type, title = 401, "unauthorized", "A valid API key is required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="pixfleet"'})


class UnknownJobError(PixfleetError):
    status, type, title = 404, "unknown-job", "No such job"


class UnknownResultError(PixfleetError):
    status, type, title = 404, "unknown-result", "No such result"


class UnknownUploadError(PixfleetError):
    status, type, title = 422, "unknown-upload", "An input is not an upload of yours"


class UnknownDatasetInputError(PixfleetError):
    status, type, title = 422, "unknown-dataset", "A dataset input does not exist or is not yours"


class IdempotencyMismatchError(PixfleetError):
    status, type, title = 422, "idempotency-key-reused", "Idempotency key used with another body"


class IdempotencyInFlightError(PixfleetError):
    status, type, title = 409, "idempotency-key-in-flight", "A request with this key is running"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class JobNotAbortableError(PixfleetError):
    status, type, title = 409, "job-not-abortable", "The job has already ended"


class ResultNotReadyError(PixfleetError):
    status, type, title = 409, "result-not-ready", "The job has not completed"


class PayloadTooLargeError(PixfleetError):
    status, type, title = 413, "payload-too-large", "The request body is too large"


class UnsupportedMediaError(PixfleetError):
    status, type, title = 415, "unsupported-media", "The upload is not a supported image"


class ImageRejectedError(PixfleetError):
    status, type, title = 422, "image-rejected", "The image cannot be accepted"


class InvalidSignatureError(PixfleetError):
    status, type, title = 403, "invalid-signature", "The download link is invalid or expired"


class OverloadedError(PixfleetError):
    status, type, title = 503, "overloaded", "The service is shedding load"


class ServiceUnavailableError(PixfleetError):
    status, type, title = 503, "service-unavailable", "A backing service is unavailable"


_OUTAGES: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def _problem(
    request: Request[Any, Any, Any], problem: Problem, headers: dict[str, str]
) -> Response[bytes]:
    problem.instance = request.url.path
    return Response(
        msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def pixfleet_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Render a ``PixfleetError`` as a problem document."""
    assert isinstance(exc, PixfleetError)
    problem = Problem(
        type=TYPE_BASE + exc.type,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        errors=exc.errors,
    )
    return _problem(request, problem, exc.headers)


def http_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Render Litestar's own HTTP exceptions (unknown route, 405, 413) as problem documents."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:
        return pixfleet_error_handler(request, PayloadTooLargeError())
    problem = Problem(
        type="about:blank",
        title=exc.detail or "HTTP error",
        status=exc.status_code,
    )
    return _problem(request, problem, dict(exc.headers or {}))


def outage_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A backing service is down or timed out: 503 with Retry-After, logged without a trace."""
    retry_after = str(getattr(request.app.state, "retry_after", 5))
    log.warning("backing service unavailable on %s: %r", request.url.path, exc)
    err = ServiceUnavailableError(f"{type(exc).__name__}: try again later")
    err.headers["Retry-After"] = retry_after
    return pixfleet_error_handler(request, err)


def exception_handlers() -> ExceptionHandlersMap:
    handlers: ExceptionHandlersMap = {
        PixfleetError: pixfleet_error_handler,
        HTTPException: http_exception_handler,
    }
    for exc in _OUTAGES:
        handlers[exc] = outage_handler
    return handlers
