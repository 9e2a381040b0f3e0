"""HTTP API bodies: job requests, uploads and RFC 9457 problem documents.

Request Structs forbid unknown fields; constraints live in ``Annotated[..., Meta()]`` aliases.
Imports msgspec and the standard library only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar
from uuid import UUID

import msgspec

from contracts.astro import DatasetId
from contracts.jobs import PriorityClass
from contracts.opbase import Op

OpT = TypeVar("OpT")

RunId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w.:-]+$")]
Seconds = Annotated[int, msgspec.Meta(ge=1, description="Seconds")]


class JobRequest(msgspec.Struct, Generic[OpT], forbid_unknown_fields=True, kw_only=True):
    """A job: one operation pipeline applied to each of its inputs.

    The edge decodes ``JobRequest[<the catalogue's op union>]``; ``JobRequest[Op]`` in the
    schema (``contracts/schema/JobRequest.json``) lists the built-in operations.
    """

    inputs: Annotated[list[UUID], msgspec.Meta(description="Upload ids")] = []
    """Empty (with no ``datasets``) only for a pipeline of one ``archive`` of earlier results."""
    datasets: Annotated[
        list[DatasetId],
        msgspec.Meta(max_length=1000, description="Dataset ids (the SODA ID), after the uploads"),
    ] = []
    """Catalogue datasets (``GET /v1/datasets``) used as inputs after the uploads, in order."""
    pipeline: Annotated[list[OpT], msgspec.Meta(min_length=1)]
    """Applied to each input in order; may end in a ``branch`` and then an ``archive``."""
    priority: PriorityClass = PriorityClass.normal
    run_id: RunId | None = None
    execution_duration: Seconds | None = None
    """Execution time limit; the server's default when absent, capped by its maximum."""


class Upload(msgspec.Struct, kw_only=True):
    """A stored upload, usable as a job input by its owner."""

    id: UUID
    size: int
    sha256: str
    media_type: str
    width: int | None = None
    height: int | None = None
    created_at: datetime
    expires_at: datetime
    catalogue_job: UUID | None = None
    """A FITS upload's ``catalogue`` job, submitted for you: once it completes, the file is a
    dataset of yours (``GET /v1/datasets/{id}``, id: the upload id). Absent for other images,
    and when the job could not be submitted (submit one yourself)."""


class FieldError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a request body is invalid."""

    message: str
    path: str | None = None


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


__all__ = ["FieldError", "JobRequest", "Op", "Problem", "Upload"]
