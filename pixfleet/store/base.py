"""The object-store interface shared by the file and S3 backends: records, errors, key rules.

Imported by the edge and the workers: standard library and msgspec only (never aioboto3,
litestar or the numeric stack).
"""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path

import msgspec

MAX_KEY_BYTES = 1024
"""S3's limit on a key's UTF-8 length; the file store keeps the same rule."""


class StoredObject(msgspec.Struct, frozen=True):
    """An object as stored: its key, byte size, SHA-256 (hex) and media type."""

    key: str
    size: int
    sha256: str
    media_type: str


class StoreError(Exception):
    """Base class of object-store errors."""


class ObjectNotFoundError(StoreError):
    """No object has this key."""


class InvalidKeyError(StoreError, ValueError):
    """The key (or prefix) is not a safe relative path of non-empty segments."""


class KeyConflictError(StoreError):
    """File store only: a key is both an object and a prefix of others (``a`` and ``a/b``)."""


class StoreBackendError(StoreError):
    """The backend refused or failed a request (network, timeout, permission, server error)."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key.

    A key is ``/``-separated segments, none empty, ``.`` or ``..``, without backslash or NUL,
    at most 1024 bytes of UTF-8. The same key then means the same object in both backends, and
    the file store can join it to its root without escaping it.

    Raises:
        InvalidKeyError: the key breaks one of these rules.
    """
    if not key:
        raise InvalidKeyError("the key is empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: neither S3 nor a filesystem can store them
        raise InvalidKeyError("the key is not valid Unicode") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"the key is longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key or "\\" in key:
        raise InvalidKeyError("the key contains NUL or a backslash")
    if key.startswith("/"):
        raise InvalidKeyError("the key is an absolute path")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(f"the key has an empty, '.' or '..' segment: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a key, or a key followed by ``/``.

    An empty prefix is refused: deleting "everything" must not be one typo away.

    Raises:
        InvalidKeyError: the prefix is empty or its key part is invalid.
    """
    validate_key(prefix.removesuffix("/"))
    return prefix


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (blocking: call it in a thread).

    Raises:
        OSError: the file cannot be read (FileNotFoundError if it does not exist).
    """
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ObjectStore(abc.ABC):
    """Where uploads and results live. Every put is atomic: an object is complete or absent.

    Keys are checked by :func:`validate_key` in every method (``InvalidKeyError``).
    """

    @abc.abstractmethod
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
        """Store a file's bytes under ``key``, replacing any object there.

        ``sha256`` (hex), when given, is trusted (the caller hashed the bytes as it wrote them);
        otherwise it is computed. With ``move`` the caller gives the file up: on success it is
        gone (renamed into place when possible); on failure it is left where it was. With
        ``synced`` the caller has flushed the file's bytes to disk (``fsync``), so a store that
        renames it into place need not flush them again.

        Raises:
            FileNotFoundError: ``path`` does not exist (nothing is stored).
            InvalidKeyError: the key is invalid.
            KeyConflictError: file store only, the key conflicts with another key's prefix.
            StoreBackendError: the backend failed.
        """

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes, media_type: str) -> StoredObject:
        """Store ``data`` under ``key``, replacing any object there.

        Raises:
            InvalidKeyError: the key is invalid.
            KeyConflictError: file store only, the key conflicts with another key's prefix.
            StoreBackendError: the backend failed.
        """

    @abc.abstractmethod
    async def get_bytes(self, key: str) -> bytes:
        """Return an object's bytes (small objects: the whole object is held in memory).

        Raises:
            ObjectNotFoundError: no object has this key.
            InvalidKeyError: the key is invalid.
            StoreBackendError: the backend failed.
        """

    @abc.abstractmethod
    async def download(self, key: str, dest: Path) -> None:
        """Stream an object to ``dest`` (whose directory must exist), replacing it atomically.

        Raises:
            ObjectNotFoundError: no object has this key (``dest`` is left untouched).
            InvalidKeyError: the key is invalid.
            StoreBackendError: the backend failed.
        """

    @abc.abstractmethod
    def local_path(self, key: str) -> Path | None:
        """Path of the object's bytes if readable in place (file store), else None.

        Readers must not write to it. S3 always answers None.

        Raises:
            InvalidKeyError: the key is invalid.
        """

    @abc.abstractmethod
    async def head(self, key: str) -> StoredObject | None:
        """Return an object's record, or None if there is none.

        Raises:
            InvalidKeyError: the key is invalid.
            StoreBackendError: the backend failed.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete an object; a missing object is not an error.

        Raises:
            InvalidKeyError: the key is invalid.
            StoreBackendError: the backend failed.
        """

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (a string prefix, as in S3).

        Returns how many were deleted.

        Raises:
            InvalidKeyError: the prefix is empty or invalid.
            StoreBackendError: the backend failed (some objects may be deleted).
        """

    @abc.abstractmethod
    async def signed_url(
        self,
        key: str,
        *,
        filename: str | None = None,
        media_type: str | None = None,
        ttl: int | None = None,
    ) -> str:
        """A URL that downloads the object without credentials for ``ttl`` seconds.

        ``filename`` makes it an attachment of that name; ``media_type`` sets Content-Type.
        The default ``ttl`` is the store's ``url_ttl``. The object need not exist yet.

        Raises:
            InvalidKeyError: the key is invalid.
            StoreBackendError: the backend failed.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
