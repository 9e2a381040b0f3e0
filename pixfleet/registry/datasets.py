"""The dataset registry: FITS files known by an id (the SODA ``ID``) and their sky footprints.
Every statement on the ``datasets`` table is here, for the edge (``GET /v1/datasets``, job
inputs), the worker (fetching inputs, recording catalogued uploads) and ``pixfleet datasets``.

Two kinds of record share the table (``contracts/migrations/003_datasets.sql``):

- public datasets, registered by an operator with ``pixfleet datasets add``: the file is
  described by the caller's ``describe`` (the command passes the ``catalogue`` operation's,
  which reads it with astropy), must have a celestial WCS, and is copied to the store under
  ``names.dataset_object(sha256)`` (one object for equal bytes under several ids).
  ``--owner`` makes a registered dataset visible to one owner only.
- users' FITS uploads: the edge runs the ``catalogue`` operation on each; its ``after`` hook,
  ``record_job_datasets``, runs in the worker parent and stores the records the operation
  wrote (id: the upload id). They use the upload's object, are visible to its owner alone,
  and go with the upload (expired: skipped; swept: deleted by the foreign key's cascade). An
  upload without a celestial WCS is recorded without footprint: found by id, never by sky.

Imports the standard library, msgspec, asyncpg, ``contracts`` and our store: never edge,
worker or cli, never astropy or numpy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import msgspec

from contracts import media, names
from contracts.astro import DatasetId
from contracts.datasets import DatasetInfo, DatasetRecord
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
    "by_id",
    "check_visible",
    "get",
    "list_datasets",
    "lookup",
    "near",
    "record_job_datasets",
    "remove_dataset",
]

log = logging.getLogger(__name__)

DOCUMENT_SUFFIX = ".dataset.json"
"""The ``catalogue`` operation's outputs: ``<input>.dataset.json``, a ``DatasetInfo``."""
PREFILTER_MARGIN = 1e-5
"""Degrees added to the sky prefilter's reach: float rounding must never drop a true overlap."""

Vector = tuple[float, float, float]
"""A unit vector of the sphere (a position on the sky)."""
Describe = Callable[[Path, str], DatasetInfo]
"""Reads a FITS file as dataset ``id`` (blocking). Raises ``InvalidDatasetError``."""

_RECORD = "to_jsonb(d) - '{x,y,z}'::text[]"  # a row of ``datasets d`` as one JSON document
_VISIBLE = "(d.owner IS NULL OR d.owner = $1) AND (d.expires_at IS NULL OR d.expires_at > now())"
_COLUMNS = (
    "id, owner, upload_id, object_key, media_type, size, sha256, hdus, shape, bands, wcs,"
    " footprint, centre_ra, centre_dec, radius, expires_at"
)
_UPDATE = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*_COLUMNS.split(", ")[1:], "created_at"))
_OBJECTS_LOCK = 0x64617461  # "data": held while dataset objects are stored or collected
_DOT = "(d.x * $2::float8 + d.y * $3::float8 + d.z * $4::float8)"
# A dataset can overlap the circle (q, r) only if its centre lies within r + its radius of q:
# a declination band wide enough for the largest radius (an index range), then the exact
# bound on the dot product of the unit vectors (no RA wrap, no trouble at the poles).
_NEAR = f"""
SELECT {_RECORD}, {_DOT} AS dot
FROM datasets d
WHERE {_VISIBLE}
  AND d.centre_dec BETWEEN $5::float8 - $6::float8 - (SELECT max(radius) FROM datasets)
                       AND $5::float8 + $6::float8 + (SELECT max(radius) FROM datasets)
  AND {_DOT} >= cos(radians(least(180.0, $6::float8 + d.radius)))
  AND ($7::float8 IS NULL OR {_DOT} < $7 OR ({_DOT} = $7 AND d.id > $8::text))
ORDER BY dot DESC, d.id
LIMIT $9
"""
_record_decoder = msgspec.json.Decoder(DatasetRecord)
_info_decoder = msgspec.json.Decoder(DatasetInfo)


class DatasetError(Exception):
    """Base of the registry's errors."""


class InvalidDatasetError(DatasetError, ValueError):
    """The id is invalid, or the file is not a FITS image with a celestial WCS."""


class UnknownDatasetError(DatasetError, LookupError):
    """No dataset has these ids, or none that the asking owner may see (``ids``, in order)."""

    def __init__(self, *ids: str) -> None:
        super().__init__(*ids)
        self.ids = ids

    def __str__(self) -> str:
        return f"no dataset has the id{'s' if len(self.ids) > 1 else ''} " + ", ".join(
            map(repr, self.ids)
        )


class DatasetConflictError(DatasetError):
    """The id belongs to a user's upload; a registered dataset cannot replace it."""


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


def _decode(doc: str | bytes) -> DatasetRecord:
    return _record_decoder.decode(doc)


# -- reads ---------------------------------------------------------------------------------


async def get(pool: asyncpg.Pool, owner: str, dataset_id: str) -> DatasetRecord:
    """Dataset ``dataset_id`` if ``owner`` may see it (public, or theirs and not expired).

    Raises:
        UnknownDatasetError: no such dataset that ``owner`` may see.
    """
    doc = await pool.fetchval(
        f"SELECT {_RECORD} FROM datasets d WHERE {_VISIBLE} AND d.id = $2", owner, dataset_id
    )
    if doc is None:
        raise UnknownDatasetError(dataset_id)
    return _decode(doc)


