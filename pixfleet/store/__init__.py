"""Object store of uploads and results: a local directory or an S3 bucket, one interface.

Imported by the edge and the workers. Must not import litestar or the numeric stack, and
imports aioboto3 only when an S3 store is opened (see ``pixfleet.store.s3``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pixfleet.store.base import (
    InvalidKeyError,
    KeyConflictError,
    ObjectNotFoundError,
    ObjectStore,
    StoreBackendError,
    StoredObject,
    StoreError,
    validate_key,
    validate_prefix,
)
from pixfleet.store.files import FileStore
from pixfleet.store.s3 import S3Store

if TYPE_CHECKING:
    from contracts.settings import StoreSettings

__all__ = [
    "FileStore",
    "InvalidKeyError",
    "KeyConflictError",
    "ObjectNotFoundError",
    "ObjectStore",
    "S3Store",
    "StoreBackendError",
    "StoreError",
    "StoredObject",
    "open_store",
    "validate_key",
    "validate_prefix",
]


async def open_store(settings: StoreSettings) -> ObjectStore:
    """Open the configured store: create the file store's directories, or connect to S3 and
    create the bucket if it is missing. Close it with ``await store.close()``.

    Raises:
        OSError: the file store's root cannot be created.
        StoreBackendError: S3 cannot be reached or refuses access to the bucket.
    """
    if settings.backend == "s3":
        return await S3Store.open(settings)
    store = FileStore(
        Path(settings.root),
        signing_key=settings.signing_key.reveal(),
        public_url=settings.public_url,
        url_ttl=settings.url_ttl,
    )
    await store.open()
    return store
