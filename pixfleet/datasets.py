"""The dataset catalogue: FITS files known by an id (the SODA ``ID``) and their sky footprints.

Two kinds of record share the ``datasets`` table (``contracts/migrations/003_datasets.sql``):

- public datasets, registered by an operator with ``pixfleet datasets add``: the file is read
  here (``worker.ops.catalogue.describe``, imported when called: astropy), must have a
  celestial WCS, and is copied to the store under ``datasets/<sha256>`` (one object for equal
  bytes under several ids). ``--owner`` makes a registered dataset visible to one owner only.
- users' FITS uploads: the edge runs the ``catalogue`` operation on each; its ``after`` hook,
  ``record_job_datasets``, runs in the worker parent and stores the records the operation
  wrote (id: the upload id). They use the upload's object, are visible to its owner alone,
  and go with the upload (expired: skipped; swept: deleted by the foreign key's cascade). An
  upload without a celestial WCS is recorded without footprint: found by id, never by sky.

Imported by the worker parent, the edge and the ``pixfleet`` command: the standard library,
msgspec, asyncpg, ``contracts`` and our store. Never astropy or numpy at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import msgspec

from contracts.astro import DatasetId
from contracts.datasets import FITS_MEDIA_TYPE, DatasetInfo, DatasetRecord
from pixfleet.store.base import file_sha256

if TYPE_CHECKING:
    from pixfleet.store import ObjectStore

__all__ = [
    "DatasetConflictError",
    "DatasetError",
    "DatasetRecord",
    "InvalidDatasetError",
    "UnknownDatasetError",
    "add_dataset",
    "list_datasets",
    "lookup",
    "record_job_datasets",
    "remove_dataset",
]

log = logging.getLogger(__name__)

DOCUMENT_SUFFIX = ".dataset.json"
"""The ``catalogue`` operation's outputs: ``<input>.dataset.json``, a ``DatasetInfo``."""

RECORD = "to_jsonb(d) - '{x,y,z}'::text[]"
"""A row of ``datasets d`` as one JSON document (decode it with ``decode_record``)."""
VISIBLE = "(d.owner IS NULL OR d.owner = $1) AND (d.expires_at IS NULL OR d.expires_at > now())"
"""The rows owner ``$1`` may see: public ones and their own live uploads."""

_COLUMNS = (
    "id, owner, upload_id, object_key, media_type, size, sha256, hdus, shape, bands, wcs,"
    " footprint, centre_ra, centre_dec, radius, expires_at"
)
_UPDATE = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*_COLUMNS.split(", ")[1:], "created_at"))
_OBJECTS_LOCK = 0x64617461  # "data": held while dataset objects are stored or collected
_record_decoder = msgspec.json.Decoder(DatasetRecord)
_info_decoder = msgspec.json.Decoder(DatasetInfo)


class DatasetError(Exception):
    """Base of the catalogue's errors."""


class InvalidDatasetError(DatasetError, ValueError):
    """The id is invalid, or the file is not a FITS image with a celestial WCS."""


class UnknownDatasetError(DatasetError, LookupError):
    """No dataset has this id."""


class DatasetConflictError(DatasetError):
    """The id belongs to a user's upload; a registered dataset cannot replace it."""


def object_key(sha256: str) -> str:
    """Where a registered dataset's bytes are stored: ``datasets/<sha256>``."""
    return f"datasets/{sha256}"


def check_id(dataset_id: str) -> str:
    """Return ``dataset_id`` if it is a valid dataset id.

    Raises:
        InvalidDatasetError: empty, over 256 characters, or not printable ASCII without
            spaces starting with a letter or digit.
    """
    try:
        return msgspec.convert(dataset_id, DatasetId)
    except msgspec.ValidationError as e:
        raise InvalidDatasetError(
            f"invalid dataset id {dataset_id!r}: 1 to 256 printable ASCII characters without"
            " spaces, starting with a letter or a digit"
        ) from e


def decode_record(doc: str | bytes) -> DatasetRecord:
    """A row selected as ``RECORD``, as a ``DatasetRecord``."""
    return _record_decoder.decode(doc)


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def _info_params(info: DatasetInfo) -> tuple[Any, ...]:
    """``hdus, shape, bands, wcs, footprint, centre_ra, centre_dec, radius`` for SQL."""
    return (
        _json(info.hdus),
        info.shape,
        _json(info.bands),
        _json(info.wcs),
        _json(info.footprint),
        info.centre_ra,
        info.centre_dec,
        info.radius,
    )


