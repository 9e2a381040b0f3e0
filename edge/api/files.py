"""Signed downloads from the file store (S3 deployments redirect to S3 presigned URLs)."""

from __future__ import annotations

import time
from typing import Annotated

from litestar import get
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import File

from contracts import media
from edge.api.deps import ServicesDep
from edge.errors import InvalidSignatureError, UnknownResultError
from pixfleet.store.signing import verify


@get("/v1/files/{key:path}", summary="Download through a signed URL", include_in_schema=False)
async def download_file(
    key: FromPath[str],
    services: ServicesDep,
    exp: FromQuery[int],
    sig: FromQuery[str],
    name: Annotated[str | None, QueryParameter(required=False)] = None,
    media_type: Annotated[str | None, QueryParameter(name="type", required=False)] = None,
) -> File:
    """Serve an object of the file store if the URL's HMAC signature is valid and unexpired."""
    key = key.lstrip("/")
    secret = services.settings.store.signing_key.reveal()
    if not verify(key, exp, sig, secret, name, media_type, now=time.time()):
        raise InvalidSignatureError()
    path = services.resources.store.local_path(key)
    if path is None:
        raise UnknownResultError("the object no longer exists")
    return File(
        path=path,
        filename=name or path.name,
        media_type=media_type or media.OCTET_STREAM,
        content_disposition_type="attachment",
        headers={"Cache-Control": "private, max-age=60"},
    )


ROUTES = [download_file]
