"""The registry of image-to-image ONNX models that the ``model`` operation runs: every
statement on the ``models`` table is here, for the edge (unknown models are refused at
submission), the worker runtime and ``pixfleet models``.

Operators register a model file with ``pixfleet models add``: its bytes go to the object store
under ``names.model_object(name, sha256)`` and a row of ``models`` says how to feed it (channels,
sample range, mean, upscale factor, tile size). Nothing is downloaded from the internet at run
time: the worker runtime reads the rows of a job's models (``get_models``), makes each file
local (``fetch_model``) and hands the child a ``LocalModel`` in
``ctx.resources[resource_key(name)]``.

Imported by the worker runtime, its children and the edge: the standard library, msgspec,
``contracts`` and our store only (asyncpg only for annotations). Never onnx (a dev
dependency), numpy or OpenCV: a file is checked by walking its protobuf framing
(``pixfleet.registry.onnx``), and whether OpenCV can run it is found out by the worker at
first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from contracts import media, names
from contracts.ops import ModelName
from pixfleet.registry.onnx import NotOnnxError, check_onnx_file
from pixfleet.store.base import file_sha256

if TYPE_CHECKING:
    import asyncpg

    from pixfleet.store import ObjectStore

log = logging.getLogger(__name__)

Channels = Literal["rgb", "bgr", "gray"]
SampleRange = Literal[1, 255]


class ModelError(Exception):
    """Base of the model registry's errors."""


class InvalidModelError(ModelError, ValueError):
    """A parameter is out of range, or the file is not an ONNX model."""


class UnknownModelError(ModelError, LookupError):
    """No model is registered under this name."""


class ModelDigestError(ModelError):
    """The bytes fetched from the store do not have the registered SHA-256."""


class ModelParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How the ``model`` operation feeds a model: what an operator chooses at registration."""

    channels: Channels = "rgb"
    """Channel order of the model's input and output (``gray``: one channel; a colour image
    is then run on its luma, and its chroma resized to match)."""
    input_range: SampleRange = 1
    """The model takes samples scaled to 0..1 (``1``) or 0..255 (``255``)."""
    mean: tuple[float, ...] | None = None
    """Per channel (model order) or one for all, in input-range units: subtracted before the
    model and added back to its output (models trained on centred samples)."""
    output_range: SampleRange = 1
    """The model's output samples span 0..1 (``1``) or 0..255 (``255``); clipped to it."""
    scale: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    """Output side over input side: 1 for denoising or style, 2, 3 or 4 for super-resolution."""
    tile: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 256
    """Side in pixels of the square tiles the model runs on; 0 runs the whole image at once."""
    overlap: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 16
    """Margin in pixels each tile reads beyond the part of the output it writes (at least
    the model's receptive-field radius, so tile seams do not show)."""
    description: Annotated[str, msgspec.Meta(max_length=1000)] = ""

    def __post_init__(self) -> None:
        if self.tile and self.tile < 16:
            raise ValueError("tile must be 0 (whole image) or at least 16")
        if self.tile and 2 * self.overlap >= self.tile:
            raise ValueError("overlap must be less than half the tile")
        if self.mean is not None and len(self.mean) not in (1, 1 if self.channels == "gray" else 3):
            raise ValueError("mean takes one value, or one per channel (3 for an rgb or bgr model)")


