"""Contracts: Struct round-trips, settings loading, names, schema files kept current."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import names
from contracts.api import JobRequest
from contracts.jobs import Phase, Pool, PriorityClass, amqp_priority
from contracts.messages import JobMessage
from contracts.ops import OpCatalog, Thumbnail
from contracts.schema import HERE, comparable, exported, render
from contracts.settings import PostgresSettings, RabbitSettings, Secret, load_settings
from edge.settings import EdgeSettings
from pixfleet.broker import definitions
from pixfleet.ids import uuid7
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
Request = JobRequest[OpCatalog().union]


def test_schema_files_are_current() -> None:
    for stem, tp in exported().items():
        path = HERE / f"{stem}.json"
        assert path.exists(), f"missing {path}: run `make schema`"
        on_disk = comparable(json.loads(path.read_text()))
        assert on_disk == comparable(json.loads(render(tp))), f"{path} is stale: run `make schema`"


def test_schema_comparison_sees_changes_but_not_docstring_layout() -> None:
    schema = json.loads(render(exported()["JobMessage"]))
    words = {"description": "a  job\n   message", "x": [{"description": " b\tc "}]}
    assert comparable(words) == {"description": "a job message", "x": [{"description": "b c"}]}
    assert comparable({**schema, "required": []}) != comparable(schema)


def test_rabbitmq_definitions_file_is_current() -> None:
    on_disk = json.loads((ROOT / "infra/rabbitmq/definitions.json").read_text())
    assert on_disk == definitions(RabbitSettings()), "run `pixfleet topology > infra/...`"


@given(
    size=st.integers(1, 8192),
    fmt=st.sampled_from(["jpeg", "png", "webp"]),
    quality=st.integers(1, 100),
    priority=st.sampled_from(list(PriorityClass)),
    n_inputs=st.integers(1, 5),
)
def test_job_request_round_trip(
    size: int, fmt: str, quality: int, priority: PriorityClass, n_inputs: int
) -> None:
    req = Request(
        inputs=[uuid.uuid4() for _ in range(n_inputs)],
        pipeline=[Thumbnail(size=size, format=fmt, quality=quality)],  # type: ignore[arg-type]
        priority=priority,
    )
    assert msgspec.json.decode(msgspec.json.encode(req), type=Request) == req


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": ["00000000-0000-0000-0000-000000000000"], "pipeline": []}',
        b'{"inputs": ["00000000-0000-0000-0000-000000000000"], "pipeline": [{"op": "nope"}]}',
        b'{"inputs": ["00000000-0000-0000-0000-000000000000"],'
        b' "pipeline": [{"op": "thumbnail", "size": 0}]}',
        b'{"inputs": ["00000000-0000-0000-0000-000000000000"],'
        b' "pipeline": [{"op": "thumbnail", "size": 5, "extra": 1}]}',
        b'{"inputs": ["x"], "pipeline": [{"op": "thumbnail", "size": 5}]}',
    ],
)
def test_job_request_rejects(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=Request)


def test_wire_message_tolerates_unknown_fields_and_defaults() -> None:
    job_id = uuid.uuid4()
    raw = json.dumps({"job_id": str(job_id), "pool": "heavy", "from_the_future": [1]}).encode()
    msg = msgspec.json.decode(raw, type=JobMessage)
    assert msg == JobMessage(job_id=job_id, pool=Pool.heavy, priority=2, attempt=0)


def test_priority_order() -> None:
    order = [
        amqp_priority(p)
        for p in (PriorityClass.batch, PriorityClass.normal, PriorityClass.interactive)
    ]
    assert order == sorted(order) and len(set(order)) == 3
    assert all(0 <= p <= RabbitSettings().max_priority for p in order)


def test_settings_from_environment() -> None:
    env = {
        "PIXFLEET_POSTGRES_DSN": "postgresql://u:pw@db/x",
        "PIXFLEET_POSTGRES_POOL_MAX": "7",
        "PIXFLEET_RABBIT_RETRY_DELAYS": "1, 2.5,10",
        "PIXFLEET_SLOTS": "3",
        "PIXFLEET_POOL": "heavy",
        "PIXFLEET_OP_PLUGINS": "a.b,c",
        "UNRELATED": "x",
    }
    worker = load_settings(WorkerSettings, env)
    assert worker.postgres.pool_max == 7
    assert worker.rabbit.retry_delays == [1.0, 2.5, 10.0]
    assert (worker.slots, worker.pool, worker.op_plugins) == (3, Pool.heavy, ["a.b", "c"])
    assert isinstance(worker.postgres.dsn, Secret)
    assert "pw" not in repr(worker) and "pw" not in repr(worker.postgres)
    assert worker.postgres.dsn.reveal() == "postgresql://u:pw@db/x"


def test_settings_reject_bad_values() -> None:
    with pytest.raises(msgspec.ValidationError, match="pool_max"):
        load_settings(PostgresSettings, {"PIXFLEET_POOL_MAX": "0"})
    with pytest.raises(msgspec.ValidationError):
        load_settings(EdgeSettings, {"PIXFLEET_PORT": "http"})


def test_uuid7_is_time_ordered_and_valid() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    ms = [u.int >> 80 for u in ids]
    assert ms == sorted(ms)
    assert len(set(ids)) == len(ids)


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
)
def test_idempotency_keys_never_collide_across_owners(o1: str, k1: str, o2: str, k2: str) -> None:
    if (o1, k1) != (o2, k2):
        assert names.idempotency_key("p", o1, k1) != names.idempotency_key("p", o2, k2)


def test_names_layout() -> None:
    job = uuid.UUID(int=1)
    assert names.jobs_exchange("pixfleet") == "pixfleet.jobs"
    assert names.pool_queue("pixfleet", Pool.heavy) == "pixfleet.heavy"
    assert names.retry_queue("pixfleet", Pool.standard, 2) == "pixfleet.standard.retry.2"
    assert names.result_object(job, "a.webp") == f"results/{job}/a.webp"
    assert names.result_object(job, "a.webp").startswith(names.result_prefix(job))
    assert {p.value for p in Phase} >= {
        "PENDING",
        "QUEUED",
        "EXECUTING",
        "COMPLETED",
        "ERROR",
        "ABORTED",
        "ARCHIVED",
    }


def test_catalog_picks_heaviest_pool_and_refuses_duplicates() -> None:
    from tests.plugin_ops import HeavySlow, Slow

    catalog = OpCatalog.with_plugins(["tests.plugin_ops"])
    assert catalog.pool_for([Slow(), Thumbnail(size=1)]) is Pool.standard
    assert catalog.pool_for([Slow(), HeavySlow()]) is Pool.heavy
    with pytest.raises(ValueError, match="tagged"):

        class Other(Thumbnail, tag="test_slow"):
            pass

        OpCatalog([Slow, Other])


ROUND_TRIP_EXAMPLES = [
    {"op": "preview"},
    {"op": "preview", "nan_colour": "#ff000080", "format": "jpeg", "hdu": "SCI"},
    {"op": "header", "hdu": 1},
    {"op": "catalogue"},
    {"op": "cutout", "stencils": [{"shape": "circle", "ra": 10, "dec": -5, "radius": 0.1}]},
    {
        "op": "cutout",
        "stencils": [
            {"shape": "polygon", "vertices": [[359.9, 1], [0.1, 1], [0, 1.2]]},
            {"shape": "range", "ra": [350, 10], "dec": [None, 89]},
        ],
        "hdus": "all",
        "band": [5e-7, 6e-7],
        "mask": True,
    },
    {"op": "composite", "lupton": {"minimum": [0, 1, 2]}},
    {"op": "composite", "channels": [{"colour": "#ff0000"}, {"colour": "#0000ff80"}]},
    {"op": "mosaic", "grid": {"ra": 1, "dec": 2, "width": 10, "height": 20, "scale": 1.5}},
]


@pytest.mark.parametrize("example", ROUND_TRIP_EXAMPLES, ids=lambda e: str(e["op"]))
def test_operations_survive_the_trip_from_edge_to_worker(example: dict[str, Any]) -> None:
    """The edge re-encodes a request (defaults included) and the worker decodes it again: every
    default and example must decode from its own encoding."""
    catalog = OpCatalog()
    op = msgspec.convert(example, catalog.union)
    again = msgspec.json.decode(msgspec.json.encode(op), type=catalog.union)
    assert again == op