async def check_visible(pool: asyncpg.Pool, owner: str, ids: Sequence[str]) -> None:
    """Check that ``owner`` may use every dataset of ``ids`` (as job inputs).

    Raises:
        UnknownDatasetError: the ids that do not exist or that ``owner`` may not see.
    """
    rows = await pool.fetch(
        f"SELECT d.id FROM datasets d WHERE {_VISIBLE} AND d.id = ANY($2::text[])",
        owner,
        list(ids),
    )
    visible = {r[0] for r in rows}
    unseen = [d for d in ids if d not in visible]
    if unseen:
        raise UnknownDatasetError(*unseen)


async def lookup(pool: asyncpg.Pool, owner: str, ids: Iterable[str]) -> dict[str, asyncpg.Record]:
    """The datasets among ``ids`` that ``owner`` may use (public, or theirs and not expired),
    by id; the others are absent. Rows of ``id, owner, upload_id, object_key, media_type,
    size, sha256`` (what a worker needs to fetch the bytes)."""
    rows = await pool.fetch(
        "SELECT d.id, d.owner, d.upload_id, d.object_key, d.media_type, d.size, d.sha256"
        f" FROM datasets d WHERE {_VISIBLE} AND d.id = ANY($2::text[])",
        owner,
        list(ids),
    )
    return {r["id"]: r for r in rows}


async def by_id(
    pool: asyncpg.Pool, owner: str, after: str | None, limit: int
) -> list[DatasetRecord]:
    """Up to ``limit`` datasets ``owner`` may see in id order, those after ``after``."""
    rows = await pool.fetch(
        f"SELECT {_RECORD} FROM datasets d WHERE {_VISIBLE}"
        " AND ($2::text IS NULL OR d.id > $2) ORDER BY d.id LIMIT $3",
        owner,
        after,
        limit,
    )
    return [_decode(r[0]) for r in rows]


async def near(
    pool: asyncpg.Pool,
    owner: str,
    centre: Vector,
    dec: float,
    radius: float,
    after: tuple[float, str] | None,
    limit: int,
) -> list[tuple[DatasetRecord, float]]:
    """Up to ``limit`` datasets ``owner`` may see whose centre lies within ``radius`` plus
    their own radius of ``centre`` (a unit vector; ``dec`` its declination, degrees), nearest
    first, each with the cosine of its distance; those after ``after`` (cosine, id) in that
    order. The candidates of an exact overlap test: none that overlaps is left out."""
    dot, last = after if after is not None else (None, None)
    rows = await pool.fetch(_NEAR, owner, *centre, dec, radius + PREFILTER_MARGIN, dot, last, limit)
    return [(_decode(r[0]), r[1]) for r in rows]


async def list_datasets(pool: asyncpg.Pool, *, uploads: bool = False) -> list[DatasetRecord]:
    """Every registered dataset (and, with ``uploads``, users' upload records), by id."""
    where = "" if uploads else " WHERE d.upload_id IS NULL"
    rows = await pool.fetch(f"SELECT {_RECORD} FROM datasets d{where} ORDER BY d.id")
    return [_decode(r[0]) for r in rows]


# -- registered datasets -------------------------------------------------------------------


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


def _read(path: Path, dataset_id: str, describe: Describe) -> tuple[DatasetInfo, int, str]:
    # Blocking (the caller's describe reads the file; hashing reads it whole): run in a thread.
    return describe(path, dataset_id), path.stat().st_size, file_sha256(path)


async def add_dataset(
    pool: asyncpg.Pool,
    store: ObjectStore,
    path: Path,
    dataset_id: str,
    owner: str | None = None,
    *,
    describe: Describe,
) -> DatasetRecord:
    """Register the FITS file at ``path`` as dataset ``dataset_id``, replacing any registered
    dataset of that id in one transaction; public unless ``owner`` is given. ``describe``
    reads the file (in a thread).

    The bytes are copied to ``names.dataset_object(sha256)`` (skipped when already there);
    the object of a replaced version is deleted once no dataset refers to it.

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
    info, size, sha256 = await asyncio.to_thread(_read, path, dataset_id, describe)
    if info.footprint is None:
        raise InvalidDatasetError(
            f"{path}: no image HDU has a celestial WCS (RA/Dec axes), so the file has no"
            " footprint on the sky; a registered dataset needs one"
        )
    key = names.dataset_object(sha256)
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
                await store.put_file(key, path, media.FITS, sha256=sha256)
            doc = await conn.fetchval(
                f"INSERT INTO datasets AS d ({_COLUMNS}) VALUES"
                " ($1, $2, NULL, $3, $4, $5, $6, $7::jsonb, $8, $9::jsonb, $10::jsonb,"
                " $11::jsonb, $12, $13, $14, NULL)"
                f" ON CONFLICT (id) DO UPDATE SET {_UPDATE} RETURNING {_RECORD}",
                dataset_id,
                owner,
                key,
                media.FITS,
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
    return _decode(doc)


async def _collect(pool: asyncpg.Pool, store: ObjectStore, key: str) -> None:
    """Delete a dataset object unless a dataset still refers to it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _OBJECTS_LOCK)
        used = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM datasets WHERE object_key = $1)", key
        )
        if not used:
            await store.delete(key)


async def remove_dataset(pool: asyncpg.Pool, store: ObjectStore, dataset_id: str) -> DatasetRecord:
    """Remove dataset ``dataset_id``; return what was removed. A registered dataset's object is
    deleted once no other id refers to it (an upload's object stays with the upload).

    Raises:
        UnknownDatasetError: no dataset has this id.
        StoreError: the object store failed (the record is gone; the object may remain).
    """
    doc = await pool.fetchval(
        f"DELETE FROM datasets d WHERE d.id = $1 RETURNING {_RECORD}", dataset_id
    )
    if doc is None:
        raise UnknownDatasetError(dataset_id)
    record = _decode(doc)
    if record.upload_id is None:
        await _collect(pool, store, record.object_key)
    return record


# -- users' uploads ------------------------------------------------------------------------


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