class ModelSpec(ModelParams, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A registered model: its parameters and where its bytes are."""

    name: ModelName
    object_key: str
    """``names.model_object(name, sha256)`` in the object store."""
    sha256: str
    """Hex SHA-256 of the file."""
    size: int
    """Bytes."""
    created_at: datetime | None = None
    """When this version was registered (None before it is stored)."""


@dataclass(frozen=True)
class LocalModel:
    """A model file on this host and how to feed it: what a worker child receives (it pickles).

    The runtime puts it in ``ctx.resources[resource_key(name)]``.
    """

    path: Path
    name: str
    sha256: str
    channels: Channels
    input_range: int
    mean: tuple[float, ...] | None
    output_range: int
    scale: int
    tile: int
    overlap: int

    @classmethod
    def of(cls, spec: ModelSpec, path: Path) -> LocalModel:
        """The local model of ``spec`` whose bytes are at ``path`` (see ``fetch_model``)."""
        return cls(
            path=path,
            name=spec.name,
            sha256=spec.sha256,
            channels=spec.channels,
            input_range=spec.input_range,
            mean=spec.mean,
            output_range=spec.output_range,
            scale=spec.scale,
            tile=spec.tile,
            overlap=spec.overlap,
        )


def resource_key(name: str) -> str:
    """The ``ctx.resources`` key of a model: ``model:<name>``."""
    return f"model:{name}"


def _check_and_hash(path: Path) -> tuple[int, str]:
    try:
        size = check_onnx_file(path)
    except NotOnnxError as e:
        raise InvalidModelError(str(e)) from e
    return size, file_sha256(path)


# -- the registry ---------------------------------------------------------------------------

_COLUMNS = (
    "name, object_key, sha256, size, channels, input_range, mean, output_range, scale, tile,"
    " overlap, description, created_at"
)


def _spec(row: Any) -> ModelSpec:
    return msgspec.convert(dict(row), ModelSpec)


def _params(name: str, params: dict[str, Any]) -> ModelParams:
    try:
        msgspec.convert(name, ModelName)
    except msgspec.ValidationError as e:
        raise InvalidModelError(
            f"invalid model name {name!r}: 1 to 64 of a-z, 0-9, '_', '.', '-'"
        ) from e
    try:
        return msgspec.convert(params, ModelParams)
    except msgspec.ValidationError as e:
        raise InvalidModelError(f"invalid model parameters: {e}") from e


async def add_model(
    pool: asyncpg.Pool, store: ObjectStore, name: str, path: Path, **params: Any
) -> ModelSpec:
    """Register the ONNX file at ``path`` as model ``name``, replacing any model of that name.

    ``params`` are ``ModelParams`` fields. The file is checked (``onnx.check_onnx_file``) and
    copied to the store; the replaced version's object is deleted once the row points to the
    new one.

    Raises:
        InvalidModelError: a parameter is invalid or the file is not an ONNX model.
        OSError: the file cannot be read.
        StoreError: the object store failed.
        asyncpg.PostgresError: the database failed (the copied object is removed).
    """
    checked = _params(name, params)
    size, sha256 = await asyncio.to_thread(_check_and_hash, path)
    spec = ModelSpec(
        name=name,
        object_key=names.model_object(name, sha256),
        sha256=sha256,
        size=size,
        **msgspec.structs.asdict(checked),
    )
    before = await pool.fetchval("SELECT object_key FROM models WHERE name = $1", name)
    await store.put_file(spec.object_key, path, media.OCTET_STREAM, sha256=sha256)
    try:
        async with pool.acquire() as conn, conn.transaction():
            previous = await conn.fetchval(
                "SELECT object_key FROM models WHERE name = $1 FOR UPDATE", name
            )
            row = await conn.fetchrow(
                f"INSERT INTO models ({_COLUMNS}) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())"
                " ON CONFLICT (name) DO UPDATE SET object_key = EXCLUDED.object_key,"
                " sha256 = EXCLUDED.sha256, size = EXCLUDED.size, channels = EXCLUDED.channels,"
                " input_range = EXCLUDED.input_range, mean = EXCLUDED.mean,"
                " output_range = EXCLUDED.output_range, scale = EXCLUDED.scale,"
                " tile = EXCLUDED.tile, overlap = EXCLUDED.overlap,"
                " description = EXCLUDED.description, created_at = EXCLUDED.created_at"
                f" RETURNING {_COLUMNS}",
                spec.name,
                spec.object_key,
                spec.sha256,
                spec.size,
                spec.channels,
                spec.input_range,
                None if spec.mean is None else list(spec.mean),
                spec.output_range,
                spec.scale,
                spec.tile,
                spec.overlap,
                spec.description,
            )
    except BaseException:
        if before != spec.object_key:  # not the bytes of the version registered before
            with contextlib.suppress(Exception):
                await asyncio.shield(store.delete(spec.object_key))
        raise
    if previous is not None and previous != spec.object_key:
        # A worker that read the old row just before may still fetch it and fail; its job is
        # retried and reads the new row. Leaving old versions would grow the store forever.
        try:
            await store.delete(previous)
        except Exception:
            log.warning("could not delete the replaced model object %s", previous, exc_info=True)
    return _spec(row)


async def get_models(pool: asyncpg.Pool, names: list[str] | set[str]) -> dict[str, ModelSpec]:
    """Return the registered models among ``names``, by name (unknown names are absent)."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM models WHERE name = ANY($1::text[])", list(names)
    )
    return {row["name"]: _spec(row) for row in rows}


async def list_models(pool: asyncpg.Pool) -> list[ModelSpec]:
    """Return every registered model, by name."""
    return [_spec(row) for row in await pool.fetch(f"SELECT {_COLUMNS} FROM models ORDER BY name")]


async def remove_model(pool: asyncpg.Pool, store: ObjectStore, name: str) -> ModelSpec:
    """Unregister model ``name`` and delete its stored versions; return what was removed.

    Raises:
        UnknownModelError: no model has this name.
        StoreError: the object store failed (the row is gone; objects may remain).
    """
    row = await pool.fetchrow(f"DELETE FROM models WHERE name = $1 RETURNING {_COLUMNS}", name)
    if row is None:
        raise UnknownModelError(f"no model is named {name!r}")
    spec = _spec(row)
    await store.delete_prefix(names.model_prefix(name))
    return spec


async def fetch_model(store: ObjectStore, spec: ModelSpec, cache_dir: Path) -> Path:
    """Return a local path of the model's bytes.

    The store's own path when it has one (file store: read in place, never written);
    otherwise ``cache_dir/<sha256>.onnx``, downloaded once: into a temporary name, checked
    against the registered digest, then renamed into place, so a cached file is always whole
    and right. Concurrent first fetches may download twice; the renames agree.

    Raises:
        ModelDigestError: the downloaded bytes do not have the registered SHA-256.
        ObjectNotFoundError: the model's object is gone (replaced or removed meanwhile).
        StoreError: the object store failed.
        OSError: the cache directory cannot be written.
    """
    local = store.local_path(spec.object_key)
    if local is not None:
        return local
    dest = cache_dir / f"{spec.sha256}.onnx"
    if await asyncio.to_thread(dest.is_file):
        return dest
    await asyncio.to_thread(cache_dir.mkdir, parents=True, exist_ok=True)
    part = cache_dir / f".{spec.sha256}.{uuid.uuid4().hex}.part"
    try:
        await store.download(spec.object_key, part)
        digest = await asyncio.to_thread(file_sha256, part)
        if digest != spec.sha256:
            raise ModelDigestError(
                f"model {spec.name!r}: fetched bytes have SHA-256 {digest}, not {spec.sha256}"
            )
        await asyncio.to_thread(os.replace, part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest
