"""Object store on S3 or an S3-compatible server (MinIO, Ceph, moto), through aioboto3.

One session and one client per store, opened by :meth:`S3Store.open` and kept until
:meth:`S3Store.close`. aioboto3 and botocore are imported only when a store is opened: they
cost about half a second, and the file backend never needs them. Every call has connect and
read timeouts and a bounded number of retries. Media type and SHA-256 are stored as
``ContentType`` and ``Metadata={"sha256": ...}``. Must not import litestar or the numeric stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from contracts import media
from pixfleet.store.base import (
    ObjectNotFoundError,
    ObjectStore,
    StoreBackendError,
    StoredObject,
    file_sha256,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from contracts.settings import StoreSettings

log = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
_CHUNK = 1024 * 1024
_PART = 8 * 1024 * 1024  # multipart upload above this; S3 wants parts of 5 MiB or more
_HASH_IN_THREAD = 1024 * 1024  # hashing more than this would hold the loop for milliseconds


def _code(e: Exception) -> str:
    response: dict[str, Any] = getattr(e, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _translate(key: str | None = None) -> Iterator[None]:
    """Turn botocore errors into store errors (not-found ones into ObjectNotFoundError)."""
    from botocore.exceptions import (  # type: ignore[import-untyped]  # no py.typed
        BotoCoreError,
        ClientError,
    )

    try:
        yield
    except ClientError as e:
        if key is not None and _code(e) in _NOT_FOUND:
            raise ObjectNotFoundError(key) from e
        raise StoreBackendError(f"S3 request failed: {_code(e) or e}") from e
    except BotoCoreError as e:
        raise StoreBackendError(f"S3 request failed: {e}") from e


def _disposition(filename: str) -> str:
    """An attachment Content-Disposition: an ASCII fallback and the exact UTF-8 name."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class S3Store(ObjectStore):
    """Objects in one bucket; downloads through presigned GET URLs."""

    def __init__(self, client: Any, bucket: str, url_ttl: int, stack: AsyncExitStack) -> None:
        # Built by open(); the client is aiobotocore's, untyped.
        self.bucket = bucket
        self.url_ttl = url_ttl
        self._client = client
        self._stack = stack

    @classmethod
    async def open(
        cls,
        settings: StoreSettings,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        max_connections: int = 32,
    ) -> S3Store:
        """Open a client and create the bucket if it is missing.

        The timeouts (seconds) bound each attempt; ``max_attempts`` counts the first one.

        Raises:
            StoreBackendError: the server cannot be reached, or refuses access to the bucket.
        """
        import aioboto3  # type: ignore[import-untyped]  # lazy (module docstring); no py.typed
        from aiobotocore.config import AioConfig  # type: ignore[import-untyped]  # no py.typed

        session = aioboto3.Session(
            aws_access_key_id=settings.access_key_id.reveal() if settings.access_key_id else None,
            aws_secret_access_key=(
                settings.secret_access_key.reveal() if settings.secret_access_key else None
            ),
            region_name=settings.region,
        )
        options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": {"total_max_attempts": max_attempts, "mode": "standard"},
            "max_pool_connections": max_connections,
            "signature_version": "s3v4",
        }
        if settings.endpoint_url:
            # S3-compatible servers rarely serve virtual-hosted buckets on a bare endpoint.
            options["s3"] = {"addressing_style": "path"}
        config = AioConfig(**options)
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=settings.endpoint_url, config=config)
            )
            store = cls(client, settings.bucket, settings.url_ttl, stack)
            await store._ensure_bucket(settings.region)
        except BaseException:
            await stack.aclose()
            raise
        return store

    async def _ensure_bucket(self, region: str) -> None:
        with _translate():
            try:
                await self._client.head_bucket(Bucket=self.bucket)
                return
            except Exception as e:
                if _code(e) not in _NOT_FOUND:
                    raise
            log.info("creating bucket %s", self.bucket)
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if region != "us-east-1":  # the one region that refuses an explicit constraint
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                await self._client.create_bucket(**kwargs)
            except Exception as e:
                if _code(e) != "BucketAlreadyOwnedByYou":  # another process won the race
                    raise

    async def put_file(
        self,
        key: str,
        path: Path,
        media_type: str,
        *,
        sha256: str | None = None,
        move: bool = False,
        synced: bool = False,
    ) -> StoredObject:
        validate_key(key)
        if sha256 is None:
            sha256 = await asyncio.to_thread(file_sha256, path)
        size = (await asyncio.to_thread(path.stat)).st_size
        extra = {
            "Bucket": self.bucket,
            "Key": key,
            "ContentType": media_type,
            "Metadata": {"sha256": sha256},
        }
        with _translate(), path.open("rb") as f:
            if size <= _PART:
                body = await asyncio.to_thread(f.read)
                await self._client.put_object(Body=io.BytesIO(body), **extra)
            else:
                await self._put_parts(f, extra)
        if move:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return StoredObject(key=key, size=size, sha256=sha256, media_type=media_type)

    async def _put_parts(self, f: BinaryIO, extra: dict[str, Any]) -> None:
        # Not aioboto3's upload_file: it queues up to 100 parts and sends raw bytes (aiohttp
        # warns that this can stall the loop), and leaves its tasks running if cancelled. One
        # part at a time holds 8 MiB; the upload is invisible until completed.
        where = {"Bucket": extra["Bucket"], "Key": extra["Key"]}
        upload_id = (await self._client.create_multipart_upload(**extra))["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            while chunk := await asyncio.to_thread(f.read, _PART):
                number = len(parts) + 1
                response = await self._client.upload_part(
                    **where, UploadId=upload_id, PartNumber=number, Body=io.BytesIO(chunk)
                )
                parts.append({"ETag": response["ETag"], "PartNumber": number})
            await self._client.complete_multipart_upload(
                **where, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Aborting drops the stored parts (S3 bills them until then); shielded so a
            # cancelled put still cleans up. Its own failure must not hide the first error.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._client.abort_multipart_upload(**where, UploadId=upload_id)
                )
            raise

    async def put_bytes(self, key: str, data: bytes, media_type: str) -> StoredObject:
        validate_key(key)
        if len(data) > _HASH_IN_THREAD:
            sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        else:
            sha256 = hashlib.sha256(data).hexdigest()
        with _translate():
            await self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=io.BytesIO(data),  # aiohttp warns on large raw bytes bodies
                ContentType=media_type,
                Metadata={"sha256": sha256},
            )
        return StoredObject(key=key, size=len(data), sha256=sha256, media_type=media_type)

    async def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        with _translate(key):
            response = await self._client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            async with body:  # its __aenter__ returns the raw aiohttp response: keep ``body``
                data: bytes = await body.read()
        return data

    async def download(self, key: str, dest: Path) -> None:
        validate_key(key)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with _translate(key):
                response = await self._client.get_object(Bucket=self.bucket, Key=key)
                body = response["Body"]
                # Exiting releases the connection even if the copy stops half-way.
                async with body:
                    with part.open("xb") as f:
                        while chunk := await body.read(_CHUNK):
                            await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(os.replace, part, dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    async def head(self, key: str) -> StoredObject | None:
        validate_key(key)
        try:
            with _translate(key):
                response = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFoundError:
            return None
        return StoredObject(
            key=key,
            size=int(response["ContentLength"]),
            # Objects written by something else than this store carry no digest.
            sha256=str(response.get("Metadata", {}).get("sha256", "")),
            media_type=str(response.get("ContentType", media.OCTET_STREAM)),
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        with _translate():
            await self._client.delete_object(Bucket=self.bucket, Key=key)

    async def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        deleted = 0
        with _translate():
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not keys:
                    continue
                # A page holds at most 1000 keys, the most one DeleteObjects call accepts.
                response = await self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )
                errors = response.get("Errors", [])
                if errors:
                    raise StoreBackendError(f"S3 refused to delete {len(errors)} objects")
                deleted += len(keys)
        return deleted

    async def signed_url(
        self,
        key: str,
        *,
        filename: str | None = None,
        media_type: str | None = None,
        ttl: int | None = None,
    ) -> str:
        validate_key(key)
        params = {"Bucket": self.bucket, "Key": key}
        if filename is not None:
            params["ResponseContentDisposition"] = _disposition(filename)
        if media_type is not None:
            params["ResponseContentType"] = media_type
        with _translate():
            url: str = await self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self.url_ttl if ttl is None else ttl
            )
        return url

    async def close(self) -> None:
        await self._stack.aclose()
