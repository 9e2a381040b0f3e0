"""The model registry against the real PostgreSQL and both object stores (files in tmp_path,
S3 on moto), fetching into a cache, and the ``pixfleet models`` commands as an operator runs
them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from contracts.names import model_object
from pixfleet.db import migrations
from pixfleet.registry.models import (
    InvalidModelError,
    LocalModel,
    ModelDigestError,
    ModelSpec,
    UnknownModelError,
    add_model,
    fetch_model,
    get_models,
    list_models,
    remove_model,
)
from pixfleet.registry.onnx import check_onnx_file
from pixfleet.store import ObjectStore
from tests.helpers import BOTH_STORES, leaked_imports, run_pixfleet


def onnx_model(a: float = 0.5, b: float = 0.25) -> bytes:
    """y = a * x + b over three channels."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])
    nodes = [helper.make_node("Mul", ["x", "a"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("a", a), ("b", b))]
    graph = helper.make_graph(nodes, "affine", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_migration_is_shipped() -> None:
    assert [name for _, name, _ in migrations()][:2] == ["001_core.sql", "002_models.sql"]


@BOTH_STORES
async def test_add_get_list_remove(pool: object, store: ObjectStore, tmp_path: Path) -> None:
    data = onnx_model()
    sha = hashlib.sha256(data).hexdigest()
    path = write(tmp_path / "brighten.onnx", data)
    spec = await add_model(
        pool, store, "brighten", path, scale=1, tile=128, overlap=8, description="brighter"
    )
    assert spec.name == "brighten" and spec.sha256 == sha and spec.size == len(data)
    assert spec.object_key == model_object("brighten", sha) == f"models/brighten/{sha}.onnx"
    assert (spec.tile, spec.overlap, spec.channels, spec.input_range) == (128, 8, "rgb", 1)
    assert spec.created_at is not None and spec.mean is None
    stored = await store.head(spec.object_key)
    assert stored is not None and stored.sha256 == sha and stored.size == len(data)
    await add_model(pool, store, "sr.x2", path, scale=2, channels="bgr", mean=(0.5, 0.4, 0.3))

    found = await get_models(pool, {"brighten", "sr.x2", "unknown"})
    assert set(found) == {"brighten", "sr.x2"}
    assert found["brighten"] == spec
    assert found["sr.x2"].mean == (0.5, 0.4, 0.3) and found["sr.x2"].scale == 2
    assert [m.name for m in await list_models(pool)] == ["brighten", "sr.x2"]
    local = LocalModel.of(found["sr.x2"], tmp_path / "x.onnx")
    assert (local.name, local.scale, local.mean, local.sha256) == ("sr.x2", 2, (0.5, 0.4, 0.3), sha)

    removed = await remove_model(pool, store, "brighten")
    assert removed == spec
    assert await store.head(spec.object_key) is None
    assert [m.name for m in await list_models(pool)] == ["sr.x2"]
    with pytest.raises(UnknownModelError):
        await remove_model(pool, store, "brighten")


@BOTH_STORES
async def test_re_adding_replaces(pool: object, store: ObjectStore, tmp_path: Path) -> None:
    first = await add_model(pool, store, "m", write(tmp_path / "1.onnx", onnx_model(0.5)))
    second = await add_model(
        pool, store, "m", write(tmp_path / "2.onnx", onnx_model(0.7)), scale=1, tile=0
    )
    assert second.sha256 != first.sha256 and second.tile == 0
    assert second.created_at is not None and first.created_at is not None
    assert second.created_at >= first.created_at
    assert await list_models(pool) == [second]
    assert await store.head(first.object_key) is None  # the replaced version is deleted
    assert await store.head(second.object_key) is not None
    again = await add_model(pool, store, "m", tmp_path / "2.onnx", tile=0)
    assert again.object_key == second.object_key
    assert await store.head(second.object_key) is not None  # same bytes: kept


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tile": 8}, "at least 16"),
        ({"tile": 64, "overlap": 32}, "less than half"),
        ({"channels": "cmyk"}, "channels"),
        ({"scale": 0}, "scale"),
        ({"input_range": 100}, "input_range"),
        ({"mean": (1.0, 2.0)}, "mean"),
        ({"mean": (1.0, 2.0, 3.0), "channels": "gray"}, "mean"),
        ({"colour": "rgb"}, "colour"),
    ],
)
async def test_invalid_parameters_are_refused(
    pool: object, store: ObjectStore, tmp_path: Path, params: dict[str, object], message: str
) -> None:
    path = write(tmp_path / "m.onnx", onnx_model())
    with pytest.raises(InvalidModelError, match=message):
        await add_model(pool, store, "m", path, **params)
    with pytest.raises(InvalidModelError, match="name"):
        await add_model(pool, store, "Not A Name", path)
    assert await list_models(pool) == []


