"""``smalllatency``: idle submit -> COMPLETED of tiny interactive jobs, one after another.

A 64x64 photo-like JPEG is uploaded; each job is a 64 px WebP thumbnail of it at
``"priority": "interactive"`` on an idle stack with one standard worker. The client sees
COMPLETED by polling ``GET /v1/jobs/{id}`` every millisecond (``poll``) or on the SSE stream
(``sse``). The database's timestamps split each job into queue (created -> started) and run
(started -> ended), and the time from the row's end to the client seeing it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from loadtests import stack
from loadtests.photo import photo_jpeg

_FINAL = {"COMPLETED", "ERROR", "ABORTED"}
_WARM_UP = 3


def _quantiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=20) if len(values) > 1 else values * 19
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p95_ms": round(q[18], 2),
        "min_ms": round(min(values), 2),
        "max_ms": round(max(values), 2),
    }


@dataclass
class _Job:
    """One measured job: client times (ms), when COMPLETED was seen (epoch s), requests."""

    id: str
    total_ms: float
    submit_ms: float
    seen_at: float
    gets: list[float] = field(default_factory=list)  # each poll's GET, ms


def _poll(client: httpx.Client, href: str, interval: float, timeout: float, job: _Job) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(href)
        job.gets.append(r.elapsed.total_seconds() * 1000)
        if r.status_code == 200 and (phase := r.json()["phase"]) in _FINAL:
            return str(phase)
        time.sleep(interval)
    raise SystemExit(f"{href} did not end within {timeout:.0f} s")


def _sse(client: httpx.Client, href: str) -> str:
    """Read the stream until an event says the job ended (not until the stream closes)."""
    with client.stream("GET", f"{href}/events") as events:
        for line in events.iter_lines():
            if line.startswith("data:") and (phase := json.loads(line[5:])["phase"]) in _FINAL:
                return str(phase)
    raise SystemExit(f"{href}: the event stream closed before the job ended")


def _submit(client: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, int]:
    """POST the job; a 503 (a backing service restarting) is retried after its Retry-After,
    at most 5 times. Returns the answer and the refusals seen."""
    for refused in range(6):
        r = client.post("/v1/jobs", json=body)
        if r.status_code != 503 or refused == 5:
            r.raise_for_status()
            return r, refused
        time.sleep(min(float(r.headers.get("Retry-After", 1)), 5.0))
    raise AssertionError("unreachable")


def _run(
    client: httpx.Client, body: dict[str, Any], mode: str, jobs: int, interval: float
) -> list[_Job]:
    measured = []
    for i in range(jobs + _WARM_UP):
        t0 = time.perf_counter()
        r, refused = _submit(client, body)
        if refused:
            print(json.dumps({"scenario": "smalllatency", "refused_503": refused}), flush=True)
            t0 = time.perf_counter() - r.elapsed.total_seconds()  # time the accepted POST
        t1 = time.perf_counter()
        job = _Job(str(r.json()["id"]), 0.0, (t1 - t0) * 1000, 0.0)
        href = r.json()["href"]
        phase = _poll(client, href, interval, 30, job) if mode == "poll" else _sse(client, href)
        job.total_ms, job.seen_at = (time.perf_counter() - t0) * 1000, time.time()
        if phase != "COMPLETED":
            raise SystemExit(f"smalllatency: job {href} ended {phase}")
        if i >= _WARM_UP:  # the first jobs warm the worker's child and the pools
            measured.append(job)
    return measured


async def _db_split(dsn: str, jobs: list[_Job]) -> dict[str, float]:
    """Medians of queue (created -> started) and run (started -> ended) from the job rows,
    and of seen (ended -> the client saw COMPLETED; one host, one clock)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id::text, extract(epoch FROM started_at - created_at) * 1000 AS queue,"
            " extract(epoch FROM ended_at - started_at) * 1000 AS run,"
            " extract(epoch FROM ended_at) AS ended FROM jobs WHERE id = ANY($1::uuid[])",
            [j.id for j in jobs],
        )
    finally:
        await conn.close()
    seen = {j.id: j.seen_at for j in jobs}
    return {
        "db_queue_p50_ms": round(statistics.median(float(r["queue"]) for r in rows), 2),
        "db_run_p50_ms": round(statistics.median(float(r["run"]) for r in rows), 2),
        "seen_after_end_p50_ms": round(
            statistics.median((seen[r["id"]] - float(r["ended"])) * 1000 for r in rows), 2
        ),
    }


def run_smalllatency(
    s: stack.Stack, jobs: int, size: int, modes: list[str], interval: float
) -> None:
    upload_id = stack.upload(s.key, photo_jpeg(size, size))
    body = {
        "inputs": [upload_id],
        "pipeline": [{"op": "thumbnail", "size": size, "format": "webp"}],
        "priority": "interactive",
    }
    worker = s.worker()
    try:
        asyncio.run(stack.wait_consumer())
        time.sleep(1.0)  # idle
        headers = {"Authorization": f"Bearer {s.key}"}
        with httpx.Client(base_url=stack.BASE, headers=headers, timeout=30) as client:
            for mode in modes:
                measured = _run(client, body, mode, jobs, interval)
                split = asyncio.run(_db_split(s.env["PIXFLEET_POSTGRES_DSN"], measured))
                row = {
                    "scenario": "smalllatency",
                    "mode": mode,
                    "jobs": jobs,
                    "input": f"{size}x{size} JPEG -> {size} px WebP, interactive",
                    **_quantiles([j.total_ms for j in measured]),
                    "submit_p50_ms": round(statistics.median(j.submit_ms for j in measured), 2),
                    **split,
                }
                if mode == "poll":
                    gets = [g for j in measured for g in j.gets]
                    row["gets_per_job"] = round(len(gets) / jobs, 1)
                    row["get_p50_ms"] = round(statistics.median(gets), 2)
                    row["poll_interval_ms"] = interval * 1000
                print(json.dumps(row), flush=True)
    finally:
        stack.stop(worker)
