"""Uploads: stream to a spool file while hashing, sniff the type from the bytes, check the
limits from the headers and that the file is one whole image, then move it into the store.

The declared ``Content-Type`` plays no part: the bytes decide. Refusals (see ``create``) leave
nothing behind: the spool file is removed, no object is stored and no row is written. What
only a decode can tell (a corrupt Huffman table, bad pixel data) is accepted here and fails
in the worker. A stored FITS upload is then submitted, on its owner's behalf, to a
``catalogue`` job that records it as the owner's dataset (see ``UploadService.catalogue``).
Never imports pixel libraries: ``pixfleet.sniff`` reads headers only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import msgspec

from contracts import names
from contracts.api import Upload
from contracts.media import FITS
from contracts.settings import LimitsSettings
from edge.errors import ImageRejectedError, PayloadTooLargeError, UnsupportedMediaError
from edge.settings import EdgeSettings
from edge.store.uploads import UploadStore
from pixfleet.ids import uuid7
from pixfleet.sniff import (
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    check_complete,
    inspect_image,
)
from pixfleet.store import ObjectStore

if TYPE_CHECKING:
    from edge.services.jobs import JobService

log = logging.getLogger(__name__)


def upload_view(row: object) -> Upload:
    r = row  # asyncpg.Record
    return Upload(
        id=r["id"],  # type: ignore[index]
        size=r["size"],  # type: ignore[index]
        sha256=r["sha256"],  # type: ignore[index]
        media_type=r["media_type"],  # type: ignore[index]
        width=r["width"],  # type: ignore[index]
        height=r["height"],  # type: ignore[index]
        created_at=r["created_at"],  # type: ignore[index]
        expires_at=r["expires_at"],  # type: ignore[index]
    )


def examine(path: Path, limits: LimitsSettings) -> ImageInfo:
    """Sniff an upload, check its headers against ``limits`` and check it is one whole image.

    Blocking (it reads the file): run it in a thread.

    Raises:
        NotAnImageError, CorruptImageError, ImageTooLargeError: see ``pixfleet.sniff``.
        OSError: the spool file cannot be read.
    """
    info = inspect_image(
        path,
        max_pixels=limits.max_pixels,
        max_side=limits.max_side,
        max_frames=limits.max_frames,
    )
    check_complete(path, info.media_type)
    return info


class UploadService:
    """Accept image uploads; have each FITS upload described as a dataset of its owner's."""

    def __init__(
        self,
        settings: EdgeSettings,
        uploads: UploadStore,
        store: ObjectStore,
        jobs: JobService | None = None,
    ) -> None:
        self.settings = settings
        self.uploads = uploads
        self.store = store
        self.jobs = jobs
        spool = Path(settings.store.root) / "tmp" if settings.store.backend == "file" else None
        if spool is not None:
            spool.mkdir(parents=True, exist_ok=True)
        self.spool_dir = str(spool) if spool else None

    async def create(self, owner: str, chunks: AsyncIterator[bytes]) -> Upload:
        """Store an upload and return its record.

        Raises:
            PayloadTooLargeError: more bytes than ``max_upload_bytes`` (413).
            UnsupportedMediaError: the upload is empty, or not an image of a supported format
                (markup, a document, an archive, an executable, an unsupported TIFF
                compression): 415, the detail says what the bytes look like.
            ImageRejectedError: the image is truncated or corrupt, goes on after its end
                (a polyglot), hides markup in its comments, or exceeds ``max_pixels``,
                ``max_side`` or ``max_frames`` (422).
        """
        limits = self.settings.limits
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.spool_dir)
        path = Path(name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limits.max_upload_bytes:
                        raise PayloadTooLargeError(
                            f"uploads are limited to {limits.max_upload_bytes} bytes"
                        )
                    digest.update(chunk)
                    f.write(chunk)
            if size == 0:
                raise UnsupportedMediaError("empty upload: the body has no bytes")
            try:
                info = await asyncio.to_thread(examine, path, limits)
            except NotAnImageError as e:
                raise UnsupportedMediaError(str(e)) from None
            except (CorruptImageError, ImageTooLargeError) as e:
                raise ImageRejectedError(str(e)) from None
            upload_id = uuid7()
            key = names.upload_object(upload_id)
            sha = digest.hexdigest()
            await self.store.put_file(key, path, info.media_type, sha256=sha, move=True)
            now = datetime.now(UTC)
            try:
                row = await self.uploads.insert(
                    upload_id=upload_id,
                    owner=owner,
                    object_key=key,
                    size=size,
                    sha256=sha,
                    media_type=info.media_type,
                    width=info.width,
                    height=info.height,
                    expires_at=now + timedelta(seconds=self.settings.upload_ttl),
                )
            except BaseException:
                await asyncio.shield(self.store.delete(key))
                raise
            upload = upload_view(row)
        finally:
            # Gone already when moved into place.
            await asyncio.to_thread(path.unlink, missing_ok=True)
        if upload.media_type == FITS:
            upload.catalogue_job = await self.catalogue(owner, upload.id)
        return upload

    async def catalogue(self, owner: str, upload_id: UUID) -> UUID | None:
        """Submit, as ``owner``, the ``catalogue`` job that records a FITS upload as a dataset;
        return its id, or None if it could not be submitted.

        The upload is stored whatever happens here: a refused or failed submission (the broker
        saturated, a backing service down) is logged, and the owner can submit the job later.
        """
        if self.jobs is None:
            return None
        body = msgspec.json.encode({"inputs": [upload_id], "pipeline": [{"op": "catalogue"}]})
        try:
            snap, _ = await self.jobs.submit(owner, body, None)
        except Exception:
            log.warning("could not submit the catalogue job of upload %s", upload_id, exc_info=True)
            return None
        return snap.id