async def test_files_that_are_not_onnx_are_refused(
    pool: object, store: ObjectStore, tmp_path: Path
) -> None:
    data = onnx_model()
    bad = {
        "empty": b"",
        "text": b"this is not a model at all, just some text\n" * 10,
        "png": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "truncated": data[: len(data) - 5],
        "trailing": data + b"\x00\x00\x00",
        "no graph": helper.make_model(
            helper.make_graph([], "g", [], []),
            opset_imports=[helper.make_opsetid("", 13)],
        ).SerializeToString(),
    }
    for name, content in bad.items():
        path = write(tmp_path / f"{name}.onnx", content)
        with pytest.raises(InvalidModelError):
            await add_model(pool, store, "m", path)
    assert await list_models(pool) == []
    assert check_onnx_file(write(tmp_path / "good.onnx", data)) == len(data)


def test_the_check_accepts_what_onnx_writes(tmp_path: Path) -> None:
    # Metadata, doc strings and many initializers are fields the walk skips over.
    model = onnx.load_from_string(onnx_model())
    model.doc_string = "a model"
    helper.set_model_props(model, {"author": "tests"})
    for i in range(50):
        model.graph.initializer.append(
            numpy_helper.from_array(np.zeros((8, 8), np.float32), f"unused{i}")
        )
    path = write(tmp_path / "m.onnx", model.SerializeToString())
    assert check_onnx_file(path) == path.stat().st_size


@BOTH_STORES
async def test_fetch_model_gives_a_local_verified_copy(
    pool: object, store: ObjectStore, tmp_path: Path
) -> None:
    data = onnx_model()
    spec = await add_model(pool, store, "m", write(tmp_path / "m.onnx", data))
    cache = tmp_path / "cache"
    path = await fetch_model(store, spec, cache)
    assert path.read_bytes() == data
    if store.local_path(spec.object_key) is not None:
        assert path == store.local_path(spec.object_key)
        assert not cache.exists()  # read in place
        return
    assert path == cache / f"{spec.sha256}.onnx"
    # A second fetch finds the cached copy: it works even with the object gone.
    await store.delete(spec.object_key)
    assert await fetch_model(store, spec, cache) == path
    assert sorted(p.name for p in cache.iterdir()) == [path.name]

    # Bytes that do not match the registered digest are refused and leave nothing behind.
    await store.put_bytes(spec.object_key, data + b"tampered", "application/octet-stream")
    wrong = msgspec.structs.replace(spec, sha256="0" * 64)
    with pytest.raises(ModelDigestError):
        await fetch_model(store, wrong, cache)
    assert sorted(p.name for p in cache.iterdir()) == [path.name]


@BOTH_STORES
def test_cli_add_list_remove(env: dict[str, str], tmp_path: Path) -> None:
    data = onnx_model()
    path = write(tmp_path / "m.onnx", data)
    sha = hashlib.sha256(data).hexdigest()
    options = ["--scale", "2", "--tile", "128", "--overlap", "8", "--channels", "bgr"]
    options += ["--input-range", "255", "--output-range", "255", "--mean", "1,2,3"]
    added = run_pixfleet(
        env, "models", "add", "sr", str(path), *options, "--description", "an upscaler"
    )
    assert added.returncode == 0, added.stderr
    assert sha in added.stdout

    table = run_pixfleet(env, "models", "list")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "SCALE", "TILE"]
    assert row.split()[:6] == ["sr", "x2", "128", "8", "bgr", "255->255"]
    assert row.endswith("an upscaler") and sha[:12] in row

    listed = run_pixfleet(env, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (spec,) = msgspec.json.decode(listed.stdout, type=list[ModelSpec])
    assert (spec.name, spec.sha256, spec.scale, spec.mean) == ("sr", sha, 2, (1.0, 2.0, 3.0))
    assert json.loads(listed.stdout)[0]["object_key"] == f"models/sr/{sha}.onnx"

    refused = run_pixfleet(
        env, "models", "add", "bad", str(write(tmp_path / "bad.onnx", b"x" * 100))
    )
    assert refused.returncode == 1 and "not an ONNX model" in refused.stderr
    refused = run_pixfleet(env, "models", "add", "sr", str(path), "--tile", "8")
    assert refused.returncode == 1 and "tile" in refused.stderr
    missing = run_pixfleet(env, "models", "add", "sr", str(tmp_path / "nothing.onnx"))
    assert missing.returncode == 1 and "no such file" in missing.stderr

    removed = run_pixfleet(env, "models", "remove", "sr")
    assert removed.returncode == 0, removed.stderr
    assert run_pixfleet(env, "models", "list", "--json").stdout.strip() == "[]"
    again = run_pixfleet(env, "models", "remove", "sr")
    assert again.returncode == 1 and "no model is named 'sr'" in again.stderr


def test_importing_the_registry_stays_light() -> None:
    heavy = {"numpy", "cv2", "onnx", "litestar", "aioboto3", "asyncpg"}
    assert leaked_imports(["pixfleet.registry.models"], heavy) == ""
