"""The whole path of a job: edge -> PostgreSQL + RabbitMQ -> worker process -> store -> client.

Workers are real ``pixfleet worker`` processes; the tests kill, abort and starve them.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from PIL import Image

from contracts import names
from tests.helpers import (
    BOTH_STORES,
    FINAL,
    Client,
    child_pid,
    fetch_result,
    fetch_rows,
    queue_depth,
    submit,
    upload,
    wait_for,
    wait_until,
)
from tests.hostile import corrupt_huffman_jpeg
from tests.images import photo

pytestmark = pytest.mark.slow


@BOTH_STORES
async def test_thumbnail_end_to_end(
    client: Client, alice: dict[str, str], start_worker: Any, store_backend: str
) -> None:
    start_worker()
    up = await upload(client, alice, photo(1200, 900, "JPEG"))
    job = await submit(
        client,
        alice,
        [up],
        [{"op": "thumbnail", "size": 256, "format": "webp"}],
        priority="interactive",
    )
    done = await wait_for(client, job["href"], alice, FINAL)
    assert done["phase"] == "COMPLETED", done
    assert done["attempts"] == 1 and done["progress"] == 1.0
    [result] = done["results"]
    assert result["media_type"] == "image/webp" and result["name"].endswith(".webp")
    data = await fetch_result(client, alice, result)
    assert len(data) == result["size"]
    img = Image.open(io.BytesIO(data))
    assert img.format == "WEBP" and img.size == (256, 192)


async def test_exif_orientation_is_honoured(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    up = await upload(client, alice, photo(600, 300, "JPEG", orientation=6))
    job = await submit(client, alice, [up], [{"op": "thumbnail", "size": 100, "format": "png"}])
    done = await wait_for(client, job["href"], alice, FINAL)
    img = Image.open(io.BytesIO(await fetch_result(client, alice, done["results"][0])))
    assert img.size == (50, 100)  # rotated 90 degrees: portrait


async def test_events_stream_snapshot_progress_and_final(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    up = await upload(client, alice)
    job = await submit(client, alice, [up], [{"op": "test_slow", "seconds": 1.0}])
    events = []
    async with client.stream("GET", f"{job['href']}/events", headers=alice) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    assert events[0][0] == "snapshot"
    assert events[-1][0] == "snapshot" and events[-1][1]["phase"] == "COMPLETED"
    progress = [e for k, e in events if k == "progress"]
    assert progress and all(e["phase"] == "EXECUTING" for e in progress)
    fractions = [e["progress"] for e in progress]
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1


async def test_undecodable_jpeg_fails_as_usage_error_and_the_pool_goes_on(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    data = photo(800, 600, "JPEG")
    bad = await upload(client, alice, corrupt_huffman_jpeg())  # only a decode can tell
    good = await upload(client, alice, data)
    first = await submit(client, alice, [bad], [{"op": "thumbnail", "size": 64}])
    second = await submit(client, alice, [good], [{"op": "thumbnail", "size": 64}])
    failed = await wait_for(client, first["href"], alice, FINAL)
    assert failed["phase"] == "ERROR" and failed["error"]["code"] == "usage_error", failed
    assert failed["attempts"] == 1
    assert (await wait_for(client, second["href"], alice, FINAL))["phase"] == "COMPLETED"


async def test_crashing_child_fails_once_and_is_replaced(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    up = await upload(client, alice)
    crash = await submit(client, alice, [up], [{"op": "test_crash"}])
    after = await submit(client, alice, [up], [{"op": "thumbnail", "size": 32}])
    failed = await wait_for(client, crash["href"], alice, FINAL)
    assert failed["phase"] == "ERROR" and failed["error"]["code"] == "worker_crashed"
    assert failed["attempts"] == 1
    assert (await wait_for(client, after["href"], alice, FINAL))["phase"] == "COMPLETED"


async def test_execution_duration_limit_kills_the_child(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    start_worker()
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    slow = await submit(
        client,
        alice,
        [up],
        [{"op": "test_slow", "seconds": 30, "marker": str(marker)}],
        execution_duration=1,
    )
    failed = await wait_for(client, slow["href"], alice, FINAL)
    assert failed["phase"] == "ERROR", failed
    assert failed["error"]["code"] == "execution_duration_exceeded"
    assert not Path(f"/proc/{int(marker.read_text())}").exists()
    nxt = await submit(client, alice, [up], [{"op": "thumbnail", "size": 32}])
    assert (await wait_for(client, nxt["href"], alice, FINAL))["phase"] == "COMPLETED"


async def test_abort_kills_the_running_child_and_the_slot_serves_the_next_job(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    start_worker()
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    slow = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 60, "marker": str(marker)}]
    )

    pid = await child_pid(marker)
    r = await client.delete(slow["href"], headers=alice)
    assert r.status_code == 200 and r.json()["phase"] == "ABORTED"

    async def gone() -> bool:
        return not Path(f"/proc/{pid}").exists()

    await wait_until(gone, timeout=10)
    nxt = await submit(client, alice, [up], [{"op": "test_slow", "seconds": 0.1}])
    done = await wait_for(client, nxt["href"], alice, FINAL)
    assert done["phase"] == "COMPLETED"
    assert (await client.get(slow["href"], headers=alice)).json()["phase"] == "ABORTED"


async def test_worker_killed_mid_job_the_job_completes_exactly_once(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path, database: str
) -> None:
    worker = start_worker()
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    job = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 2, "marker": str(marker)}]
    )

    child = await child_pid(marker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)

    async def child_gone() -> bool:  # PR_SET_PDEATHSIG: the child dies with its parent
        return not Path(f"/proc/{child}").exists()

    await wait_until(child_gone, timeout=10)
    assert (await client.get(job["href"], headers=alice)).json()["phase"] == "EXECUTING"
    marker.unlink()
    start_worker()
    done = await wait_for(client, job["href"], alice, FINAL, timeout=60)
    assert done["phase"] == "COMPLETED", done
    assert done["attempts"] == 2
    assert len(done["results"]) == 1
    rows = await fetch_rows(database, "SELECT phase, attempts FROM jobs")
    assert [tuple(r) for r in rows] == [("COMPLETED", 2)]


async def test_transient_failures_dead_letter_after_max_attempts(
    client: Client, alice: dict[str, str], start_worker: Any, namespace: str
) -> None:
    start_worker()  # PIXFLEET_MAX_ATTEMPTS=3, retry delays 0.3 s and 0.6 s
    up = await upload(client, alice)
    job = await submit(client, alice, [up], [{"op": "test_flaky"}])
    failed = await wait_for(client, job["href"], alice, FINAL)
    assert failed["phase"] == "ERROR", failed
    assert failed["attempts"] == 3
    assert (
        failed["error"]["code"] == "transient_error" and "3 attempts" in failed["error"]["message"]
    )

    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    try:
        channel = await conn.channel()
        dead = await channel.get_queue(names.dead_queue(namespace), ensure=False)

        async def dead_lettered() -> bool:
            q = await channel.declare_queue(names.dead_queue(namespace), passive=True)
            return bool(q.declaration_result.message_count)

        await wait_until(dead_lettered, timeout=10)
        message = await dead.get(no_ack=True)
        assert json.loads(message.body)["job_id"] == job["id"]
        assert message.headers["x-pixfleet-error-code"] == "transient_error"
    finally:
        await conn.close()
    await asyncio.sleep(2.0)  # several retry periods: nothing comes back
    again = (await client.get(job["href"], headers=alice)).json()
    assert (again["phase"], again["attempts"]) == ("ERROR", 3)
    assert await queue_depth(namespace) == 0


async def test_interactive_job_overtakes_a_batch_backlog(
    client: Client,
    alice: dict[str, str],
    start_worker: Any,
    namespace: str,
    database: str,
    tmp_path: Path,
) -> None:
    start_worker(slots=1)
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    blocker = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 1.5, "marker": str(marker)}]
    )

    await child_pid(marker)
    batch = [
        await submit(client, alice, [up], [{"op": "test_slow", "seconds": 0}], priority="batch")
        for _ in range(100)
    ]

    async def all_queued() -> bool:
        return await queue_depth(namespace) >= 100

    await wait_until(all_queued)
    urgent = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 0}], priority="interactive"
    )
    last = await wait_for(client, batch[-1]["href"], alice, FINAL, timeout=120)
    assert last["phase"] == "COMPLETED"
    await wait_for(client, urgent["href"], alice, FINAL)
    rows = await fetch_rows(
        database, "SELECT id::text, started_at FROM jobs WHERE id::text <> $1", blocker["id"]
    )
    started = {r["id"]: r["started_at"] for r in rows}
    urgent_start = started.pop(urgent["id"])
    before = [i for i, t in started.items() if t < urgent_start]
    assert len(started) == 100 and len(before) <= 1, len(before)


async def test_sigterm_finishes_running_job_and_exits_zero(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    worker = start_worker()
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    job = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 1.5, "marker": str(marker)}]
    )

    await child_pid(marker)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    assert (await client.get(job["href"], headers=alice)).json()["phase"] == "COMPLETED"


async def test_sigterm_requeues_jobs_past_the_grace_period(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    worker = start_worker(PIXFLEET_SHUTDOWN_GRACE="0.5")
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    job = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 3, "marker": str(marker)}]
    )

    await child_pid(marker)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    snap = (await client.get(job["href"], headers=alice)).json()
    assert snap["phase"] == "QUEUED", snap
    start_worker()
    done = await wait_for(client, job["href"], alice, FINAL)
    assert done["phase"] == "COMPLETED" and done["attempts"] == 2


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def broker_outage() -> Any:
    """Stop RabbitMQ's application for a while; always start it again."""
    stopped = False

    def stop() -> None:
        nonlocal stopped
        _rabbitmqctl("stop_app")
        stopped = True

    def start() -> None:
        nonlocal stopped
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
        stopped = False

    yield stop, start
    if stopped:
        start()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs rabbitmqctl (root)")
