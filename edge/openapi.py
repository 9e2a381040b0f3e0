"""OpenAPI description of ``POST /v1/jobs``, built from msgspec's own JSON Schema.

The handler reads and decodes its body itself (a msgspec decoder for ``JobRequest`` over an
operation union that plugin modules extend at run time), so Litestar sees no body to describe.
This module converts ``msgspec.json.schema_components`` for the app's catalogue into Litestar
spec objects: ``job_components(catalog)`` goes into the app's ``OpenAPIConfig`` and
``SubmitJobOperation`` is the handler's ``operation_class``; the operation refers to the
components by the fixed names ``JobRequest``, ``JobSnapshot`` and ``Problem``.

Only builds documents: nothing here runs per request. Imports msgspec, Litestar's OpenAPI spec,
``contracts`` and ``edge.errors``; never the numeric stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, cast

import msgspec
from litestar.enums import ParamType
from litestar.openapi.spec import (
    Components,
    Discriminator,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)

from contracts import media
from contracts.api import JobRequest, Problem
from contracts.jobs import JobSnapshot
from contracts.ops import OpCatalog
from contracts.schema import generic_name
from edge.errors import (
    PROBLEM_JSON,
    IdempotencyInFlightError,
    IdempotencyMismatchError,
    InvalidRequestError,
    MalformedBodyError,
    PayloadTooLargeError,
    PixfleetError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnknownUploadError,
)

JOB_REQUEST = "JobRequest"
JOB_SNAPSHOT = "JobSnapshot"
PROBLEM = "Problem"

_PREFIX = "#/components/schemas/"

# JSON Schema keyword -> Schema field; the keyword is the field's alias or its camelCase name.
_FIELDS = {
    f.metadata.get("alias") or re.sub(r"_(\w)", lambda m: m[1].upper(), f.name): f.name
    for f in fields(Schema)
}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SCHEMA_MAPS = {"properties", "patternProperties", "dependentSchemas"}
_SCHEMA_ONE = {
    "not",
    "if",
    "then",
    "else",
    "items",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
}
_SPECIAL = {"$ref", "type", "format", "discriminator", "additionalProperties"}
_SCALARS = set(_FIELDS) - _SCHEMA_LISTS - _SCHEMA_MAPS - _SCHEMA_ONE - _SPECIAL - {"xml"}
_FORMATS = {f.value for f in OpenAPIFormat}


def _titles(*errors: type[PixfleetError]) -> str:
    return "; ".join(e.title for e in errors)


# What POST /v1/jobs answers besides 202, each rendered by edge.errors as a Problem.
_PROBLEMS = {
    400: _titles(MalformedBodyError) + "; a header is invalid",
    401: _titles(UnauthorizedError),
    409: _titles(IdempotencyInFlightError),
    413: _titles(PayloadTooLargeError),
    422: _titles(InvalidRequestError, UnknownUploadError, IdempotencyMismatchError),
    503: _titles(ServiceUnavailableError),
}


def job_components(catalog: OpCatalog) -> Components:
    """Components with the schemas of ``JobRequest[catalog.union]``, ``JobSnapshot``, ``Problem``.

    Pass the result, alone (not in a list), as ``OpenAPIConfig(components=...)``.

    Raises:
        ValueError: msgspec produced a keyword the spec objects cannot carry (e.g. an ``x-``
            key in a plugin operation's ``extra_json_schema``), or a plugin operation is named
            like one of the fixed components.
    """
    union: Any = catalog.union  # built at run time: a value, not a static type
    roots, defs = msgspec.json.schema_components(
        [JobRequest[union], JobSnapshot, Problem], ref_template=_PREFIX + "{name}"
    )
    fixed = (JOB_REQUEST, JOB_SNAPSHOT, PROBLEM)
    # msgspec names the generic after its parameters ("JobRequest_typing.Union_..."); the
    # operation refers to a name that does not depend on the catalogue.
    renames = {
        root["$ref"].removeprefix(_PREFIX): new for root, new in zip(roots, fixed, strict=True)
    }
    renames.update({name: generic_name(name) for name in defs if generic_name(name) != name})
    for old, new in renames.items():
        if old != new and new in defs:
            raise ValueError(f"a component is already named {new!r}; rename that operation")
    converter = _Converter(renames)
    schemas: dict[str, Schema] = {}
    for name, definition in defs.items():
        schema = converter.schema(definition)
        if not isinstance(schema, Schema):
            raise ValueError(f"component {name!r} is a bare reference")
        schemas[renames.get(name, name)] = schema
    for name, schema in schemas.items():  # msgspec's titles of generics spell out the union
        if name in (JOB_REQUEST, "Branch", "NamedPipeline"):
            schema.title = name
    return PinnedComponents(schemas)


class PinnedComponents(Components):
    """Components whose ``schemas`` survive Litestar's generated ones.

    Litestar 2 assigns the schemas it generated to ``components.schemas`` of its copy of the
    config's components (``litestar/_openapi/plugin.py``, ``_build_openapi``), which would drop
    schemas given in the config. Here the assignment merges them in. A generated schema of the
    same name is replaced when it has the same shape (the same class seen by both generators,
    e.g. ``Phase``); otherwise the build raises ``ValueError`` rather than mix two types.
    """

    def __init__(self, pinned: Mapping[str, Schema]) -> None:
        self._pinned = dict(pinned)
        super().__init__(schemas=dict(pinned))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "schemas" and isinstance(value, dict) and "_pinned" in self.__dict__:
            value = _merge(value, self._pinned)
        super().__setattr__(name, value)


def _merge(generated: dict[str, Schema], pinned: dict[str, Schema]) -> dict[str, Schema]:
    merged = dict(generated)
    for name, schema in pinned.items():
        other = merged.get(name)
        if other is not None and other is not schema and _shape(other) != _shape(schema):
            raise ValueError(f"two different schemas are both named {name!r}")
        merged[name] = schema
    return dict(sorted(merged.items()))


def _shape(schema: Schema) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(map(repr, schema.enum or ())), frozenset(schema.properties or ())


class _Converter:
    """msgspec JSON Schema dicts to Litestar ``Schema``/``Reference`` objects.

    ``{"$ref": ..., <more>}`` becomes ``allOf: [<ref>]`` next to the other keywords, since a
    ``Reference`` carries nothing else. A ``default`` of ``null`` is lost: Litestar's spec
    objects read ``None`` as absent.
    """

    def __init__(self, renames: Mapping[str, str]) -> None:
        self.renames = renames

    def ref(self, ref: str) -> str:
        if not ref.startswith(_PREFIX):
            raise ValueError(f"unexpected $ref {ref!r}")
        name = ref.removeprefix(_PREFIX)
        return _PREFIX + self.renames.get(name, name)

    def schema(self, node: Mapping[str, Any] | bool) -> Schema | Reference:
        if isinstance(node, bool):  # JSON Schema's true/false (e.g. "items": false of tuples)
            return Schema() if node else Schema(schema_not=Schema())
        if "$ref" in node:
            ref = Reference(self.ref(node["$ref"]))
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return Schema(all_of=[ref], **self._keywords(rest)) if rest else ref
        return Schema(**self._keywords(node))

    def _keywords(self, node: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key not in _FIELDS or key == "xml":
                raise ValueError(f"JSON Schema keyword {key!r} has no OpenAPI spec field")
            out[_FIELDS[key]] = self._value(key, value)
        return out

    def _value(self, key: str, value: Any) -> Any:
        if key in _SCALARS:
            return value
        if key in _SCHEMA_LISTS:
            return [self.schema(v) for v in value]
        if key in _SCHEMA_MAPS:
            return {k: self.schema(v) for k, v in value.items()}
        if key in _SCHEMA_ONE or (key == "additionalProperties" and isinstance(value, dict)):
            return self.schema(value)
        if key == "additionalProperties":
            return bool(value)
        if key == "type":
            return (
                [OpenAPIType(t) for t in value] if isinstance(value, list) else OpenAPIType(value)
            )
        if key == "format":
            # An open set in JSON Schema (msgspec says "decimal"); the spec enum is not.
            return OpenAPIFormat(value) if value in _FORMATS else cast(OpenAPIFormat, value)
        return Discriminator(  # key == "discriminator"
            property_name=value["propertyName"],
            mapping={tag: self.ref(ref) for tag, ref in value.get("mapping", {}).items()} or None,
        )


def _ref(name: str) -> Reference:
    return Reference(_PREFIX + name)


def _header(description: str, required: bool = False) -> OpenAPIHeader:
    return OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING), description=description, required=required
    )


@dataclass
class SubmitJobOperation(Operation):
    """``POST /v1/jobs``: its ``JobRequest`` body, its 202 ``JobSnapshot`` and its problems.

    Refers to components by name: the app's config must carry ``job_components(catalog)``.
    """

    def __post_init__(self) -> None:
        # The handler reads its headers itself (hot path), so they are described here.
        self.parameters = [
            *(self.parameters or []),
            Parameter(
                name="Idempotency-Key",
                param_in=ParamType.HEADER,
                required=False,
                description="Repeat-safe submissions: the same key and body return the same job.",
                schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
            ),
        ]
        self.request_body = RequestBody(
            content={media.JSON: OpenAPIMediaType(schema=_ref(JOB_REQUEST))},
            description="The job: inputs (upload ids) and the pipeline of operations.",
            required=True,
        )
        responses = dict(self.responses or {})
        responses["202"] = OpenAPIResponse(
            description="The job was accepted (or found again by its idempotency key).",
            headers={
                "Location": _header("The job's URL.", required=True),
                "Idempotent-Replayed": _header('"true" when the job already existed.'),
            },
            content={media.JSON: OpenAPIMediaType(schema=_ref(JOB_SNAPSHOT))},
        )
        problem = {PROBLEM_JSON: OpenAPIMediaType(schema=_ref(PROBLEM))}
        for status, description in _PROBLEMS.items():
            responses[str(status)] = OpenAPIResponse(description=description, content=problem)
        self.responses = dict(sorted(responses.items()))
