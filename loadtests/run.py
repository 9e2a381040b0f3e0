"""Start a local stack and measure it with k6 (all traffic to 127.0.0.1 only).

    python loadtests/run.py baseline     # 30 VUs, 30 s, POST /v1/jobs with unique keys
    python loadtests/run.py spike        # ramp to 120 VUs: status codes, shedding
    python loadtests/run.py latency      # idle submit -> COMPLETED of 50 thumbnail jobs
    python loadtests/run.py thumbnails   # jobs/s of 12 MP JPEG -> 256 px WebP, whole stack
    python loadtests/run.py smalljobs    # 2,000 small jobs from 30 clients, one worker: jobs/s,
                                         # CPU and round trips per job (--jobs, --clients)
    python loadtests/run.py smalllatency # idle 64 px interactive jobs, polled every 1 ms / SSE
    python loadtests/run.py openloop     # 100, 300, 500 req/s open loop, edge alone (--rates)
    python loadtests/run.py all          # baseline, spike, latency

Each run uses a fresh database ``pixfleet_bench`` and namespace ``bench`` (``stack.py``).
``baseline``, ``spike`` and ``openloop`` start the edge alone (accepted jobs stay queued, then
are purged), so the numbers are the edge's and its services'; ``latency``, ``thumbnails``,
``smalljobs`` and ``smalllatency`` also start one standard worker at its default slots.
Every measurement is printed as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import procstat, pyspy, stack
from loadtests.scenario_openloop import run_openloop
from loadtests.scenario_smalljobs import run_smalljobs
from loadtests.scenario_smalllatency import run_smalllatency

BASE = stack.BASE


def _report(
    name: str, data: dict[str, Any], edge_cpu: float, all_cpu: float, rss: float, wall: float
) -> dict[str, Any]:
    m = data["metrics"]
    reqs = m["http_reqs"]["count"]
    dur = m["http_req_duration"]
    failed = m["http_req_failed"]
    row = {
        "scenario": name,
        "requests": reqs,
        "req_per_s": round(reqs / wall, 1),
        "p50_ms": round(dur["med"], 2),
        "p95_ms": round(dur["p(95)"], 2),
        "p99_ms": round(dur["p(99)"], 2),
        "failure_rate": round(failed.get("value", failed.get("rate", 0.0)), 5),
        "edge_cpu_ms_per_req": round(edge_cpu * 1000 / max(reqs, 1), 3),
        "machine_cpu_ms_per_req": round(all_cpu * 1000 / max(reqs, 1), 3),
        "edge_rss_mib": round(rss, 1),
    }
    codes = {k.removeprefix("status_"): v["count"] for k, v in m.items() if k.startswith("status_")}
    if codes:
        row["status_codes"] = codes
    if codes:  # the spike scenario counts shedding without Retry-After (absent: none)
        row["shed_without_retry_after"] = m.get("shed_without_retry_after", {}).get("count", 0)
        shed = codes.get("429", 0) + codes.get("503", 0)
        row["accepted_per_s"] = round(codes.get("202", 0) / wall, 1)
        row["shed_per_s"] = round(shed / wall, 1)
    for trend in ("accepted_duration", "shed_duration"):  # the spike's latency of each kind
        if trend in m:
            t = m[trend]
            row[trend.replace("duration", "ms")] = {
                q: round(t[k], 2) for q, k in (("p50", "med"), ("p95", "p(95)"), ("p99", "p(99)"))
            }
    print(json.dumps(row), flush=True)
    return row


def run_load(
    script: str,
    env: dict[str, str],
    tmp: Path,
    key: str,
    upload: str,
    edge: Any,
    extra: dict[str, str],
    profile: str | None = None,
) -> dict[str, Any]:
    spy = None
    if profile:  # collapsed stacks of the edge while k6 runs (py-spy, sampling)
        spy = pyspy.record(edge.pid, Path(profile), duration=3600, rate=200)
    cpu0, all0, t0 = procstat.cpu_seconds(edge.pid), procstat.total_cpu(), time.monotonic()
    svc0 = procstat.service_cpu()
    k6_cpu = stack.wait_cpu(stack.k6(script, key, upload, env, tmp, extra), 3600)
    svc1 = procstat.service_cpu()
    svc1["k6"] = svc0["k6"] + k6_cpu  # k6 has exited: its CPU comes from wait4
    data = json.loads(stack.summary_path(tmp, script).read_text())
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    wall = time.monotonic() - t0
    cpu1, all1 = procstat.cpu_seconds(edge.pid), procstat.total_cpu()
    row = _report(script, data, cpu1 - cpu0, all1 - all0, procstat.rss_mib(edge.pid), wall)
    time.sleep(2 * 1.0)  # let the last confirms be marked
    accepted, marked, depth = asyncio.run(stack.published(env))
    print(
        json.dumps(
            {
                "scenario": script,
                "jobs_in_db": accepted,
                "jobs_marked_enqueued": marked,
                "messages_in_queue": depth,
            }
        ),
        flush=True,
    )
    reqs = max(row["requests"], 1)
    shares = {k: round((svc1[k] - svc0[k]) * 1000 / reqs, 3) for k in procstat.SERVICES}
    print(
        json.dumps(
            {
                "scenario": script,
                "cpu_ms_per_req_by_process": {"edge": row["edge_cpu_ms_per_req"], **shares},
            }
        ),
        flush=True,
    )
    return row


def run_latency(s: stack.Stack, upload: str, n: int = 50) -> None:
    worker = s.worker()
    try:
        headers = {"Authorization": f"Bearer {s.key}"}
        body = {
            "inputs": [upload],
            "pipeline": [{"op": "thumbnail", "size": 256, "format": "webp"}],
            "priority": "interactive",
        }
        times = []
        with httpx.Client(base_url=BASE, headers=headers, timeout=30) as client:
            for i in range(n + 3):
                t0 = time.perf_counter()
                job = client.post("/v1/jobs", json=body).json()
                with client.stream("GET", f"{job['href']}/events") as events:
                    last = None
                    for line in events.iter_lines():
                        if line.startswith("data:"):
                            last = json.loads(line[5:])
                    assert last is not None and last["phase"] == "COMPLETED", last
                if i >= 3:  # the first jobs warm the worker's child
                    times.append((time.perf_counter() - t0) * 1000)
        q = statistics.quantiles(times, n=20)
        print(
            json.dumps(
                {
                    "scenario": "latency",
                    "jobs": n,
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(q[18], 1),
                }
            ),
            flush=True,
        )
    finally:
        stack.stop(worker)


def run_thumbnails(s: stack.Stack, n: int = 400) -> None:
    """Jobs/s of 4000 x 3000 JPEG -> 256 px WebP through the whole stack, one standard worker
    at its default slots, from a backlog of ``n`` jobs."""
    from loadtests.bench_ops import make_camera_jpeg

    source = s.tmp / "camera.jpg"
    make_camera_jpeg(source)
    headers = {"Authorization": f"Bearer {s.key}"}
    with httpx.Client(base_url=BASE, headers=headers, timeout=30) as client:
        r = client.post("/v1/uploads", content=source.read_bytes())
        r.raise_for_status()
        body = {
            "inputs": [r.json()["id"]],
            "pipeline": [{"op": "thumbnail", "size": 256, "format": "webp"}],
        }
        for _ in range(n):
            client.post("/v1/jobs", json=body).raise_for_status()
    worker = s.worker()
    try:
        t0, cpu0 = time.monotonic(), procstat.total_cpu()
        while asyncio.run(_count_done(s.env)) < n:
            if time.monotonic() - t0 > 600:
                raise SystemExit("the backlog did not drain in 10 minutes")
            time.sleep(0.2)
        cpu = procstat.total_cpu() - cpu0
        rate, errors = asyncio.run(stack.completion_rate(s.env))
        print(
            json.dumps(
                {
                    "scenario": "thumbnails",
                    "jobs": n,
                    "jobs_per_s": round(rate, 1),
                    "errors": errors,
                    "machine_cpu_ms_per_job": round(cpu * 1000 / n, 1),
                }
            ),
            flush=True,
        )
    finally:
        stack.stop(worker)


async def _count_done(env: dict[str, str]) -> int:
    conn = await asyncpg.connect(env["PIXFLEET_POSTGRES_DSN"])
    try:
        return int(await conn.fetchval("SELECT count(*) FROM jobs WHERE ended_at IS NOT NULL"))
    finally:
        await conn.close()


SCENARIOS = ["baseline", "spike", "latency", "thumbnails", "smalljobs", "smalllatency",
             "openloop", "all"]  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--vus", default="30", help="baseline: virtual users")
    parser.add_argument("--duration", default="30s", help="baseline, openloop: per run/rate")
    parser.add_argument("--processes", default="1", help="edge processes")
    parser.add_argument(
        "--profile",
        help="baseline, spike: a file for py-spy collapsed stacks of the edge; smalljobs: a"
        " directory for worker.txt and slot.txt (10 s each; the CPU numbers then include it)",
    )
    parser.add_argument("--jobs", type=int, help="smalljobs: 2000; smalllatency: 50")
    parser.add_argument("--clients", type=int, default=30, help="smalljobs: closed-loop clients")
    parser.add_argument("--op-runs", type=int, default=200, help="smalljobs: in-process op runs")
    parser.add_argument("--timeout", type=float, default=600, help="smalljobs: seconds at most")
    parser.add_argument("--size", type=int, default=64, help="smalllatency: image and thumbnail")
    parser.add_argument("--modes", default="poll,sse", help="smalllatency: poll and/or sse")
    parser.add_argument("--interval-ms", type=float, default=1.0, help="smalllatency: polling")
    parser.add_argument("--rates", default="100,300,500", help="openloop: requests per second")
    parser.add_argument(
        "--tree",
        type=Path,
        help="run the edge, workers and in-process ops from this tree instead of this"
        " checkout (e.g. `git archive <commit> | tar -x -C DIR`: a commit against another)",
    )
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    code = args.tree.resolve() if args.tree else stack.ROOT
    sys.path.insert(0, str(code))  # pixfleet, contracts and worker imported here: the tree's
    print(json.dumps({"code": str(code), "commit": _commit(code)}), flush=True)
    with stack.fresh_stack(args.processes, code) as s:
        env, tmp, key = s.env, s.tmp, s.key
        if args.scenario == "smalljobs":
            profile = Path(args.profile) if args.profile else None
            run_smalljobs(s, args.jobs or 2000, args.clients, args.op_runs, profile, args.timeout)
            return
        if args.scenario == "smalllatency":
            modes = args.modes.split(",")
            run_smalllatency(s, args.jobs or 50, args.size, modes, args.interval_ms / 1000)
            return
        upload = _upload(key)
        if args.scenario == "openloop":
            run_openloop(s, upload, [int(r) for r in args.rates.split(",")], args.duration)
            return
        scenarios = ["baseline", "spike", "latency"] if args.scenario == "all" else [args.scenario]
        for scenario in scenarios:
            if scenario == "latency":
                run_latency(s, upload)
            elif scenario == "thumbnails":
                run_thumbnails(s)
            else:
                extra = {"VUS": args.vus, "DURATION": args.duration}
                run_load(scenario, env, tmp, key, upload, s.edge, extra, args.profile)


def _commit(code: Path) -> str:
    """The commit of a checkout (``+dirty`` with local changes); an exported tree has none
    (name its directory after the commit)."""
    git = ["git", "-C", str(code)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and (code / ".git").exists():
        dirty = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return "unknown (not a checkout)"


def _upload(key: str) -> str:
    from cli.demo import gradient_png

    return stack.upload(key, gradient_png(1600, 1200))


if __name__ == "__main__":
    main()