def _read(path: Path, dataset_id: str) -> tuple[DatasetInfo, int, str]:
    # Blocking (reads the whole file to hash it) and imports astropy: run in a thread. Imported
    # by name so that neither this module nor the type checker pulls in the numeric stack.
    from worker.errors import UsageError

    describe = importlib.import_module("worker.ops.catalogue").describe
    try:
        info: DatasetInfo = describe(path, dataset_id)
    except UsageError as e:
        raise InvalidDatasetError(f"{path}: {e.message}") from e
    return info, path.stat().st_size, file_sha256(path)


async def add_dataset(
    pool: asyncpg.Pool,
    store: ObjectStore,
    path: Path,
    dataset_id: str,
    owner: str | None = None,
) -> DatasetRecord:
    """Register the FITS file at ``path`` as dataset ``dataset_id``, replacing any registered
    dataset of that id in one transaction; public unless ``owner`` is given.

    The bytes are copied to ``datasets/<sha256>`` (skipped when already there); the object of
    a replaced version is deleted once no dataset refers to it.

    Raises:
        InvalidDatasetError: a bad id or owner; not a FITS file, no image HDU, or no
            celestial WCS (a registered dataset must have a footprint on the sky).
        DatasetConflictError: the id is a user's upload's.
        OSError: the file cannot be read.
        StoreError: the object store failed.
        asyncpg.PostgresError: the database failed.
    """
    check_id(dataset_id)
    if owner is not None and not owner.strip():
        raise InvalidDatasetError("an owner must not be empty")
    info, size, sha256 = await asyncio.to_thread(_read, path, dataset_id)
    if info.footprint is None:
        raise InvalidDatasetError(
            f"{path}: no image HDU has a celestial WCS (RA/Dec axes), so the file has no"
            " footprint on the sky; a registered dataset needs one"
        )
    key = object_key(sha256)
    previous: str | None = None
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _OBJECTS_LOCK)
            before = await conn.fetchrow(
                "SELECT object_key, upload_id FROM datasets WHERE id = $1 FOR UPDATE", dataset_id
            )
            if before is not None and before["upload_id"] is not None:
                raise DatasetConflictError(f"dataset id {dataset_id!r} is a user's upload")
            previous = None if before is None else before["object_key"]
            stored = await store.head(key)
            if stored is None or stored.sha256 != sha256:
                await store.put_file(key, path, FITS_MEDIA_TYPE, sha256=sha256)
            doc = await conn.fetchval(
                f"INSERT INTO datasets AS d ({_COLUMNS}) VALUES"
                " ($1, $2, NULL, $3, $4, $5, $6, $7::jsonb, $8, $9::jsonb, $10::jsonb,"
                " $11::jsonb, $12, $13, $14, NULL)"
                f" ON CONFLICT (id) DO UPDATE SET {_UPDATE} RETURNING {RECORD}",
                dataset_id,
                owner,
                key,
                FITS_MEDIA_TYPE,
                size,
                sha256,
                *_info_params(info),
            )
    except BaseException:
        if previous != key:  # the new object may now belong to nobody
            with contextlib.suppress(Exception):
                await asyncio.shield(_collect(pool, store, key))
        raise
    if previous is not None and previous != key:
        await _collect(pool, store, previous)
    return decode_record(doc)


