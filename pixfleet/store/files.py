"""Object store on a local filesystem, for development and single-host deployments.

Layout under ``root``::

    objects/<key>            relative symlink to its blob (the root can move)
    blobs/<xx>/<id>/data     the bytes
    blobs/<xx>/<id>/meta     the StoredObject as JSON

A put fills a fresh blob directory (data and meta, both fsynced), then publishes it with one
``os.replace`` of the key's symlink. A reader resolves the link once and finds a complete,
immutable (data, meta) pair, or nothing: it never sees data without its metadata, nor an
overwrite's new metadata with the old bytes (a sidecar next to the data could not promise
that). The replaced blob is removed after the swap; a crash in between, or puts of one key
racing in two processes, can leave an unreferenced blob directory: wasted space, no harm.
Unlike S3, a key cannot be both an object and a prefix of another (``a`` and ``a/b``):
``KeyConflictError``. Needs a POSIX filesystem (symlinks, atomic rename).

Blocking work runs in threads. Imports the standard library and msgspec only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import msgspec

from pixfleet.store.base import (
    InvalidKeyError,
    KeyConflictError,
    ObjectNotFoundError,
    ObjectStore,
    StoredObject,
    file_sha256,
    validate_key,
    validate_prefix,
)
from pixfleet.store.signing import sign

T = TypeVar("T")

_MAX_SEGMENT_BYTES = 255  # NAME_MAX of common filesystems
_RESOLVE_ATTEMPTS = 3  # a concurrent overwrite can remove the blob a reader just resolved


def _write_new(path: Path, data: bytes) -> None:
    with path.open("xb") as f:
        f.write(data)


def _fsync(path: Path) -> None:
    # Without it a crash after the rename may publish a link to an empty or short file.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(ObjectStore):
    """Objects as files under ``root``; downloads through URLs signed for the edge."""

    def __init__(self, root: Path, signing_key: str, public_url: str, url_ttl: int) -> None:
        # abspath, not resolve: normalised once so links compare textually, symlinks kept
        self.root = Path(os.path.abspath(root))
        self.url_ttl = url_ttl
        self._objects = self.root / "objects"
        self._blobs = self.root / "blobs"
        self._signing_key = signing_key
        self._public_url = public_url.rstrip("/")
        # Serialises "read the old link, swap it" within this process, so two racing puts
        # or a put and a delete cannot leave an unreferenced blob behind.
        self._swap = threading.Lock()

    async def open(self) -> None:
        """Create the store's directories, so a bad root fails at startup.

        Raises:
            OSError: the directories cannot be created.
        """
        for path in (self._objects, self._blobs):
            await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------

    def _link(self, key: str) -> Path:
        validate_key(key)
        if any(len(s.encode()) > _MAX_SEGMENT_BYTES for s in key.split("/")):
            raise InvalidKeyError(f"a key segment is longer than {_MAX_SEGMENT_BYTES} bytes")
        return self._objects.joinpath(key)

    def _blob_of(self, link: Path) -> Path | None:
        """The blob directory a link points to, or None (no link, or not one of ours)."""
        try:
            target = os.readlink(link)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.EINVAL:  # a directory: a prefix of other keys, not an object
                return None
            raise
        blob = Path(os.path.normpath(link.parent / target))
        return blob if blob.parent.parent == self._blobs else None

    def _resolved(self, key: str, read: Callable[[Path], T]) -> T:
        """``read(blob)`` of the key's current blob, retried if an overwrite removed it."""
        link = self._link(key)
        for _ in range(_RESOLVE_ATTEMPTS):
            blob = self._blob_of(link)
            if blob is None:
                break
            try:
                return read(blob)
            except FileNotFoundError:
                if blob.exists():  # the blob is intact: the error is about something else
                    raise
        raise ObjectNotFoundError(key)

    # -- writing -----------------------------------------------------------------------

    def _put(
        self,
        key: str,
        media_type: str,
        src: Path | bytes,
        sha256: str | None,
        move: bool,
        synced: bool,
    ) -> StoredObject:
        link = self._link(key)
        self._check_parents(link)
        blob_id = uuid.uuid4().hex
        blob = self._blobs / blob_id[:2] / blob_id
        blob.mkdir(parents=True)
        data = blob / "data"
        moved = False
        try:
            if not isinstance(src, Path):
                _write_new(data, src)
            elif move:
                moved = self._move_or_copy(src, data)
            else:
                shutil.copyfile(src, data)
            obj = StoredObject(
                key=key,
                size=data.stat().st_size,
                sha256=sha256 if sha256 is not None else file_sha256(data),
                media_type=media_type,
            )
            _write_new(blob / "meta", msgspec.json.encode(obj))
            if not (synced and moved):  # a renamed file keeps the bytes its writer flushed
                _fsync(data)
            _fsync(blob / "meta")
            old = self._publish(link, blob)
        except BaseException:
            if moved and isinstance(src, Path):  # give the caller its file back
                with contextlib.suppress(OSError):
                    os.replace(data, src)
            shutil.rmtree(blob, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if move and not moved and isinstance(src, Path):
            src.unlink(missing_ok=True)  # copied across filesystems: the caller gave it up
        return obj

    @staticmethod
    def _move_or_copy(src: Path, data: Path) -> bool:
        try:
            os.rename(src, data)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.copyfile(src, data)
            return False
        return True

    def _check_parents(self, link: Path) -> None:
        # A parent that is a link is an object: creating "a/b" inside it would write into
        # the blob directory of "a".
        path = self._objects
        for part in link.relative_to(self._objects).parts[:-1]:
            path = path / part
            if path.is_symlink():
                raise KeyConflictError(f"{part!r} is an object, not a prefix")

    def _publish(self, link: Path, blob: Path) -> Path | None:
        """Point ``link`` at ``blob`` atomically; return the blob it replaced."""
        staged = blob / "link"
        os.symlink(os.path.relpath(blob, link.parent), staged)
        for attempt in range(_RESOLVE_ATTEMPTS):
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                with self._swap:
                    old = self._blob_of(link)
                    os.replace(staged, link)
            except FileNotFoundError:  # a concurrent delete removed the emptied parent
                if attempt == _RESOLVE_ATTEMPTS - 1:
                    raise
                continue
            except IsADirectoryError:
                raise KeyConflictError(f"{link.name!r} is a prefix of other keys") from None
            return old
        raise AssertionError("unreachable")  # pragma: no cover

    def _delete(self, key: str) -> bool:
        link = self._link(key)
        with self._swap:
            blob = self._blob_of(link)
            if blob is None:
                return False
            try:
                link.unlink()
            except FileNotFoundError:  # deleted by another process
                return False
        shutil.rmtree(blob, ignore_errors=True)
        self._prune(link.parent)
        return True

    def _prune(self, directory: Path) -> None:
        # Empty prefix directories would pile up (one per job); a put racing with this
        # recreates its parent (see _publish).
        while directory != self._objects:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _keys_under(self, directory: Path) -> Iterator[str]:
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                yield path.relative_to(self._objects).as_posix()
            elif entry.is_dir(follow_symlinks=False):
                yield from self._keys_under(path)

    def _delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        # Only the directory holding the prefix's last segment can contain matches.
        head, _, _ = prefix.rpartition("/")
        start = self._objects.joinpath(head) if head else self._objects
        keys = [k for k in self._keys_under(start) if k.startswith(prefix)]
        return sum(self._delete(k) for k in keys)

    @staticmethod
    def _copy_out(blob: Path, dest: Path) -> None:
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(blob / "data", part)
            os.replace(part, dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    # -- ObjectStore -------------------------------------------------------------------

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
        return await asyncio.to_thread(self._put, key, media_type, path, sha256, move, synced)

    async def put_bytes(self, key: str, data: bytes, media_type: str) -> StoredObject:
        return await asyncio.to_thread(self._put, key, media_type, data, None, False, False)

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self._resolved, key, lambda b: (b / "data").read_bytes())

    async def download(self, key: str, dest: Path) -> None:
        await asyncio.to_thread(self._resolved, key, lambda b: self._copy_out(b, dest))

    def local_path(self, key: str) -> Path | None:
        # Called on the loop: one readlink and one stat, not worth a thread.
        blob = self._blob_of(self._link(key))
        if blob is None or not (blob / "data").is_file():
            return None
        return blob / "data"

    async def head(self, key: str) -> StoredObject | None:
        def read(blob: Path) -> StoredObject:
            return msgspec.json.decode((blob / "meta").read_bytes(), type=StoredObject)

        try:
            return await asyncio.to_thread(self._resolved, key, read)
        except ObjectNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_prefix, prefix)

    async def signed_url(
        self,
        key: str,
        *,
        filename: str | None = None,
        media_type: str | None = None,
        ttl: int | None = None,
    ) -> str:
        validate_key(key)
        exp = int(time.time()) + (self.url_ttl if ttl is None else ttl)
        sig = sign(key, exp, self._signing_key, filename, media_type)
        url = f"{self._public_url}/v1/files/{quote(key, safe='/')}?exp={exp}&sig={sig}"
        if filename is not None:
            url += f"&name={quote(filename, safe='')}"
        if media_type is not None:
            url += f"&type={quote(media_type, safe='')}"
        return url

    async def close(self) -> None:
        """Nothing to release: files are opened per call."""
