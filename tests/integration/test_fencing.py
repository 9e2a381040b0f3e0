"""Attempts are fenced: a stalled worker that wakes up after another finished the job changes
nothing the job serves, and a database blip while recording costs the job nothing.

Real worker processes, a real broker connection closed under a paused worker, a real
PostgreSQL stopped and started.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import FINAL, Client, child_pid, submit, upload, wait_for, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs rabbitmqctl and pg_ctlcluster (root)"),
]


def _amqp_connections_of(pid: int) -> list[str]:
    """RabbitMQ's ids of the AMQP connections process ``pid`` holds (matched by port)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and remote.endswith(":1628"):  # 5672 in hex
            ports.add(int(local.split(":")[1], 16))
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "peer_port"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    ids = []
    for line in out.splitlines():
        connection, _, port = line.rpartition("\t")
        if port.strip().isdigit() and int(port) in ports:
            ids.append(connection)
    return ids


def _close_connections(ids: list[str]) -> None:
    for connection in ids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", connection, "test: worker stalled"],
            check=True,
            capture_output=True,
            timeout=60,
        )


async def test_a_stalled_worker_resumed_after_a_takeover_changes_nothing_the_job_serves(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path, database: str
) -> None:
    stalled = start_worker()
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    job = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 1.5, "marker": str(marker)}]
    )
    first_child = await child_pid(marker)
    stalled.send_signal(signal.SIGSTOP)  # the parent stalls; its child finishes the work
    try:
        # The broker gives the unacked delivery to another worker once the stalled one's
        # connection is gone (as its heartbeat timeout would, sooner).
        connections = await asyncio.to_thread(_amqp_connections_of, stalled.pid)
        assert connections
        marker.unlink()
        start_worker()
        await asyncio.to_thread(_close_connections, connections)
        second_child = await child_pid(marker)  # taken over once the lease expired
        assert second_child != first_child
        done = await wait_for(client, job["href"], alice, FINAL, timeout=60)
        assert done["phase"] == "COMPLETED" and done["attempts"] == 2, done
    finally:
        stalled.send_signal(signal.SIGCONT)

    # The stalled attempt wakes up holding a finished child's outputs: it stores them under
    # its own lease and its completion is refused.
    log = tmp_path / "worker-0.log"

    async def stale_attempt_noticed() -> bool:
        return "lease lost before completing" in log.read_text()

    await wait_until(stale_attempt_noticed, timeout=30)
    after = (await client.get(job["href"], headers=alice)).json()
    assert after["results"] == done["results"]
    [result] = after["results"]
    served = await _served(client, alice, result)
    assert hashlib.sha256(served).hexdigest() == result["sha256"]
    assert f"in pid {second_child}" in served.decode()
    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow("SELECT phase, attempts, lease_token FROM jobs")
    finally:
        await conn.close()
    assert tuple(row) == ("COMPLETED", 2, None)


async def _served(client: Client, headers: dict[str, str], result: dict[str, Any]) -> bytes:
    """What a client downloading the result gets (the 303 followed to the signed URL)."""
    r = await client.get(result["href"], headers=headers, follow_redirects=False)
    assert r.status_code == 303, r.text
    got = await client.get(r.headers["location"].removeprefix("http://127.0.0.1:8000"))
    assert got.status_code == 200, got.text
    return bytes(got.content)


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    args = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action == "stop":
        args += ["-m", "fast"]
    subprocess.run(args, check=True, capture_output=True, timeout=120)


async def _postgres_answers() -> bool:
    try:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres", timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


async def test_a_database_blip_while_recording_costs_the_job_no_second_attempt(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    start_worker(PIXFLEET_LEASE_SECONDS="2")
    up = await upload(client, alice)
    marker = tmp_path / "pid"
    job = await submit(
        client, alice, [up], [{"op": "test_slow", "seconds": 1.0, "marker": str(marker)}]
    )
    child = await child_pid(marker)
    await asyncio.to_thread(_pg_ctl, "stop")
    try:
        # The child finishes while PostgreSQL is away; the worker's completion fails and is
        # retried in place, past the lease, until the database answers again.
        await asyncio.sleep(4.0)
    finally:
        await asyncio.to_thread(_pg_ctl, "start")
        await wait_until(_postgres_answers, timeout=60)
    done = await wait_for(client, job["href"], alice, FINAL, timeout=60)
    assert done["phase"] == "COMPLETED", done
    assert done["attempts"] == 1, done  # not given back, not parked, not computed twice
    served = await _served(client, alice, done["results"][0])
    assert f"in pid {child}" in served.decode()
