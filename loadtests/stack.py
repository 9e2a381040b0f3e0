"""A fresh local stack for one benchmark run: database, queues, edge and workers, k6.

Everything talks to 127.0.0.1 only. Each run gets a fresh database ``pixfleet_bench`` and the
namespace ``bench`` (Redis prefix and RabbitMQ queue names); the edge and workers are
``pixfleet`` subprocesses of the bench whose logs land in the run's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432"
DB = "pixfleet_bench"
BASE = "http://127.0.0.1:8000"
AMQP = "amqp://guest:guest@127.0.0.1/"
QUEUES = ("bench.standard", "bench.heavy")


def make_env(tmp: Path, code: Path = ROOT) -> dict[str, str]:
    """The stack's environment; ``code`` is the tree the edge and workers run from."""
    return {
        **os.environ,
        "PIXFLEET_POSTGRES_DSN": f"{PG}/{DB}",
        "PIXFLEET_REDIS_PREFIX": "bench",
        "PIXFLEET_RABBIT_NAMESPACE": "bench",
        "PIXFLEET_STORE_ROOT": str(tmp / "store"),
        "PIXFLEET_SCRATCH_DIR": str(tmp / "scratch"),
        "PIXFLEET_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(code),
    }


async def reset_db(env: dict[str, str]) -> str:
    """Drop and recreate the bench database, migrate it; return a new API key."""
    conn = await asyncpg.connect(f"{PG}/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{DB}"')
    await conn.close()
    subprocess.run(
        [*command(env), "migrate"], env=env, cwd=env["PYTHONPATH"], check=True, capture_output=True
    )
    conn = await asyncpg.connect(f"{PG}/{DB}")
    from pixfleet.registry.keys import create_key

    key = await create_key(conn, "bench")
    await conn.close()
    return str(key)


def command(env: dict[str, str]) -> list[str]:
    """The operator command of the measured tree (``python -m cli``; older trees had it in
    ``pixfleet``), so an older commit runs entirely its own code."""
    code = Path(env["PYTHONPATH"])
    module = "cli" if (code / "cli" / "__main__.py").exists() else "pixfleet"
    return [str(BIN / "python"), "-m", module]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*command(env), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=env["PYTHONPATH"],
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait_ready(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{BASE}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("edge did not become ready")


def upload(key: str, content: bytes) -> str:
    r = httpx.post(
        f"{BASE}/v1/uploads",
        content=content,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["id"])


def k6(
    script: str,
    key: str,
    upload_id: str,
    env: dict[str, str],
    tmp: Path,
    extra: dict[str, str],
    tag: str = "",
) -> subprocess.Popen[bytes]:
    """Start k6 on ``loadtests/<script>.js``; its summary goes to ``summary_path`` (JSON) and
    its text output to ``k6-<script><tag>.log`` in ``tmp``."""
    k6_env = {
        **env,
        "PIXFLEET_KEY": key,
        "PIXFLEET_UPLOAD": upload_id,
        "PIXFLEET_BASE": BASE,
        "RUN_ID": uuid.uuid4().hex[:8],
        **extra,
        "K6_NO_USAGE_REPORT": "true",
    }
    summary = str(summary_path(tmp, script, tag))
    command: list[str | Path] = [BIN / "k6", "run", "--quiet", "--summary-export", summary]
    with open(tmp / f"k6-{script}{tag}.log", "wb") as log:  # its text summary: not a row
        return subprocess.Popen(
            [*command, str(ROOT / "loadtests" / f"{script}.js")], env=k6_env, stdout=log
        )


def summary_path(tmp: Path, script: str, tag: str = "") -> Path:
    return tmp / f"{script}{tag}.json"


async def purge_queues() -> None:
    """Empty the bench namespace's queues (their messages name jobs of a dropped database)."""
    import aio_pika

    conn = await aio_pika.connect(AMQP)
    try:
        for name in QUEUES:
            channel = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):  # not declared yet
                await (await channel.get_queue(name, ensure=True)).purge()
    finally:
        await conn.close()


async def wait_consumer(queue: str = "bench.standard", timeout: float = 90) -> None:
    """Wait until a worker consumes ``queue`` (its slots are started by then)."""
    import aio_pika

    conn = await aio_pika.connect(AMQP)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            channel = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                declared = await channel.declare_queue(queue, passive=True)
                if declared.declaration_result.consumer_count:
                    return
                await channel.close()
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise SystemExit(f"no worker consumed {queue} within {timeout:.0f} s")


def forget_redis_keys(pattern: str) -> None:
    """Delete the run's idempotency keys: they would live 24 h and slow every SCAN."""
    import redis

    client = redis.Redis()
    keys = list(client.scan_iter(pattern, count=10_000))
    for i in range(0, len(keys), 5000):
        client.delete(*keys[i : i + 5000])
    client.close()


async def published(env: dict[str, str]) -> tuple[int, int, int]:
    """(jobs accepted, jobs marked confirmed, messages in the standard queue)."""
    import aio_pika

    conn = await asyncpg.connect(env["PIXFLEET_POSTGRES_DSN"])
    try:
        row = await conn.fetchrow("SELECT count(*), count(enqueued_at) FROM jobs")
    finally:
        await conn.close()
    assert row is not None
    amqp = await aio_pika.connect(AMQP)
    try:
        channel = await amqp.channel()
        queue = await channel.declare_queue(QUEUES[0], passive=True)
        depth = int(queue.declaration_result.message_count or 0)
    finally:
        await amqp.close()
    return int(row[0]), int(row[1]), depth


async def completion_rate(env: dict[str, str]) -> tuple[float, int]:
    """Jobs per second between the first start and the last end; jobs not COMPLETED."""
    conn = await asyncpg.connect(env["PIXFLEET_POSTGRES_DSN"])
    try:
        row = await conn.fetchrow(
            "SELECT count(*), extract(epoch FROM max(ended_at) - min(started_at)),"
            " count(*) FILTER (WHERE phase <> 'COMPLETED') FROM jobs"
        )
    finally:
        await conn.close()
    assert row is not None
    return float(row[0]) / float(row[1]), int(row[2])


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    """A started stack: its temporary directory, environment, API key and edge process."""

    tmp: Path
    env: dict[str, str]
    key: str
    edge: subprocess.Popen[bytes]

    def worker(self, pool: str = "standard", name: str = "worker") -> subprocess.Popen[bytes]:
        """Start ``pixfleet worker --pool <pool>`` (stop it with ``stop``)."""
        return start(["worker", "--pool", pool], self.env, self.tmp / f"{name}.log")


@contextlib.contextmanager
def fresh_stack(processes: str = "1", code: Path = ROOT) -> Iterator[Stack]:
    """Backing services up, a fresh database and empty queues, one edge; torn down after.
    The edge and workers run the code in ``code`` (another commit's export, say)."""
    if _port_taken(8000):
        raise SystemExit("127.0.0.1:8000 is taken: another edge runs; stop it first")
    subprocess.run(["bash", str(ROOT / "infra/scripts/services.sh")], check=True)
    with tempfile.TemporaryDirectory(prefix="pixfleet-bench-") as d:
        tmp = Path(d)
        env = make_env(tmp, code)
        env["PIXFLEET_PROCESSES"] = processes
        key = asyncio.run(reset_db(env))
        asyncio.run(purge_queues())
        edge = start(["edge"], env, tmp / "edge.log")
        try:
            wait_ready()
            yield Stack(tmp, env, key, edge)
        finally:
            stop(edge)
            asyncio.run(purge_queues())
            forget_redis_keys("bench:*")
            if edge.returncode not in (0, -15):
                print((tmp / "edge.log").read_text()[-3000:], file=sys.stderr)


def wait_cpu(process: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for a child (at most ``timeout`` s, then kill it); return the CPU seconds it and
    its reaped children used (``wait4``: counted even though it has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return float(usage.ru_utime + usage.ru_stime)
        time.sleep(0.05)
    process.kill()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return float(usage.ru_utime + usage.ru_stime)


def exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether a child has exited, without reaping it (``wait_cpu`` still can)."""
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
