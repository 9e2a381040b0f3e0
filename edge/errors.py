"""Errors the edge answers with, rendered as RFC 9457 problem documents by one handler.

Every deliberate refusal is a ``PixfleetError`` subclass carrying its status, type slug and
title. Litestar's own HTTP exceptions (413, 404 route, 405, request validation) and outages of
PostgreSQL, Redis or RabbitMQ (503 + Retry-After) are rendered the same way. Anything else is a
500: a bug, logged with its traceback. Every 503 carries ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from contracts import media
from contracts.api import FieldError, Problem
from pixfleet.outages import is_outage

log = logging.getLogger(__name__)

PROBLEM_JSON = media.PROBLEM_JSON
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


class DatasetNotFoundError(PixfleetError):
    """``GET /v1/datasets/{id}`` of a dataset that does not exist or is not the caller's (the
    registry's ``UnknownDatasetError``)."""

    status, type, title = 404, "unknown-dataset", "No such dataset"


class UnknownDatasetInputError(PixfleetError):
    """A job names a dataset that does not exist or is not the caller's (the registry's
    ``UnknownDatasetError``)."""

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


class InternalServerError(PixfleetError):
    status, type, title = 500, "internal-error", "Internal server error"


def _render(
    request: Request[Any, Any, Any], problem: Problem, headers: dict[str, str]
) -> Response[bytes]:
    problem.instance = request.url.path
    if problem.status == 503 and "Retry-After" not in headers:
        headers = {**headers, "Retry-After": str(getattr(request.app.state, "retry_after", 5))}
    return Response(
        msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _refusal(request: Request[Any, Any, Any], exc: PixfleetError) -> Response[bytes]:
    problem = Problem(
        type=TYPE_BASE + exc.type,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        errors=exc.errors,
    )
    return _render(request, problem, exc.headers)


def _http_problem(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own HTTP exceptions (unknown route, 405, 413, request validation)."""
    if exc.status_code == 413:
        return _refusal(request, PayloadTooLargeError())
    errors = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = [
            FieldError(message=str(e.get("message")), path=_field_path(e))
            for e in exc.extra
            if isinstance(e, dict)
        ] or None
    problem = Problem(
        type="about:blank",
        title=exc.detail or "HTTP error",
        status=exc.status_code,
        errors=errors,
    )
    return _render(request, problem, dict(exc.headers or {}))


def _field_path(error: dict[str, Any]) -> str | None:
    key, source = error.get("key"), error.get("source")
    if not key:
        return None
    return f"{source}.{key}" if source else str(key)


def problem_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Render any exception as a problem document: the edge's one exception handler.

    A refusal renders itself; an outage is a 503 with Retry-After, logged in one line; anything
    else is a bug: logged with its traceback, answered with a 500 that reveals nothing of it.
    """
    if isinstance(exc, PixfleetError):
        return _refusal(request, exc)
    if isinstance(exc, HTTPException):
        if exc.status_code >= 500 and exc.status_code != 503:  # Litestar's own 500s are bugs too
            log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _http_problem(request, exc)
    if is_outage(exc):
        log.warning("backing service unavailable on %s: %r", request.url.path, exc)
        return _refusal(request, ServiceUnavailableError(f"{type(exc).__name__}: try again later"))
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _refusal(request, InternalServerError("an unexpected error; it is logged"))


def exception_handlers() -> ExceptionHandlersMap:
    """Litestar's handler map: every exception goes to ``problem_handler``."""
    return {Exception: problem_handler}
