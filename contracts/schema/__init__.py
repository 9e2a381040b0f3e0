"""JSON Schema of the wire messages and API bodies, exported into this folder.

``python -m contracts.schema`` rewrites the files; a test fails when they are stale, so
clients in other languages can trust them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from contracts.api import JobRequest, Problem, Upload
from contracts.jobs import JobEvent, JobPage, JobSnapshot
from contracts.messages import ControlMessage, JobMessage
from contracts.ops import OpCatalog

HERE = Path(__file__).parent


def exported() -> dict[str, Any]:
    """Map of file stem to type, for every exported schema."""
    union: Any = OpCatalog().union  # built at run time: a value, not a static type
    return {
        "JobRequest": JobRequest[union],
        "JobSnapshot": JobSnapshot,
        "JobPage": JobPage,
        "JobEvent": JobEvent,
        "Upload": Upload,
        "Problem": Problem,
        "JobMessage": JobMessage,
        "ControlMessage": ControlMessage,
    }


def render(tp: Any) -> str:
    return json.dumps(tidy(msgspec.json.schema(tp)), indent=2, sort_keys=True) + "\n"


def generic_name(name: str) -> str:
    """``JobRequest_typing.Union_...`` (msgspec's name of a generic) -> ``JobRequest``."""
    base, sep, _ = name.partition("_")
    return base if sep and base in ("JobRequest", "Branch", "NamedPipeline") else name


def tidy(schema: dict[str, Any]) -> dict[str, Any]:
    """Give generic Structs their plain names in ``$defs`` and every ``$ref``."""
    text = json.dumps(schema)
    for name in schema.get("$defs", {}):
        new = generic_name(name)
        if new != name:
            text = text.replace(json.dumps(name), json.dumps(new))
            text = text.replace(json.dumps("#/$defs/" + name), json.dumps("#/$defs/" + new))
    tidied: dict[str, Any] = json.loads(text)
    for definition in tidied.get("$defs", {}).values():
        title = definition.get("title", "")
        if "[" in title:
            definition["title"] = title.partition("[")[0]
    return tidied


def comparable(document: Any) -> Any:
    """The schema as data with every ``description`` reduced to its words: what a client
    reads, independent of how a msgspec release indents docstrings or orders keys."""
    if isinstance(document, dict):
        return {
            k: " ".join(v.split()) if k == "description" and isinstance(v, str) else comparable(v)
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [comparable(v) for v in document]
    return document


def write() -> list[Path]:
    paths = []
    for stem, tp in exported().items():
        path = HERE / f"{stem}.json"
        path.write_text(render(tp))
        paths.append(path)
    return paths
