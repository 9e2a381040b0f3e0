"""Round trips to PostgreSQL, Redis and RabbitMQ, counted from both ends.

Server side:

- PostgreSQL: ``pg_stat_database`` of the bench database (transactions: every statement
  outside ``BEGIN`` is one) and ``pg_stat_user_tables`` of ``jobs`` (rows inserted/updated,
  scans). ``pg_stat_statements`` is used when it is preloaded. PostgreSQL 15 flushes a
  backend's counters at most once a second and an idle one's within 10 s: read them after
  ``PG_FLUSH`` seconds of quiet.
- Redis: ``INFO commandstats`` (server-wide: other users of the server add to it).
- RabbitMQ: the broker's global counters (``rabbitmqctl eval``; broker-wide) — the management
  API is not enabled here, so there are no per-queue message rates.

Client side, per process and exact whatever else runs: TCP data segments each process sent
to and received from each service's port (``ss -ti``). A request written in one ``send``
is one segment on loopback, so segments out approximate round trips (requests pipelined into
one write count once; a socket closed in between is not counted).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterable
from typing import Any

import asyncpg

from loadtests import stack

PG_FLUSH = 11.0
PORTS = {5432: "postgres", 6379: "redis", 5672: "rabbitmq"}
_SOCKET = re.compile(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:(\d+)\s+users:\((.*)\)\s*$")
_PID = re.compile(r"pid=(\d+)")
_TCP_FIELDS = ("data_segs_out", "data_segs_in", "bytes_sent", "bytes_received")


def tcp_sockets(pids: Iterable[int]) -> dict[tuple[int, int], tuple[str, dict[str, int]]]:
    """Established sockets of ``pids`` to the services: (local port, pid) -> (service,
    counters)."""
    wanted = set(pids)
    out: dict[tuple[int, int], tuple[str, dict[str, int]]] = {}
    text = subprocess.run(
        ["ss", "-tinpH", "state", "established"], capture_output=True, text=True, check=True
    ).stdout
    current: tuple[list[int], int, str] | None = None
    for line in text.splitlines():
        if not line.startswith(("\t", " ")):
            m = _SOCKET.search(line)
            current = None
            if m and int(m[2]) in PORTS:
                owners = [int(p) for p in _PID.findall(m[3]) if int(p) in wanted]
                if owners:
                    current = (owners, int(m[1]), PORTS[int(m[2])])
            continue
        if current is None:
            continue
        owners, port, service = current
        counts = {f: int(v) for f, v in re.findall(r"(\w+):(\d+)\b", line) if f in _TCP_FIELDS}
        for pid in owners:
            out[(port, pid)] = (service, counts)
        current = None
    return out


def tcp_delta(
    before: dict[tuple[int, int], tuple[str, dict[str, int]]],
    after: dict[tuple[int, int], tuple[str, dict[str, int]]],
    roles: dict[int, str],
) -> dict[str, dict[str, int]]:
    """Segments and bytes in between, by ``<role>-><service>`` (``roles``: pid -> role)."""
    out: dict[str, dict[str, int]] = {}
    for sock, (service, counts) in after.items():
        prior = before.get(sock, (service, {}))[1]
        key = f"{roles.get(sock[1], 'other')}->{service}"
        row = out.setdefault(key, dict.fromkeys(_TCP_FIELDS, 0))
        for f in _TCP_FIELDS:
            row[f] += counts.get(f, 0) - prior.get(f, 0)
    return out


async def pg_counters(dsn: str, database: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        db = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched"
            " FROM pg_stat_database WHERE datname = $1",
            database,
        )
        jobs = await conn.fetchrow(
            "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan,"
            " coalesce(idx_scan, 0) AS idx_scan FROM pg_stat_user_tables WHERE relname = 'jobs'"
        )
        assert db is not None and jobs is not None  # the bench database has a jobs table
        out = {**dict(db), **{f"jobs_{k}": v for k, v in dict(jobs).items()}}
        preloaded = await conn.fetchval("SHOW shared_preload_libraries")
        if "pg_stat_statements" in preloaded:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            out["statements"] = int(
                await conn.fetchval(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                    " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                    database,
                )
            )
        return {k: int(v) for k, v in out.items()}
    finally:
        await conn.close()


def pg_started() -> float:
    """When the PostgreSQL server last started (epoch s): a change means someone restarted it
    in between, and counters and backend CPU of the run are incomplete."""

    async def read() -> float:
        conn = await asyncpg.connect(f"{stack.PG}/postgres")
        try:
            sql = "SELECT extract(epoch FROM pg_postmaster_start_time())"
            return float(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(read())


def redis_counters() -> dict[str, int]:
    """Calls per command so far (server-wide)."""
    import redis

    client = redis.Redis()
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


_RABBIT_EVAL = (
    'io:format("~s", [rabbit_json:encode(maps:from_list([{iolist_to_binary('
    'io_lib:format("~p", [K])), V} || {K, V} <- maps:to_list('
    "rabbit_global_counters:overview())]))])."
)


def rabbit_counters() -> dict[str, int]:
    """Broker-wide AMQP 0-9-1 counters: published, routed, confirmed, delivered, acked,
    redelivered (empty if ``rabbitmqctl`` cannot be run)."""
    try:
        text = subprocess.run(
            ["rabbitmqctl", "-q", "eval", _RABBIT_EVAL],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        data: dict[str, dict[str, int]] = json.loads(text[: text.rindex("}") + 1])
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    out: dict[str, int] = {}
    for labels, counts in data.items():
        if "amqp091" not in labels:
            continue
        for name, value in counts.items():
            short = name.removeprefix("messages_").removesuffix("_total")
            if short in {"received", "routed", "confirmed", "delivered", "acknowledged",
                         "redelivered", "get_empty"}:  # fmt: skip
                out[short] = out.get(short, 0) + int(value)
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def per(counts: dict[str, int], n: int, digits: int = 2) -> dict[str, float]:
    return {k: round(v / max(n, 1), digits) for k, v in sorted(counts.items())}
