"""Start a local stack and measure it with k6 (all traffic to 127.0.0.1 only).

    python loadtests/run.py baseline   # 30 VUs, 30 s, POST /v1/jobs with unique keys
    python loadtests/run.py spike      # ramp to 120 VUs: status codes, shedding
    python loadtests/run.py latency    # idle submit -> COMPLETED of 50 thumbnail jobs
    python loadtests/run.py thumbnails # jobs/s of 12 MP JPEG -> 256 px WebP, whole stack
    python loadtests/run.py all

Each run uses a fresh database ``pixfleet_bench`` and namespace ``bench``. ``baseline`` and
``spike`` start the edge alone (accepted jobs stay queued, then are purged), so the numbers
are the edge's and its services'; ``latency`` also starts a standard worker. Prints
requests/s, p50/p95/p99, failure rate, edge CPU per request and the edge's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432"
DB = "pixfleet_bench"
BASE = "http://127.0.0.1:8000"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PIXFLEET_POSTGRES_DSN": f"{PG}/{DB}",
        "PIXFLEET_REDIS_PREFIX": "bench",
        "PIXFLEET_RABBIT_NAMESPACE": "bench",
        "PIXFLEET_STORE_ROOT": str(tmp / "store"),
        "PIXFLEET_SCRATCH_DIR": str(tmp / "scratch"),
        "PIXFLEET_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


async def _reset_db(env: dict[str, str]) -> str:
    conn = await asyncpg.connect(f"{PG}/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{DB}"')
    await conn.close()
    subprocess.run([BIN / "pixfleet", "migrate"], env=env, check=True, capture_output=True)
    conn = await asyncpg.connect(f"{PG}/{DB}")
    sys.path.insert(0, str(ROOT))
    from pixfleet.keys import create_key

    key = await create_key(conn, "bench")
    await conn.close()
    return key


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.extend(_tree(int(p.name)))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError):
            continue
    return total


def _rss_mib(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


SERVICES = {
    "postgres": ("postgres",),
    "rabbitmq": ("beam.smp",),
    "redis": ("redis-server",),
    "k6": ("k6",),
}


def _service_cpu() -> dict[str, float]:
    """CPU seconds so far of the processes of each backing service (and k6), by name."""
    out = dict.fromkeys(SERVICES, 0.0)
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        for name, comms in SERVICES.items():
            if any(comm.startswith(c) for c in comms):
                out[name] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _total_cpu() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields[:8]) if i not in (3, 4))
    return busy / CLK_TCK


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [BIN / "pixfleet", *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )


def _wait_ready(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{BASE}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("edge did not become ready")


def _upload(key: str) -> str:
    sys.path.insert(0, str(ROOT))
    from pixfleet.demo import gradient_png

    r = httpx.post(
        f"{BASE}/v1/uploads",
        content=gradient_png(1600, 1200),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["id"])


def _k6(
    script: str, key: str, upload: str, env: dict[str, str], tmp: Path, extra: dict[str, str]
) -> dict[str, Any]:
    summary = tmp / f"{script}.json"
    k6_env = {
        **env,
        "PIXFLEET_KEY": key,
        "PIXFLEET_UPLOAD": upload,
        "PIXFLEET_BASE": BASE,
        "RUN_ID": uuid.uuid4().hex[:8],
        **extra,
        "K6_NO_USAGE_REPORT": "true",
    }
    subprocess.run(
        [
            BIN / "k6",
            "run",
            "--quiet",
            "--summary-export",
            str(summary),
            str(ROOT / "loadtests" / f"{script}.js"),
        ],
        env=k6_env,
        check=False,
    )
    data: dict[str, Any] = json.loads(summary.read_text())
    return data


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
    print(json.dumps(row), flush=True)
    return row


def run_load(
    script: str,
    env: dict[str, str],
    tmp: Path,
    key: str,
    upload: str,
    edge: subprocess.Popen[bytes],
    extra: dict[str, str],
    profile: str | None = None,
) -> dict[str, Any]:
    spy = None
    if profile:  # collapsed stacks of the edge while k6 runs (py-spy, sampling)
        spy = subprocess.Popen(
            [
                BIN / "py-spy",
                "record",
                "--pid",
                str(edge.pid),
                "--format",
                "raw",
                "--output",
                profile,
                "--rate",
                "200",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    cpu0, all0, t0 = _cpu_seconds(edge.pid), _total_cpu(), time.monotonic()
    svc0 = _service_cpu()
    data = _k6(script, key, upload, env, tmp, extra)
    svc1 = _service_cpu()
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    wall = time.monotonic() - t0
    cpu1, all1 = _cpu_seconds(edge.pid), _total_cpu()
    row = _report(script, data, cpu1 - cpu0, all1 - all0, _rss_mib(edge.pid), wall)
    time.sleep(2 * 1.0)  # let the last confirms be marked
    accepted, marked, depth = asyncio.run(_published(env))
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
    shares = {k: round((svc1[k] - svc0[k]) * 1000 / reqs, 3) for k in SERVICES}
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


def run_latency(env: dict[str, str], tmp: Path, key: str, upload: str, n: int = 50) -> None:
    worker = _start(["worker", "--pool", "standard"], env, tmp / "worker.log")
    try:
        headers = {"Authorization": f"Bearer {key}"}
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
        worker.terminate()
        worker.wait(30)


def run_thumbnails(env: dict[str, str], tmp: Path, key: str, n: int = 400) -> None:
    """Jobs/s of 4000 x 3000 JPEG -> 256 px WebP through the whole stack, one standard worker
    at its default slots, from a backlog of ``n`` jobs."""
    sys.path.insert(0, str(ROOT))
    from loadtests.bench_ops import make_camera_jpeg

    source = tmp / "camera.jpg"
    make_camera_jpeg(source)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=BASE, headers=headers, timeout=30) as client:
        r = client.post("/v1/uploads", content=source.read_bytes())
        r.raise_for_status()
        body = {
            "inputs": [r.json()["id"]],
            "pipeline": [{"op": "thumbnail", "size": 256, "format": "webp"}],
        }
        for _ in range(n):
            client.post("/v1/jobs", json=body).raise_for_status()
    worker = _start(["worker", "--pool", "standard"], env, tmp / "worker.log")
    try:
        t0, cpu0 = time.monotonic(), _total_cpu()
        while asyncio.run(_count_done(env)) < n:
            if time.monotonic() - t0 > 600:
                raise SystemExit("the backlog did not drain in 10 minutes")
            time.sleep(0.2)
        cpu = _total_cpu() - cpu0
        rate, errors = asyncio.run(_completion_rate(env))
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
        worker.terminate()
        worker.wait(30)


async def _count_done(env: dict[str, str]) -> int:
    conn = await asyncpg.connect(env["PIXFLEET_POSTGRES_DSN"])
    try:
        return int(await conn.fetchval("SELECT count(*) FROM jobs WHERE ended_at IS NOT NULL"))
    finally:
        await conn.close()


async def _completion_rate(env: dict[str, str]) -> tuple[float, int]:
    """Jobs per second between the first start and the last end; jobs not COMPLETED."""
    conn = await asyncpg.connect(env["PIXFLEET_POSTGRES_DSN"])
    try:
        row = await conn.fetchrow(
            "SELECT count(*), extract(epoch FROM max(ended_at) - min(started_at)),"
            " count(*) FILTER (WHERE phase <> 'COMPLETED') FROM jobs"
        )
    finally:
        await conn.close()
    return float(row[0]) / float(row[1]), int(row[2])


async def _purge_queues() -> None:
    """Empty the bench namespace's queues (their messages name jobs of a dropped database)."""
    import aio_pika

    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    try:
        for name in ("bench.standard", "bench.heavy"):
            channel = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):  # not declared yet
                await (await channel.get_queue(name, ensure=True)).purge()
    finally:
        await conn.close()


