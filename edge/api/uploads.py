"""Uploads: image bytes in, an upload id out."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from contracts import media
from contracts.api import Upload
from edge.api.deps import Owner, ServicesDep
from edge.errors import PayloadTooLargeError, UnknownUploadError
from edge.services.uploads import upload_view


@post("/v1/uploads", status_code=201, summary="Upload an image", request_max_body_size=None)
async def create_upload(
    request: Request[object, object, State], services: ServicesDep, owner: Owner
) -> Response[bytes]:
    """Send the image bytes as the body. Any ``Content-Type`` is accepted and ignored: the
    type is read from the bytes, and the answer's ``media_type`` is the one found there.

    Supported: JPEG, PNG (also APNG), WebP (also animated), GIF, TIFF (also multi-page), BMP,
    AVIF and FITS. Answers 201 with the upload's id, size, SHA-256, sniffed media type and
    dimensions; use the id as a job input. Refusals are RFC 9457 problem documents whose
    ``detail`` says what was found, and nothing of a refused upload is kept:

    - 413 ``payload-too-large``: the body is over the upload limit.
    - 415 ``unsupported-media``: the body is empty or is not a supported image (SVG, HTML,
      XML, PDF, archives, executables, HEIC... the detail names what it looks like).
    - 422 ``image-rejected``: the image is truncated or corrupt, has data after its end (an
      appended archive or page: polyglots are refused), hides HTML or script in a comment,
      or its headers declare more pixels, a longer side or more frames than the limits allow
      (checked before any decode).

    Damage only a decode can find (bad compressed data) is accepted here; jobs using the
    upload then fail with a usage error.

    A FITS upload is also described as one of your datasets (``GET /v1/datasets``, its id
    the upload's) by a ``catalogue`` job submitted for you: its id is ``catalogue_job``.
    """
    limit = services.settings.limits.max_upload_bytes
    if (request.content_length or 0) > limit:
        raise PayloadTooLargeError(f"uploads are limited to {limit} bytes")
    upload = await services.uploads.create(owner, request.stream())
    return Response(
        msgspec.json.encode(upload),
        status_code=201,
        media_type=media.JSON,
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
