"""Jobs: submit, read, list, abort, fetch results, stream events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage

from contracts import media
from contracts.api import FieldError
from contracts.jobs import JobPage, JobSnapshot, Phase
from edge.api.deps import Owner, Services, ServicesDep
from edge.errors import InvalidRequestError
from edge.openapi import SubmitJobOperation
from edge.services.events import job_event_stream

MAX_IDEMPOTENCY_KEY = 255
_encode = msgspec.json.encode


def _job_response(snap: JobSnapshot, status: int, replayed: bool = False) -> Response[bytes]:
    headers = {"Location": snap.href}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(_encode(snap), status_code=status, media_type=media.JSON, headers=headers)


@post("/v1/jobs", status_code=202, summary="Submit a job", operation_class=SubmitJobOperation)
async def create_job(request: Request[object, object, State]) -> Response[bytes]:
    """Accept a job (a pipeline of operations over uploaded inputs) and queue it.

    Answers 202 with the job snapshot and its URL in ``Location``. With an ``Idempotency-Key``
    header, repeating the same request returns the same job (header ``Idempotent-Replayed``);
    the same key with another body is a 422, and while the first request is still being
    accepted a 409.
    """
    # The hottest path reads what it needs itself: resolving dependencies and a header
    # parameter through Litestar's kwargs model costs about a tenth of the edge's CPU here.
    services: Services = request.app.state.services
    headers = request.headers
    owner = await services.auth.owner(headers.get("authorization"))
    key = headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequestError(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            errors=[FieldError(message="1 to 255 characters", path="Idempotency-Key")],
        )
    body = await request.body()
    snap, replayed = await services.jobs.submit(owner, body, key)
    return _job_response(snap, 202, replayed)


@get("/v1/jobs/{job_id:uuid}", summary="Get a job")
async def get_job(job_id: FromPath[UUID], services: ServicesDep, owner: Owner) -> Response[bytes]:
    """The job's current snapshot: phase, progress, results (with download links) or error."""
    return _job_response(await services.jobs.get(owner, job_id), 200)


@get("/v1/jobs", summary="List your jobs")
async def list_jobs(
    services: ServicesDep,
    owner: Owner,
    phase: Annotated[list[Phase] | None, QueryParameter(required=False)] = None,
    cursor: Annotated[UUID | None, QueryParameter(required=False)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> Response[bytes]:
    """Your jobs, newest first. Filter by ``phase`` (repeatable); page with ``cursor``."""
    items, nxt = await services.jobs.list_for_owner(owner, phase or [], cursor, limit)
    page = JobPage(items=items, next=str(nxt) if nxt else None)
    return Response(_encode(page), media_type=media.JSON)


@delete("/v1/jobs/{job_id:uuid}", status_code=200, summary="Abort a job")
async def abort_job(job_id: FromPath[UUID], services: ServicesDep, owner: Owner) -> Response[bytes]:
    """Abort a job that has not ended. A running job's worker process is killed."""
    return _job_response(await services.jobs.abort(owner, job_id), 200)


@get("/v1/jobs/{job_id:uuid}/results/{name:str}", summary="Download a result")
async def get_result(
    job_id: FromPath[UUID], name: FromPath[str], services: ServicesDep, owner: Owner
) -> Redirect:
    """Redirect (303) to a short-lived signed URL of one result."""
    key, media_type = await services.jobs.result(owner, job_id, name)
    url = await services.resources.store.signed_url(key, filename=name, media_type=media_type)
    return Redirect(url, status_code=303, headers={"Cache-Control": "no-store"})


@get("/v1/jobs/{job_id:uuid}/events", summary="Stream a job's events")
async def job_events(
    job_id: FromPath[UUID], services: ServicesDep, owner: Owner
) -> ServerSentEvent:
    """Server-Sent Events: a ``snapshot`` event, ``progress`` events while the job runs, and a
    final ``snapshot`` when it ends; then the stream closes."""
    await services.jobs.get(owner, job_id)  # 404 before the stream starts
    stream = job_event_stream(
        services.events,
        job_id,
        lambda: services.jobs.get(owner, job_id),
        services.settings.sse_keepalive,
    )

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        async for name, data in stream:
            if name is None:
                yield ServerSentEventMessage(comment="keepalive")
            else:
                yield ServerSentEventMessage(event=name, data=data)

    return ServerSentEvent(messages(), headers={"Cache-Control": "no-store"})


ROUTES = [create_job, get_job, list_jobs, abort_job, get_result, job_events]