def _forget_redis_keys(pattern: str) -> None:
    """Delete the run's idempotency keys: they would live 24 h and slow every SCAN."""
    import redis

    client = redis.Redis()
    keys = list(client.scan_iter(pattern, count=10_000))
    for i in range(0, len(keys), 5000):
        client.delete(*keys[i : i + 5000])
    client.close()


async def _published(env: dict[str, str]) -> tuple[int, int, int]:
    """(jobs accepted, jobs marked confirmed, messages in the standard queue)."""
    import aio_pika

    conn = await asyncpg.connect(env["PIXFLEET_POSTGRES_DSN"])
    try:
        row = await conn.fetchrow("SELECT count(*), count(enqueued_at) FROM jobs")
    finally:
        await conn.close()
    amqp = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    try:
        channel = await amqp.channel()
        queue = await channel.declare_queue("bench.standard", passive=True)
        depth = int(queue.declaration_result.message_count or 0)
    finally:
        await amqp.close()
    return int(row[0]), int(row[1]), depth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=["baseline", "spike", "latency", "thumbnails", "all"])
    parser.add_argument("--vus", default="30")
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--processes", default="1", help="edge processes")
    parser.add_argument("--profile", help="write py-spy collapsed stacks of the edge here")
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "infra/scripts/services.sh")], check=True)
    with tempfile.TemporaryDirectory(prefix="pixfleet-bench-") as d:
        tmp = Path(d)
        env = _env(tmp)
        env["PIXFLEET_PROCESSES"] = args.processes
        key = asyncio.run(_reset_db(env))
        asyncio.run(_purge_queues())
        edge = _start(["edge"], env, tmp / "edge.log")
        try:
            _wait_ready()
            upload = _upload(key)
            scenarios = (
                ["baseline", "spike", "latency"] if args.scenario == "all" else [args.scenario]
            )
            for scenario in scenarios:
                if scenario == "latency":
                    run_latency(env, tmp, key, upload)
                elif scenario == "thumbnails":
                    run_thumbnails(env, tmp, key)
                else:
                    extra = {"VUS": args.vus, "DURATION": args.duration}
                    run_load(scenario, env, tmp, key, upload, edge, extra, args.profile)
        finally:
            edge.terminate()
            edge.wait(30)
            asyncio.run(_purge_queues())
            _forget_redis_keys("bench:*")
            if edge.returncode not in (0, -15):
                print((tmp / "edge.log").read_text()[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
