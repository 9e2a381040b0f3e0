"""``openloop``: the submission path at fixed arrival rates (k6 ``constant-arrival-rate``).

The edge runs alone (no worker: accepted jobs stay queued; the queue is purged between
rates). For each rate: edge CPU per request from /proc, the services' CPU per request, the
TCP segments the edge sent to each service per request, latency percentiles and the
iterations k6 could not start in time (``dropped_iterations``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from loadtests import counters, procstat, stack

_IDLE_SECONDS = 5.0


def _edge_idle_ms_per_s(edge: int) -> float:
    """The edge's background CPU (relay, sweeper, timers) while nothing is sent."""
    c0, t0 = procstat.cpu_seconds(edge), time.monotonic()
    time.sleep(_IDLE_SECONDS)
    return round((procstat.cpu_seconds(edge) - c0) * 1000 / (time.monotonic() - t0), 3)


def _one_rate(s: stack.Stack, upload_id: str, rate: int, duration: str) -> dict[str, Any]:
    asyncio.run(stack.purge_queues())
    time.sleep(2.0)  # the last rate's confirms and marks settle
    pids = procstat.tree(s.edge.pid)
    roles = dict.fromkeys(pids, "edge")
    tcp0, redis0 = counters.tcp_sockets(pids), counters.redis_counters()
    pg_started = counters.pg_started()
    e0, svc0 = procstat.cpu_seconds(s.edge.pid), procstat.service_cpu(stack.DB)
    all0, t0 = procstat.total_cpu(), time.monotonic()
    extra = {"RATE": str(rate), "DURATION": duration}
    k6 = stack.k6("openloop", s.key, upload_id, s.env, s.tmp, extra, tag=f"-{rate}")
    k6_cpu = stack.wait_cpu(k6, 600)
    wall = time.monotonic() - t0
    e1, svc1 = procstat.cpu_seconds(s.edge.pid), procstat.service_cpu(stack.DB)
    all1 = procstat.total_cpu()
    tcp1, redis1 = counters.tcp_sockets(pids), counters.redis_counters()
    m = json.loads(stack.summary_path(s.tmp, "openloop", f"-{rate}").read_text())["metrics"]
    n = max(int(m["http_reqs"]["count"]), 1)
    dur, failed = m["http_req_duration"], m["http_req_failed"]
    services = {k: round((svc1[k] - svc0[k]) * 1000 / n, 3) for k in svc1 if k != "k6"}
    tcp = counters.tcp_delta(tcp0, tcp1, roles)
    return {
        "scenario": "openloop",
        "rate": rate,
        "requests": n,
        "req_per_s": round(n / wall, 1),
        "accepted_per_s": round(int(m.get("status_202", {}).get("count", 0)) / wall, 1),
        "dropped_iterations": int(m.get("dropped_iterations", {}).get("count", 0)),
        "refused": int(m.get("status_other", {}).get("count", 0)),
        "failure_rate": round(failed.get("value", failed.get("rate", 0.0)), 5),
        "p50_ms": round(dur["med"], 2),
        "p95_ms": round(dur["p(95)"], 2),
        "p99_ms": round(dur["p(99)"], 2),
        "edge_cpu_ms_per_req": round((e1 - e0) * 1000 / n, 3),
        "services_cpu_ms_per_req": services,
        "k6_cpu_ms_per_req": round(k6_cpu * 1000 / n, 3),
        "machine_cpu_ms_per_req": round((all1 - all0) * 1000 / n, 3),
        "other_processes_cpu_ms_per_req": round(  # the bench itself, others' work
            (all1 - all0 - (e1 - e0) - k6_cpu) * 1000 / n
            - sum(v for k, v in services.items() if k != "postgres_db"),
            3,
        ),
        "edge_tcp_segments_out_per_req": {
            k.removeprefix("edge->"): round(v["data_segs_out"] / n, 3) for k, v in tcp.items()
        },
        "redis_calls_per_req": counters.per(counters.delta(redis0, redis1), n, 3),
        "edge_rss_mib": round(procstat.rss_mib(s.edge.pid), 1),
        "postgres_restarted": counters.pg_started() != pg_started,  # someone else's test
    }


def run_openloop(s: stack.Stack, upload_id: str, rates: list[int], duration: str) -> None:
    idle = _edge_idle_ms_per_s(s.edge.pid)
    print(json.dumps({"scenario": "openloop", "edge_idle_cpu_ms_per_s": idle}), flush=True)
    for rate in rates:
        row = _one_rate(s, upload_id, rate, duration)
        time.sleep(2.0)  # confirmed ids are marked enqueued in batches
        accepted, marked, _ = asyncio.run(stack.published(s.env))
        row["jobs_unconfirmed_so_far"] = accepted - marked
        print(json.dumps(row), flush=True)