async def test_broker_outage_accepted_jobs_are_delivered_by_the_relay(
    client: Client, alice: dict[str, str], start_worker: Any, broker_outage: Any
) -> None:
    stop, start = broker_outage
    start_worker()
    up = await upload(client, alice)
    await asyncio.to_thread(stop)
    accepted, refused = [], 0
    for i in range(10):
        r = await client.post(
            "/v1/jobs",
            headers={**alice, "Idempotency-Key": f"o{i}"},
            json={"inputs": [up], "pipeline": [{"op": "thumbnail", "size": 32}]},
        )
        if r.status_code == 202:
            accepted.append(r.json())
        else:
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            refused += 1
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["rabbitmq"] != "ok"
    await asyncio.to_thread(start)
    for job in accepted:
        done = await wait_for(client, job["href"], alice, FINAL, timeout=90)
        assert done["phase"] == "COMPLETED", done
    assert len(accepted) + refused == 10 and accepted
    assert (await client.get("/readyz")).status_code == 200


async def test_dead_letters_can_be_replayed(
    client: Client, alice: dict[str, str], start_worker: Any, namespace: str, database: str
) -> None:
    from cli.deadletters import list_dead, replay_dead
    from contracts.settings import PostgresSettings, RabbitSettings, Secret

    start_worker()
    up = await upload(client, alice)
    job = await submit(client, alice, [up], [{"op": "test_flaky"}])
    assert (await wait_for(client, job["href"], alice, FINAL))["phase"] == "ERROR"
    rabbit = RabbitSettings(namespace=namespace, retry_delays=[0.3, 0.6])

    async def listed() -> bool:
        return [r["job_id"] for r in await list_dead(rabbit)] == [job["id"]]

    await wait_until(listed, timeout=10)
    assert await listed()  # listing does not consume
    replayed = await replay_dead(rabbit, PostgresSettings(dsn=Secret(database)), job["id"])
    assert replayed == 1
    # The flaky op fails again: three fresh attempts, then back in the dead-letter queue.
    await wait_until(listed, timeout=30)
    again = (await client.get(job["href"], headers=alice)).json()
    assert (again["phase"], again["attempts"]) == ("ERROR", 3)


async def test_children_are_recycled_after_max_tasks(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    start_worker(PIXFLEET_CHILD_MAX_TASKS="2")
    up = await upload(client, alice)
    pids = []
    for i in range(3):
        marker = tmp_path / f"pid{i}"
        job = await submit(
            client, alice, [up], [{"op": "test_slow", "seconds": 0, "marker": str(marker)}]
        )
        assert (await wait_for(client, job["href"], alice, FINAL))["phase"] == "COMPLETED"
        pids.append(int(marker.read_text()))
    assert pids[0] == pids[1] != pids[2]
    assert not Path(f"/proc/{pids[0]}").exists()