async def _collect(pool: asyncpg.Pool, store: ObjectStore, key: str) -> None:
    """Delete a dataset object unless a dataset still refers to it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _OBJECTS_LOCK)
        used = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM datasets WHERE object_key = $1)", key
        )
        if not used:
            await store.delete(key)


async def list_datasets(pool: asyncpg.Pool, *, uploads: bool = False) -> list[DatasetRecord]:
    """Every registered dataset (and, with ``uploads``, users' upload records), by id."""
    where = "" if uploads else " WHERE d.upload_id IS NULL"
    rows = await pool.fetch(f"SELECT {RECORD} FROM datasets d{where} ORDER BY d.id")
    return [decode_record(r[0]) for r in rows]


async def remove_dataset(pool: asyncpg.Pool, store: ObjectStore, dataset_id: str) -> DatasetRecord:
    """Remove dataset ``dataset_id``; return what was removed. A registered dataset's object is
    deleted once no other id refers to it (an upload's object stays with the upload).

    Raises:
        UnknownDatasetError: no dataset has this id.
        StoreError: the object store failed (the record is gone; the object may remain).
    """
    doc = await pool.fetchval(
        f"DELETE FROM datasets d WHERE d.id = $1 RETURNING {RECORD}", dataset_id
    )
    if doc is None:
        raise UnknownDatasetError(f"no dataset has the id {dataset_id!r}")
    record = decode_record(doc)
    if record.upload_id is None:
        await _collect(pool, store, record.object_key)
    return record


async def lookup(pool: asyncpg.Pool, owner: str, ids: Iterable[str]) -> dict[str, asyncpg.Record]:
    """The datasets among ``ids`` that ``owner`` may use (public, or theirs and not expired),
    by id; the others are absent. Rows of ``id, owner, upload_id, object_key, media_type,
    size, sha256`` (what a worker needs to fetch the bytes)."""
    rows = await pool.fetch(
        "SELECT d.id, d.owner, d.upload_id, d.object_key, d.media_type, d.size, d.sha256"
        f" FROM datasets d WHERE {VISIBLE} AND d.id = ANY($2::text[])",
        owner,
        list(ids),
    )
    return {r["id"]: r for r in rows}


async def record_job_datasets(
    pool: asyncpg.Pool,
    owner: str,
    job_id: UUID | str,
    outputs: Sequence[tuple[str, str, str]],
) -> list[str]:
    """The ``catalogue`` operation's ``after`` hook: record the owner's uploads that the job
    described; return the ids recorded.

    ``outputs`` are the job's ``(path, name, media_type)`` files; each ``*.dataset.json`` among
    them is a ``DatasetInfo``. Only records whose id is a live upload of ``owner`` are stored
    (id: the upload id; size, digest, object and expiry: the upload's); others (a catalogue of
    a dataset or of an earlier result) are skipped. Re-running replaces an upload's record.

    Raises:
        OSError: an output file cannot be read.
        msgspec.ValidationError, msgspec.DecodeError: an output is not a ``DatasetInfo``.
        asyncpg.PostgresError: the database failed.
    """
    infos = []
    for path, _name, _media_type in outputs:
        if path.endswith(DOCUMENT_SUFFIX):
            infos.append(_info_decoder.decode(await asyncio.to_thread(Path(path).read_bytes)))
    recorded: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        for info in infos:
            upload_id = _as_uuid(info.id)
            if upload_id is None:
                log.info("job %s: %r is not an upload; not recorded", job_id, info.id)
            elif await _record_upload(conn, owner, upload_id, info):
                recorded.append(info.id)
            else:
                log.info("job %s: upload %s is gone or not %s's", job_id, info.id, owner)
    return recorded


async def _record_upload(conn: Any, owner: str, upload_id: UUID, info: DatasetInfo) -> bool:
    """Insert or replace the record of a live upload of ``owner``; False if there is none."""
    try:
        async with conn.transaction():  # a savepoint: one failure spares the job's others
            done = await conn.fetchval(
                f"INSERT INTO datasets AS d ({_COLUMNS})"
                " SELECT $1, u.owner, u.id, u.object_key, u.media_type, u.size, u.sha256,"
                " $4::jsonb, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10, $11, u.expires_at"
                " FROM uploads u WHERE u.id = $2 AND u.owner = $3 AND u.expires_at > now()"
                f" ON CONFLICT (id) DO UPDATE SET {_UPDATE}"
                " WHERE d.upload_id = EXCLUDED.upload_id RETURNING d.id",
                info.id,
                upload_id,
                owner,
                *_info_params(info),
            )
    except asyncpg.ForeignKeyViolationError:  # the sweeper removed the upload meanwhile
        return False
    return done is not None


def _as_uuid(text: str) -> UUID | None:
    """The upload id ``text`` names (its canonical form only), else None."""
    try:
        value = UUID(text)
    except ValueError:
        return None
    return value if str(value) == text else None
