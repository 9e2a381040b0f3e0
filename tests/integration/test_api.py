"""The edge against real PostgreSQL, Redis and RabbitMQ (no worker): bad input never reaches
a queue, idempotency, auth, ownership, listing, abort of a queued job, readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from contracts import names
from tests.helpers import Client, assert_problem, job_body, queue_depth, upload
from tests.images import photo, png_bomb


async def test_upload_records_digest_type_and_size(client: Client, alice: dict[str, str]) -> None:
    import hashlib

    data = photo(320, 200, "PNG")
    r = await client.post(
        "/v1/uploads", content=data, headers={**alice, "Content-Type": "image/jpeg"}
    )  # the bytes win
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["media_type"] == "image/png"
    assert (up["width"], up["height"], up["size"]) == (320, 200, len(data))
    assert up["sha256"] == hashlib.sha256(data).hexdigest()
    assert r.headers["location"] == f"/v1/uploads/{up['id']}"
    assert (await client.get(f"/v1/uploads/{up['id']}", headers=alice)).json() == up


async def test_submit_answers_202_and_publishes_once(
    client: Client, alice: dict[str, str], namespace: str
) -> None:
    up = await upload(client, alice)
    r = await client.post("/v1/jobs", json=job_body(up, priority="batch"), headers=alice)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["phase"] == "QUEUED" and job["pool"] == "standard" and job["priority"] == "batch"
    assert r.headers["location"] == job["href"] == f"/v1/jobs/{job['id']}"
    got = (await client.get(job["href"], headers=alice)).json()
    assert got["id"] == job["id"] and got["phase"] == "QUEUED"
    for _ in range(100):
        if await queue_depth(namespace) == 1:
            break
        await asyncio.sleep(0.05)
    assert await queue_depth(namespace) == 1


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"{not json", 400, "malformed-body"),
        (b"", 400, "malformed-body"),
        (b'{"inputs": ["%s"], "pipeline": [{"op": "sharpen_everything"}]}', 422, "invalid"),
        (b'{"inputs": ["%s"], "pipeline": [{"op": "thumbnail", "size": "big"}]}', 422, "invalid"),
        (b'{"inputs": ["%s"], "pipeline": [{"op": "thumbnail", "size": 0}]}', 422, "invalid"),
        (
            b'{"inputs": ["%s"], "pipeline": [{"op": "thumbnail", "size": 9, "x": 1}]}',
            422,
            "invalid",
        ),
        (b'{"inputs": ["%s"], "pipeline": [], "priority": "urgent"}', 422, "invalid"),
        (
            b'{"inputs": ["%s"], "pipeline": [{"op": "thumbnail", "size": 9}],'
            b' "execution_duration": 999999}',
            422,
            "invalid",
        ),
        (
            b'{"inputs": ["0190d7a2-0000-7000-8000-000000000000"],'
            b' "pipeline": [{"op": "thumbnail", "size": 9}]}',
            422,
            "unknown-upload",
        ),
    ],
)
async def test_bad_job_requests_are_problems_and_never_queued(
    client: Client, alice: dict[str, str], namespace: str, body: bytes, status: int, kind: str
) -> None:
    up = await upload(client, alice)
    payload = body.replace(b"%s", up.encode())
    r = await client.post(
        "/v1/jobs", content=payload, headers={**alice, "Content-Type": "application/json"}
    )
    doc = assert_problem(r, status, kind)
    if status == 422 and kind == "invalid":
        assert doc["errors"] and doc["errors"][0]["message"]
    listed = (await client.get("/v1/jobs", headers=alice)).json()
    assert listed["items"] == []
    assert await queue_depth(namespace) == 0


async def test_field_path_is_reported(client: Client, alice: dict[str, str]) -> None:
    up = await upload(client, alice)
    r = await client.post(
        "/v1/jobs",
        json={
            "inputs": [up],
            "pipeline": [{"op": "thumbnail", "size": 10}, {"op": "thumbnail", "size": -1}],
        },
        headers=alice,
    )
    doc = assert_problem(r, 422)
    assert doc["errors"][0]["path"] == "$.pipeline[1].size"


async def test_body_over_the_limit_is_413(client: Client, alice: dict[str, str]) -> None:
    huge = b'{"inputs": [], "pad": "' + b"x" * (70 * 1024) + b'"}'
    r = await client.post(
        "/v1/jobs", content=huge, headers={**alice, "Content-Type": "application/json"}
    )
    assert_problem(r, 413, "payload-too-large")


@pytest.mark.parametrize(
    ("data", "status", "kind"),
    [
        (b"", 415, "unsupported-media"),
        (b"<html><body>hello</body></html>", 415, "unsupported-media"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "unsupported-media"),
        (b"just some text that is no image", 415, "unsupported-media"),
        (png_bomb(), 422, "image-rejected"),
    ],
)
async def test_bad_uploads(
    client: Client, alice: dict[str, str], data: bytes, status: int, kind: str, edge_settings: Any
) -> None:
    from pathlib import Path

    r = await client.post("/v1/uploads", content=data, headers=alice)
    assert_problem(r, status, kind)
    store = Path(edge_settings.store.root)
    files = [p for p in store.rglob("*") if not p.is_dir()]
    assert files == [], "nothing, not even half-written, stays in the store"


async def test_upload_over_the_size_limit(env: dict[str, str], alice: dict[str, str]) -> None:
    from contracts.settings import load_settings
    from edge.app import create_app
    from edge.settings import EdgeSettings

    settings = load_settings(EdgeSettings, {**env, "PIXFLEET_LIMITS_MAX_UPLOAD_BYTES": "5000"})
    async with AsyncTestClient(create_app(settings)) as client:
        r = await client.post("/v1/uploads", content=photo(400, 300, "BMP"), headers=alice)
        assert_problem(r, 413, "payload-too-large")


async def test_streamed_upload_over_the_limit_without_length(
    live_edge: str, alice: dict[str, str], tmp_path: Any
) -> None:
    """Chunked transfer (no Content-Length): the limit holds while streaming."""
    import httpx

    async def chunks() -> Any:
        yield photo(64, 64, "PNG")
        for _ in range(100):
            yield b"\0" * 1024 * 1024

    async with httpx.AsyncClient(base_url=live_edge, timeout=30) as http:
        r = await http.post("/v1/uploads", content=chunks(), headers=alice)
        assert_problem(r, 413, "payload-too-large")
        ok = await http.post("/v1/uploads", content=photo(64, 64, "PNG"), headers=alice)
        assert ok.status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer pfk_wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
async def test_missing_or_wrong_key_is_401(client: Client, headers: dict[str, str]) -> None:
    for method, path in [("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("POST", "/v1/uploads")]:
        r = await client.request(method, path, headers=headers, content=b"{}")
        doc = assert_problem(r, 401, "unauthorized")
        assert "Bearer" in r.headers["www-authenticate"], doc


async def test_other_owners_things_are_invisible(
    client: Client, alice: dict[str, str], bob: dict[str, str]
) -> None:
    up = await upload(client, alice)
    r = await client.post("/v1/jobs", json=job_body(up), headers=bob)
    assert_problem(r, 422, "unknown-upload")
    job = (await client.post("/v1/jobs", json=job_body(up), headers=alice)).json()
    for method, path in [
        ("GET", job["href"]),
        ("DELETE", job["href"]),
        ("GET", f"{job['href']}/events"),
        ("GET", f"{job['href']}/results/x"),
        ("GET", f"/v1/uploads/{up}"),
    ]:
        r = await client.request(method, path, headers=bob)
        assert r.status_code == 404 or (r.status_code == 422 and "upload" in r.text), r.text
    assert (await client.get("/v1/jobs", headers=bob)).json()["items"] == []


async def test_idempotency_same_body_replays_different_body_422(
    client: Client, alice: dict[str, str], bob: dict[str, str]
) -> None:
    up = await upload(client, alice)
    h = {**alice, "Idempotency-Key": "order-1"}
    first = await client.post("/v1/jobs", json=job_body(up), headers=h)
    again = await client.post("/v1/jobs", json=job_body(up), headers=h)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post("/v1/jobs", json=job_body(up, priority="batch"), headers=h)
    assert_problem(other, 422, "idempotency-key-reused")
    # Keys are per owner: bob's "order-1" is another key.
    up_b = await upload(client, bob)
    r = await client.post(
        "/v1/jobs", json=job_body(up_b), headers={**bob, "Idempotency-Key": "order-1"}
    )
    assert r.status_code == 202 and r.json()["id"] != first.json()["id"]


async def test_idempotency_50_concurrent_submissions_make_one_job(
    client: Client, alice: dict[str, str], namespace: str
) -> None:
    up = await upload(client, alice)
    h = {**alice, "Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/v1/jobs", json=job_body(up), headers=h) for _ in range(50))
    )
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(accepted) == 1
    assert all(r.status_code in (202, 409) for r in responses)
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 409)
    listed = (await client.get("/v1/jobs", headers=alice)).json()["items"]
    assert [j["id"] for j in listed] == list(accepted)
    await asyncio.sleep(0.5)
    assert await queue_depth(namespace) == 1


async def test_idempotency_survives_redis_losing_the_key(
    client: Client, alice: dict[str, str], namespace: str
) -> None:
    import redis.asyncio as aioredis

    up = await upload(client, alice)
    h = {**alice, "Idempotency-Key": "k-lost"}
    first = (await client.post("/v1/jobs", json=job_body(up), headers=h)).json()
    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    await r.delete(names.idempotency_key(namespace, "alice", "k-lost"))
    await r.aclose()
    again = await client.post("/v1/jobs", json=job_body(up), headers=h)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    r2 = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    await r2.delete(names.idempotency_key(namespace, "alice", "k-lost"))
    await r2.aclose()
    other = await client.post("/v1/jobs", json=job_body(up, priority="batch"), headers=h)
    assert_problem(other, 422, "idempotency-key-reused")


async def test_list_pagination_and_phase_filter(client: Client, alice: dict[str, str]) -> None:
    up = await upload(client, alice)
    ids = [
        (await client.post("/v1/jobs", json=job_body(up), headers=alice)).json()["id"]
        for _ in range(7)
    ]
    await client.delete(f"/v1/jobs/{ids[2]}", headers=alice)
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/jobs", params=params, headers=alice)).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert seen == list(reversed(ids))
    aborted = (await client.get("/v1/jobs", params={"phase": "ABORTED"}, headers=alice)).json()
    assert [j["id"] for j in aborted["items"]] == [ids[2]]
    bad = await client.get("/v1/jobs", params={"phase": "SLEEPING"}, headers=alice)
    assert bad.status_code == 400 or bad.status_code == 422


async def test_abort_queued_job_then_abort_again_is_409(
    client: Client, alice: dict[str, str]
) -> None:
    up = await upload(client, alice)
    job = (await client.post("/v1/jobs", json=job_body(up), headers=alice)).json()
    r = await client.delete(job["href"], headers=alice)
    assert r.status_code == 200 and r.json()["phase"] == "ABORTED"
    assert_problem(await client.delete(job["href"], headers=alice), 409, "job-not-abortable")
    assert_problem(await client.get(f"{job['href']}/results/x", headers=alice), 409)


async def test_unknown_routes_and_methods_are_problems(
    client: Client, alice: dict[str, str]
) -> None:
    assert_problem(await client.get("/v1/nothing", headers=alice), 404)
    assert_problem(await client.put("/v1/jobs", headers=alice), 405)
    assert_problem(await client.get("/v1/jobs/not-a-uuid", headers=alice), 404)


async def test_health_and_readiness(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"postgres": "ok", "redis": "ok", "rabbitmq": "ok"}
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/v1/jobs" in schema.json()["paths"]


async def test_redis_unreachable_is_503_with_retry_after(
    env: dict[str, str], alice: dict[str, str]
) -> None:
    from contracts.settings import load_settings
    from edge.app import create_app
    from edge.settings import EdgeSettings
    from tests.conftest import _free_port

    closed = f"redis://127.0.0.1:{_free_port()}/0"
    settings = load_settings(
        EdgeSettings, {**env, "PIXFLEET_REDIS_URL": closed, "PIXFLEET_REDIS_TIMEOUT": "0.5"}
    )
    async with AsyncTestClient(create_app(settings)) as client:
        up = await upload(client, alice)
        r = await client.post(
            "/v1/jobs", json=job_body(up), headers={**alice, "Idempotency-Key": "during-outage"}
        )
        doc = assert_problem(r, 503, "service-unavailable")
        assert int(r.headers["retry-after"]) > 0 and doc["detail"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
        assert (await client.get("/v1/jobs", headers=alice)).json()["items"] == []


async def test_the_accepted_snapshot_is_the_record(client: Client, alice: dict[str, str]) -> None:
    up = await upload(client, alice)
    accepted = (await client.post("/v1/jobs", json=job_body(up), headers=alice)).json()
    stored = (await client.get(accepted["href"], headers=alice)).json()
    assert stored == accepted


async def test_events_of_an_ended_job_are_one_snapshot(
    client: Client, alice: dict[str, str]
) -> None:
    up = await upload(client, alice)
    job = (await client.post("/v1/jobs", json=job_body(up), headers=alice)).json()
    await client.delete(job["href"], headers=alice)
    r = await client.get(f"{job['href']}/events", headers=alice)
    assert r.status_code == 200
    events = [line for line in r.text.splitlines() if line.startswith("event:")]
    assert events == ["event: snapshot"]
    assert '"phase":"ABORTED"' in r.text


async def test_idempotency_key_too_long_is_422(client: Client, alice: dict[str, str]) -> None:
    up = await upload(client, alice)
    r = await client.post(
        "/v1/jobs", json=job_body(up), headers={**alice, "Idempotency-Key": "k" * 256}
    )
    assert_problem(r, 422, "invalid-request")
