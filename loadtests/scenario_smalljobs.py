"""``smalljobs``: end-to-end throughput and per-job cost of small jobs.

One 640x480 photo-like JPEG is uploaded; k6 (``smalljobs.js``) submits ``jobs`` thumbnail
jobs (256 px WebP) from ``clients`` closed-loop clients while ONE ``pixfleet worker --pool
standard`` at its default slots runs them. Measured from the first submit to the last
COMPLETED (the database's clock), with the CPU of every process from /proc and round trips
to PostgreSQL, Redis and RabbitMQ counted at both ends (see ``counters``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg

from loadtests import counters, procstat, pyspy, stack
from loadtests.photo import op_cost, photo_jpeg

OP = {"op": "thumbnail", "size": 256, "format": "webp"}
_FINAL = "('COMPLETED', 'ERROR', 'ABORTED')"
_IO = ("syscr", "syscw", "rchar", "wchar")


def _emit(row: dict[str, Any]) -> None:
    print(json.dumps({"scenario": "smalljobs", **row}), flush=True)


async def _wait_done(dsn: str, jobs: int, k6: Any, timeout: float, on_poll: Any) -> tuple[int, int]:
    """Poll the database (one connection, every 50 ms) until ``jobs`` jobs ended, or k6 ended
    and every job it got accepted ended; return (jobs ended, polls)."""
    conn = await asyncpg.connect(dsn)
    polls, deadline = 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            polls += 1
            row = await conn.fetchrow(
                f"SELECT count(*), count(*) FILTER (WHERE phase IN {_FINAL}) FROM jobs"
            )
            assert row is not None
            total, done = row
            on_poll()
            if done >= jobs or (stack.exited(k6) and done >= total):
                return int(done), polls
            await asyncio.sleep(0.05)
        raise SystemExit(f"smalljobs: only {done} of {jobs} jobs ended within {timeout:.0f} s")
    finally:
        await conn.close()


async def _job_times(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS jobs,"
            " extract(epoch FROM max(ended_at) - min(created_at)) AS span,"
            " count(*) FILTER (WHERE phase <> 'COMPLETED') AS errors,"
            " count(*) FILTER (WHERE attempts > 1) AS retried,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY"
            "   extract(epoch FROM ended_at - started_at)) AS run_median"
            " FROM jobs"
        )
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


class _Io:
    """Read/write syscalls and bytes (pipe, files, sockets) of the worker parent and its slot
    children, summed over every child seen (a recycled child from its first sample on).

    Linux adds a reaped child's whole-life counts to its parent's /proc/<pid>/io: those are
    taken back out of the parent's (the child's last sample stands for its final counts).
    """

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.first: dict[int, dict[str, int]] = {}
        self.last: dict[int, dict[str, int]] = {}
        self.alive: set[int] = set()
        self.sample()

    def sample(self) -> None:
        self.alive = set()
        for pid in [self.worker, *procstat.slot_pids(self.worker)]:
            try:
                text = Path(f"/proc/{pid}/io").read_text()
            except OSError:
                continue
            io = {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}
            self.first.setdefault(pid, io)
            self.last[pid] = io
            self.alive.add(pid)

    def per_job(self, jobs: int) -> dict[str, dict[str, float]]:
        slots = [p for p in self.last if p != self.worker]
        reaped = [p for p in slots if p not in self.alive]
        w = self.worker
        parent = {
            k: self.last[w][k] - self.first[w][k] - sum(self.last[p][k] for p in reaped)
            for k in _IO
        }
        children = {k: sum(self.last[p][k] - self.first[p][k] for p in slots) for k in _IO}
        return {"parent": counters.per(parent, jobs, 1), "slots": counters.per(children, jobs, 1)}


def _snapshot(dsn: str, roles: dict[int, str]) -> dict[str, Any]:
    return {
        "pg": asyncio.run(counters.pg_counters(dsn, stack.DB)),
        "pg_started": counters.pg_started(),
        "redis": counters.redis_counters(),
        "rabbit": counters.rabbit_counters(),
        "tcp": counters.tcp_sockets(roles),
    }


def run_smalljobs(
    s: stack.Stack, jobs: int, clients: int, op_runs: int, profile: Path | None, timeout: float
) -> None:
    source = s.tmp / "small.jpg"
    source.write_bytes(photo_jpeg(640, 480))
    upload_id = stack.upload(s.key, source.read_bytes())
    op = op_cost(source, OP, op_runs)  # before the worker starts: a quiet machine
    _emit({"op": {**OP, "input_bytes": source.stat().st_size, **op}})
    worker = s.worker()
    try:
        asyncio.run(stack.wait_consumer())
        time.sleep(counters.PG_FLUSH)  # start-up statements flushed before the first reading
        dsn = s.env["PIXFLEET_POSTGRES_DSN"]
        roles = {p: "edge" for p in procstat.tree(s.edge.pid)}
        roles[worker.pid] = "worker"
        roles.update({p: "slot" for p in procstat.slot_pids(worker.pid)})
        before = _snapshot(dsn, roles)
        io = _Io(worker.pid)
        w0, e0 = procstat.TreeCpu.read(worker.pid), procstat.cpu_seconds(s.edge.pid)
        svc0, all0, t0 = procstat.service_cpu(stack.DB), procstat.total_cpu(), time.monotonic()
        extra = {"JOBS": str(jobs), "CLIENTS": str(clients)}
        k6 = stack.k6("smalljobs", s.key, upload_id, s.env, s.tmp, extra)
        spies = _profile(worker.pid, profile) if profile else []
        done, polls = asyncio.run(_wait_done(dsn, jobs, k6, timeout, io.sample))
        wall = time.monotonic() - t0
        w1, e1 = procstat.TreeCpu.read(worker.pid), procstat.cpu_seconds(s.edge.pid)
        svc1, all1 = procstat.service_cpu(stack.DB), procstat.total_cpu()
        k6_cpu = stack.wait_cpu(k6, 60)
        for spy in spies:
            spy.wait(30)
        roles.update({p: "slot" for p in procstat.slot_pids(worker.pid)})
        time.sleep(counters.PG_FLUSH)
        after = _snapshot(dsn, roles)
    finally:
        stack.stop(worker)
    times = asyncio.run(_job_times(dsn))
    summary = json.loads(stack.summary_path(s.tmp, "smalljobs").read_text())["metrics"]
    _emit({
        "jobs": times["jobs"], "clients": clients,
        "jobs_per_s": round(times["jobs"] / float(times["span"]), 1),
        "jobs_per_s_bench_clock": round(done / wall, 1),
        "errors": times["errors"], "retried": times["retried"],
        "submit_refused": summary.get("status_other", {}).get("count", 0),
        "submit_p50_ms": round(summary["http_req_duration"]["med"], 2),
        "submit_p95_ms": round(summary["http_req_duration"]["p(95)"], 2),
        "run_median_ms": round(float(times["run_median"]) * 1000, 2),
        "wall_s": round(wall, 2), "profiled": bool(profile),
    })  # fmt: skip
    n = max(done, 1)
    worker_cpu = w1.minus(w0)
    ms = {k: round(v * 1000 / n, 3) for k, v in worker_cpu.items() if k != "slot_processes"}
    total = sum(ms.values())
    # The slots were idle when first read: their CPU then is what starting a child costs
    # (a slot recycled after ``child_max_tasks`` jobs pays it again).
    starts = [sec for kind, sec in w0.live.values() if kind == "slot"]
    edge, k6_ms = (e1 - e0) * 1000 / n, k6_cpu * 1000 / n
    services = {k: (svc1[k] - svc0[k]) * 1000 / n for k in svc1 if k != "k6"}
    machine = (all1 - all0) * 1000 / n
    ours = total + edge + k6_ms + sum(v for k, v in services.items() if k != "postgres_db")
    _emit({
        "cpu_ms_per_job": {
            "worker_parent": ms["parent"], "worker_slots": ms["slots"],
            "worker_other_children": ms["other_children"], "worker_total": round(total, 3),
            "op_in_process": op["cpu_median_ms"],
            "worker_beyond_op": round(total - op["cpu_median_ms"], 3),
            "edge": round(edge, 3), "k6": round(k6_ms, 3),
            **{k: round(v, 3) for k, v in services.items()},
            "machine": round(machine, 3), "other_processes": round(machine - ours, 3),
        },
        "slot_processes_seen": int(worker_cpu["slot_processes"]),
        "slot_start_cpu_ms": round(1000 * statistics.mean(starts), 1) if starts else None,
        "note": "postgres_db: PostgreSQL's own processes + backends of the bench database;"
        " postgres/rabbitmq/redis: whole servers (other users add to them); machine: all CPUs;"
        " other_processes: machine minus all of the above (the bench, others' work)",
    })  # fmt: skip
    _report_round_trips(before, after, roles, n, polls)
    _emit({"io_per_job": io.per_job(n), "note": "/proc/<pid>/io: pipe, files and sockets"})
    if profile:
        for name in ("worker", "slot"):
            path = profile / f"{name}.txt"
            if path.exists():
                _emit({"profile": name, "file": str(path), **pyspy.top_frames(path, 15)})


def _report_round_trips(
    before: dict[str, Any], after: dict[str, Any], roles: dict[int, str], n: int, polls: int
) -> None:
    if before["pg_started"] != after["pg_started"]:
        _emit({"warning": "PostgreSQL restarted during the run: its counters are incomplete"})
    pg = counters.delta(before["pg"], after["pg"])
    pg["xact_commit"] = pg.get("xact_commit", 0) - polls  # the bench's own polls
    _emit({
        "per_job": {
            "postgres": counters.per(pg, n),
            "redis": counters.per(counters.delta(before["redis"], after["redis"]), n),
            "rabbitmq": counters.per(counters.delta(before["rabbit"], after["rabbit"]), n),
        },
        "bench_polls": polls,
        "counted": "postgres: pg_stat_database of the bench database (xact_commit = statements"
        " outside BEGIN + transactions; the bench's polls subtracted) and pg_stat_user_tables"
        " of jobs (its seq/idx scans include the polls); redis: INFO commandstats calls,"
        " server-wide; rabbitmq: global counters of the broker (no management API), broker-wide",
    })  # fmt: skip
    tcp = counters.tcp_delta(before["tcp"], after["tcp"], roles)
    _emit(
        {
            "tcp_per_job": {k: counters.per(v, n) for k, v in sorted(tcp.items())},
            "counted": "ss -ti: data segments and bytes each process sent and got, per service",
        }
    )


def _profile(worker: int, out: Path) -> list[Any]:
    """py-spy for 10 s on the worker parent and its first slot, once the backlog has built."""
    out.mkdir(parents=True, exist_ok=True)
    time.sleep(2.0)
    spies = [pyspy.record(worker, out / "worker.txt", 10)]
    slots = procstat.slot_pids(worker)
    if slots:
        spies.append(pyspy.record(slots[0], out / "slot.txt", 10))
    return spies
