"""Fan-out and fan-in in the runtime: plan, parallel tasks on any worker, one combine.

The ``test_fan`` plugin operation (``tests/plugin_ops.py``) fans out one task per input; the
tests run real ``pixfleet worker`` processes, kill them mid-task and mid-combine, fail a task,
abort the job and deliver duplicate messages, and check the job store of record.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest

from contracts import names
from contracts.jobs import Pool
from contracts.messages import JobMessage
from pixfleet.broker import job_message
from tests.helpers import (
    FINAL,
    Client,
    fetch_result,
    fetch_rows,
    submit,
    upload,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.slow


async def _uploads(client: Client, headers: dict[str, str], n: int) -> list[str]:
    return [await upload(client, headers) for _ in range(n)]


def _markers(folder: Path, prefix: str) -> list[Path]:
    return sorted(folder.glob(f"{prefix}-*"))


async def test_tasks_run_in_parallel_on_several_workers_and_combine_once(
    client: Client,
    alice: dict[str, str],
    start_worker: Any,
    tmp_path: Path,
    database: str,
    env: dict[str, str],
) -> None:
    start_worker()
    start_worker()
    ups = await _uploads(client, alice, 4)
    markers = tmp_path / "markers"
    markers.mkdir()
    job = await submit(
        client, alice, ups, [{"op": "test_fan", "seconds": 0.6, "markers": str(markers)}]
    )
    done = await wait_for(client, job["href"], alice, FINAL)
    assert done["phase"] == "COMPLETED", done
    assert [r["name"] for r in done["results"]] == ["sum.json"]
    body = json.loads(await fetch_result(client, alice, done["results"][0]))
    assert [p["index"] for p in body["parts"]] == [0, 1, 2, 3]
    assert all(p["of"] == 4 for p in body["parts"])  # the plan's shared state reached tasks
    assert body["sum"] == sum(p["size"] for p in body["parts"]) > 0
    tasks = await fetch_rows(
        database, "SELECT idx, phase, attempts, worker, label FROM job_tasks ORDER BY idx"
    )
    assert [(t["idx"], t["phase"], t["attempts"]) for t in tasks] == [
        (i, "COMPLETED", 1) for i in range(4)
    ]
    assert [t["label"] for t in tasks] == ups
    assert len({t["worker"] for t in tasks}) == 2  # both workers took tasks
    assert len(_markers(markers, "combine")) == 1
    jobs = await fetch_rows(database, "SELECT stage, tasks_done, tasks_total, progress FROM jobs")
    assert [tuple(j) for j in jobs] == [("combine", 4, 4, 1.0)]
    work = Path(env["PIXFLEET_STORE_ROOT"]) / names.work_prefix(job["id"])
    assert not work.exists()  # intermediate files go when the job ends


async def test_events_count_the_tasks(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    ups = await _uploads(client, alice, 3)
    job = await submit(client, alice, ups, [{"op": "test_fan", "seconds": 0.3}])
    messages: list[str] = []
    async with client.stream("GET", f"{job['href']}/events", headers=alice) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("message"):
                    messages.append(event["message"])
                if event.get("phase") in FINAL:
                    assert event["phase"] == "COMPLETED"
                    break
    counted = [m for m in messages if m.endswith("tasks done")]
    assert counted[-1] == "3 of 3 tasks done"
    assert "1 of 3 tasks done" in counted


async def test_worker_killed_during_a_task_the_task_is_retried_and_the_job_completes_once(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path, database: str
) -> None:
    worker = start_worker()
    ups = await _uploads(client, alice, 2)
    markers = tmp_path / "markers"
    markers.mkdir()
    job = await submit(
        client, alice, ups, [{"op": "test_fan", "seconds": 3, "markers": str(markers)}]
    )

    async def task_started() -> bool:
        return bool(_markers(markers, "task"))

    await wait_until(task_started)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    start_worker()
    done = await wait_for(client, job["href"], alice, FINAL, timeout=90)
    assert done["phase"] == "COMPLETED", done
    tasks = await fetch_rows(database, "SELECT idx, phase, attempts FROM job_tasks ORDER BY idx")
    assert tasks[0]["phase"] == tasks[1]["phase"] == "COMPLETED"
    assert tasks[0]["attempts"] == 2  # the killed task ran again
    assert len(_markers(markers, "combine")) == 1
    rows = await fetch_rows(database, "SELECT phase, results FROM jobs")
    assert [r["phase"] for r in rows] == ["COMPLETED"]
    assert [r["name"] for r in msgspec.json.decode(rows[0]["results"])] == ["sum.json"]


async def test_worker_killed_during_the_combine_step_the_job_completes_once(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path, database: str
) -> None:
    worker = start_worker()
    ups = await _uploads(client, alice, 2)
    markers = tmp_path / "markers"
    markers.mkdir()
    job = await submit(
        client,
        alice,
        ups,
        [{"op": "test_fan", "combine_seconds": 3, "markers": str(markers)}],
    )

    async def combining() -> bool:
        return bool(_markers(markers, "combine"))

    await wait_until(combining)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    start_worker()
    done = await wait_for(client, job["href"], alice, FINAL, timeout=90)
    assert done["phase"] == "COMPLETED", done
    assert len(_markers(markers, "combine")) == 2  # ran again after the crash ...
    rows = await fetch_rows(database, "SELECT phase, results, attempts FROM jobs")
    assert [r["phase"] for r in rows] == ["COMPLETED"]  # ... recorded once
    assert len(msgspec.json.decode(rows[0]["results"])) == 1
    assert rows[0]["attempts"] == 3  # plan, the killed combine, the combine
    tasks = await fetch_rows(database, "SELECT attempts FROM job_tasks")
    assert [t["attempts"] for t in tasks] == [1, 1]  # tasks are not redone


async def test_duplicate_deliveries_do_not_run_the_combine_twice(
    client: Client,
    alice: dict[str, str],
    start_worker: Any,
    tmp_path: Path,
    database: str,
    env: dict[str, str],
) -> None:
    start_worker()
    ups = await _uploads(client, alice, 2)
    markers = tmp_path / "markers"
    markers.mkdir()
    job = await submit(client, alice, ups, [{"op": "test_fan", "markers": str(markers)}])
    done = await wait_for(client, job["href"], alice, FINAL)
    assert done["phase"] == "COMPLETED"
    # Every message the job ever had, delivered again: each task twice, the job twice.
    ns = env["PIXFLEET_RABBIT_NAMESPACE"]
    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.jobs_exchange(ns))
        for task in (0, 1, 0, 1, None, None):
            msg = JobMessage(job_id=job["id"], pool=Pool.standard, task=task)
            await exchange.publish(job_message(msg), "standard")
        queue = await channel.get_queue(names.pool_queue(ns, Pool.standard), ensure=False)

        async def drained() -> bool:
            declared = await channel.declare_queue(queue.name, passive=True)
            return declared.declaration_result.message_count == 0

        await wait_until(drained)
    finally:
        await conn.close()
    again = (await client.get(job["href"], headers=alice)).json()
    assert again["phase"] == "COMPLETED" and again["results"] == done["results"]
    assert len(_markers(markers, "combine")) == 1
    assert len(_markers(markers, "task")) == 2
    rows = await fetch_rows(database, "SELECT attempts FROM jobs")
    assert [r["attempts"] for r in rows] == [2]  # plan and combine, nothing more


async def test_a_task_failing_with_a_usage_error_fails_the_job_naming_it(
    client: Client,
    alice: dict[str, str],
    start_worker: Any,
    tmp_path: Path,
    database: str,
    env: dict[str, str],
) -> None:
    start_worker()
    ups = await _uploads(client, alice, 3)
    markers = tmp_path / "markers"
    markers.mkdir()
    job = await submit(client, alice, ups, [{"op": "test_fan", "fail": 1, "markers": str(markers)}])
    done = await wait_for(client, job["href"], alice, FINAL)
    assert done["phase"] == "ERROR", done
    assert done["error"]["code"] == "usage_error"
    assert done["error"]["message"] == (f"task 2 ({ups[1]}): input {ups[1]} is not to my taste")
    tasks = await fetch_rows(database, "SELECT idx, phase FROM job_tasks ORDER BY idx")
    assert tasks[1]["phase"] == "ERROR"
    assert not _markers(markers, "combine")
    work = Path(env["PIXFLEET_STORE_ROOT"]) / names.work_prefix(job["id"])

    async def tidied() -> bool:
        return not work.exists()

    await wait_until(tidied, timeout=10)


async def test_abort_of_the_job_stops_its_running_tasks(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path, database: str
) -> None:
    start_worker()
    ups = await _uploads(client, alice, 3)
    markers = tmp_path / "markers"
    markers.mkdir()
    job = await submit(
        client, alice, ups, [{"op": "test_fan", "seconds": 60, "markers": str(markers)}]
    )

    async def task_started() -> bool:
        return bool(_markers(markers, "task"))

    await wait_until(task_started)
    pid = int(_markers(markers, "task")[0].read_text())
    r = await client.delete(job["href"], headers=alice)
    assert r.status_code == 200 and r.json()["phase"] == "ABORTED"

    async def killed() -> bool:
        return not Path(f"/proc/{pid}").exists()

    await wait_until(killed, timeout=10)
    # The slot serves the next job; the aborted job's other tasks never start.
    nxt = await submit(client, alice, ups[:1], [{"op": "test_slow", "seconds": 0.1}])
    assert (await wait_for(client, nxt["href"], alice, FINAL))["phase"] == "COMPLETED"
    assert len(_markers(markers, "task")) == 1
    assert (await client.get(job["href"], headers=alice)).json()["phase"] == "ABORTED"
    tasks = await fetch_rows(database, "SELECT phase FROM job_tasks WHERE phase = 'COMPLETED'")
    assert tasks == []


async def test_a_fan_out_operation_must_be_the_only_step(
    client: Client, alice: dict[str, str]
) -> None:
    up = await upload(client, alice)
    r = await client.post(
        "/v1/jobs",
        json={"inputs": [up], "pipeline": [{"op": "test_fan"}, {"op": "archive"}]},
        headers=alice,
    )
    assert r.status_code == 422, r.text
    assert any("only step" in e["message"] for e in r.json()["errors"])
