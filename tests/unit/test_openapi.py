"""The OpenAPI document describes POST /v1/jobs from msgspec's schema of the app's catalogue.

Built from ``create_app`` without a lifespan: nothing may connect while the document is made.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

import msgspec
import pytest
from litestar import Litestar, get
from litestar.openapi import OpenAPIConfig
from openapi_spec_validator import validate

from contracts import api
from contracts.api import JobRequest, Problem
from contracts.jobs import JobSnapshot
from contracts.opbase import Op
from contracts.ops import BUILTIN_OPS, OpCatalog
from contracts.schema import generic_name
from edge import app as edge_app
from edge.app import create_app
from edge.openapi import JOB_REQUEST, JOB_SNAPSHOT, PROBLEM, job_components
from edge.settings import EdgeSettings

PLUGINS = ["tests.plugin_ops"]
PREFIX = "#/components/schemas/"


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("building the OpenAPI document tried to connect")


@pytest.fixture(autouse=True)
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", _forbidden)
    monkeypatch.setattr(socket, "create_connection", _forbidden)
    monkeypatch.setattr(edge_app, "open_resources", _forbidden)


def _document(plugins: list[str]) -> dict[str, Any]:
    app = create_app(EdgeSettings(op_plugins=plugins))
    return app.openapi_schema.to_schema()


@pytest.fixture
def doc() -> dict[str, Any]:
    return _document(PLUGINS)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _deref(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = _resolve(doc, node["$ref"])
    return node


def _refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` and discriminator mapping target in a document."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        if isinstance(node.get("discriminator"), dict):
            yield from node["discriminator"].get("mapping", {}).values()
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _submit(doc: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = doc["paths"]["/v1/jobs"]["post"]
    return operation


def test_request_body_is_the_job_request(doc: dict[str, Any]) -> None:
    body = _submit(doc)["requestBody"]
    assert body["required"] is True
    schema = _deref(doc, body["content"]["application/json"]["schema"])
    assert schema["type"] == "object"
    assert {"inputs", "pipeline", "priority"} <= set(schema["properties"])
    assert set(schema["required"]) == {"pipeline"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["pipeline"]["minItems"] == 1


def test_pipeline_lists_builtin_and_plugin_operations(doc: dict[str, Any]) -> None:
    request = _deref(doc, _submit(doc)["requestBody"]["content"]["application/json"]["schema"])
    items = request["properties"]["pipeline"]["items"]
    tags = set()
    for member in items["anyOf"]:
        (tag,) = _deref(doc, member)["properties"]["op"]["enum"]
        tags.add(tag)
    assert {"thumbnail", "test_slow"} <= tags
    assert items["discriminator"]["propertyName"] == "op"
    assert set(items["discriminator"]["mapping"]) == tags


def test_constraints_defaults_and_descriptions_survive(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    size = schemas["Thumbnail"]["properties"]["size"]
    assert (size["minimum"], size["maximum"], size["description"]) == (
        1,
        8192,
        "Longer side, pixels",
    )
    assert schemas["Thumbnail"]["properties"]["quality"]["default"] == 85
    run_id = schemas[JOB_REQUEST]["properties"]["run_id"]["anyOf"][0]
    assert run_id["pattern"] == r"^[\w.:-]+$"
    priority = schemas[JOB_REQUEST]["properties"]["priority"]
    assert priority["default"] == "normal"
    assert set(_deref(doc, priority["allOf"][0])["enum"]) == {"interactive", "normal", "batch"}


def test_responses_are_snapshot_and_problems(doc: dict[str, Any]) -> None:
    responses = _submit(doc)["responses"]
    accepted = responses["202"]
    assert accepted["content"]["application/json"]["schema"] == {"$ref": PREFIX + JOB_SNAPSHOT}
    assert accepted["headers"]["Location"]["required"] is True
    for status in ("400", "401", "409", "413", "422"):
        content = responses[status]["content"]
        assert content == {"application/problem+json": {"schema": {"$ref": PREFIX + PROBLEM}}}


@pytest.mark.parametrize("plugins", [[], PLUGINS])
def test_every_ref_resolves(plugins: list[str]) -> None:
    doc = _document(plugins)
    refs = set(_refs(doc))
    assert PREFIX + JOB_REQUEST in refs
    for ref in refs:
        assert isinstance(_resolve(doc, ref), dict), ref


def _as_documented(node: Any, renames: dict[str, str]) -> Any:
    """msgspec's schema after the conversion's documented changes: renamed components,
    ``$ref`` with siblings as ``allOf``, no ``default: null``, boolean schemas as objects."""
    if isinstance(node, dict) and node.get("items") is False:  # a tuple's "no more items"
        node = {**node, "items": {"not": {}}}
    if isinstance(node, dict) and isinstance(node.get("default"), dict):  # nulls are omitted
        node = {**node, "default": {k: v for k, v in node["default"].items() if v is not None}}
    if isinstance(node, list):
        return [_as_documented(v, renames) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _as_documented(v, renames) for k, v in node.items() if not (k == "default" and v is None)
    }
    if "$ref" in out:
        name = out["$ref"].removeprefix(PREFIX)
        out["$ref"] = PREFIX + renames.get(name, name)
        if len(out) > 1:
            out["allOf"] = [{"$ref": out.pop("$ref")}]
    if "mapping" in out and "propertyName" in out:
        out["mapping"] = {
            t: _as_documented({"$ref": r}, renames)["$ref"] for t, r in node["mapping"].items()
        }
    return out


def test_components_are_msgspecs_schemas(doc: dict[str, Any]) -> None:
    catalog = OpCatalog.with_plugins(PLUGINS)
    roots, defs = msgspec.json.schema_components(
        [JobRequest[catalog.union], JobSnapshot, Problem], ref_template=PREFIX + "{name}"
    )
    fixed = (JOB_REQUEST, JOB_SNAPSHOT, PROBLEM)
    renames = {r["$ref"].removeprefix(PREFIX): n for r, n in zip(roots, fixed, strict=True)}
    renames.update({n: generic_name(n) for n in defs if generic_name(n) != n})
    schemas = doc["components"]["schemas"]
    for name, definition in defs.items():
        expected = _as_documented(definition, renames)
        if renames.get(name) in (JOB_REQUEST, "Branch", "NamedPipeline"):
            expected["title"] = renames[name]
        assert schemas[renames.get(name, name)] == expected, name


def test_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)


class Tagged(Op, tag="test_tagged"):
    impl: ClassVar[str] = "tests.plugin_ops_impl:slow"
    level: Annotated[int, msgspec.Meta(extra_json_schema={"x-internal": True})] = 0


def test_keywords_without_a_spec_field_are_refused() -> None:
    with pytest.raises(ValueError, match="x-internal"):
        job_components(OpCatalog([*BUILTIN_OPS, Tagged]))


class Upload(Op, tag="test_upload"):
    """An operation named like ``contracts.api.Upload``, which Litestar also documents."""

    impl: ClassVar[str] = "tests.plugin_ops_impl:slow"


def test_a_different_type_of_the_same_name_is_refused() -> None:
    @get("/upload", sync_to_thread=False)
    def upload() -> api.Upload:
        raise NotImplementedError

    config = OpenAPIConfig(
        title="t", version="1", components=job_components(OpCatalog([*BUILTIN_OPS, Upload]))
    )
    app = Litestar([upload], openapi_config=config)
    with pytest.raises(ValueError, match="'Upload'"):
        app.openapi_schema  # noqa: B018 - built on first access


def test_submit_documents_the_idempotency_header() -> None:
    from edge.app import create_app
    from edge.settings import EdgeSettings

    doc = create_app(EdgeSettings()).openapi_schema.to_schema()
    params = doc["paths"]["/v1/jobs"]["post"]["parameters"]
    [header] = [p for p in params if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header" and header["schema"]["maxLength"] == 255
