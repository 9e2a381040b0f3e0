"""Uploads: image bytes in, an upload id out."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from contracts.api import Upload
from edge.api.deps import Owner, ServicesDep
from edge.errors import PayloadTooLargeError, UnknownUploadError
from edge.services.uploads import upload_view


@post("/v1/uploads", status_code=201, summary="Upload an image", request_max_body_size=None)
async def create_upload(
    request: Request[object, object, State], services: ServicesDep, owner: Owner
) -> Response[bytes]:
    """Send the image bytes as the body (any ``Content-Type``: the type is read from the bytes).

    Answers 201 with the upload's id, size, SHA-256, sniffed media type and dimensions. Use
    the id as a job input. Bodies over the upload limit get 413, non-images 415, images that
    are corrupt or over the pixel limit 422.
    """
    limit = services.settings.limits.max_upload_bytes
    if (request.content_length or 0) > limit:
        raise PayloadTooLargeError(f"uploads are limited to {limit} bytes")
    upload = await services.uploads.create(owner, request.stream())
    return Response(
        msgspec.json.encode(upload),
        status_code=201,
        media_type="application/json",
        headers={"Location": f"/v1/uploads/{upload.id}"},
    )


@get("/v1/uploads/{upload_id:uuid}", summary="Get an upload")
async def get_upload(upload_id: FromPath[UUID], services: ServicesDep, owner: Owner) -> Upload:
    """The record of one of your uploads."""
    row = await services.uploads.uploads.get(owner, upload_id)
    if row is None:
        raise UnknownUploadError(f"no upload {upload_id}")
    return upload_view(row)


ROUTES = [create_upload, get_upload]
