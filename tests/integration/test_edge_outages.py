"""The edge through outages of its backing services: PostgreSQL really stopped and started under
64 concurrent submitters gives 202s and 503s with Retry-After, never a 500, and every accepted
job is a row; a connection PostgreSQL ended while it sat idle in the pool is replaced, not a
500; each outage class is a 503 problem with Retry-After and anything else a logged 500."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiormq.exceptions
import asyncpg
import httpx
import pytest
import redis.exceptions
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException
from litestar.testing import AsyncTestClient

from contracts.settings import PostgresSettings, Secret
from edge.errors import OverloadedError, ServiceUnavailableError, exception_handlers
from edge.services.batching import GroupCommit
from edge.store.jobs import JobStore
from pixfleet.db import LivePool, create_pool
from pixfleet.outages import is_outage
from tests.helpers import assert_problem, job_body
from tests.images import photo

PG_HOST, PG_PORT = "127.0.0.1", 5432
SUBMITTERS = 64


# -- PostgreSQL stopped and started under load ---------------------------------------------


class LocalPostgres:
    """The machine's PostgreSQL cluster, stopped and started as its operator would."""

    def __init__(self, version: str) -> None:
        self.command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]

    def stop(self) -> None:
        subprocess.run([*self.command, "stop", "-m", "fast"], check=True, timeout=60)

    def start(self) -> None:
        """Start the cluster (unless it runs) and wait until it accepts connections (bounded)."""
        if not _accepts_connections():
            subprocess.run([*self.command, "start"], check=False, timeout=60)
        deadline = time.monotonic() + 60
        while not _accepts_connections():
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {PG_PORT} did not come back")
            time.sleep(0.1)


def _accepts_connections() -> bool:
    with contextlib.suppress(OSError), socket.create_connection((PG_HOST, PG_PORT), timeout=1):
        return asyncio.run(_answers())
    return False


async def _answers() -> bool:
    try:
        conn = await asyncpg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres")
    except (OSError, TimeoutError, asyncpg.PostgresError):  # refused, or "starting up"
        return False
    try:
        return bool(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


@pytest.fixture
def local_postgres(database: str) -> Iterator[LocalPostgres]:
    """Control of the cluster holding ``database``; it is always running again afterwards (this
    teardown runs before ``database``'s, and whatever the test did)."""
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.skip("needs a local PostgreSQL cluster managed by pg_ctlcluster")
    if f"@{PG_HOST}:{PG_PORT}/" not in database:
        pytest.skip(f"the test database is not on the local cluster ({PG_HOST}:{PG_PORT})")
    cluster = LocalPostgres(versions[-1])
    try:
        yield cluster
    finally:
        cluster.start()  # a no-op when it runs


class Answers:
    """What 64 submitters were answered, and when PostgreSQL was stopped and back."""

    def __init__(self) -> None:
        self.all: list[httpx.Response] = []
        self.during_outage = 0
        self.accepted_after_restart = 0
        self.phase = "before"  # before, down, restarting, back

    def record(self, r: httpx.Response) -> None:
        self.all.append(r)
        if self.phase == "down":
            self.during_outage += 1
        elif self.phase == "back" and r.status_code == 202:
            self.accepted_after_restart += 1


async def _submitter(
    http: httpx.AsyncClient, headers: dict[str, str], upload: str, n: int, answers: Answers
) -> None:
    for i in itertools.count():
        key = f"outage-{n}-{i}"
        r = await http.post(
            "/v1/jobs", json=job_body(upload), headers={**headers, "Idempotency-Key": key}
        )
        answers.record(r)
        # Retry-After says 5 s; the test retries sooner to keep PostgreSQL's restart short.
        await asyncio.sleep(0.05 if r.status_code == 503 else 0.01)


async def _until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_postgres_restart_under_64_submitters_gives_only_202_or_503(
    local_postgres: LocalPostgres, live_edge: str, alice: dict[str, str], database: str
) -> None:
    async with httpx.AsyncClient(base_url=live_edge, timeout=30) as http:
        r = await http.post("/v1/uploads", content=photo(64, 48), headers=alice)
        assert r.status_code == 201, r.text
        upload = r.json()["id"]
        # One job first: the key and the upload's owner are then cached, so during the outage
        # the submissions go as far as the INSERT (the statement the drill saw fail).
        first = await http.post("/v1/jobs", json=job_body(upload), headers=alice)
        assert first.status_code == 202, first.text

        answers = Answers()
        tasks = [
            asyncio.create_task(_submitter(http, alice, upload, n, answers))
            for n in range(SUBMITTERS)
        ]
        try:
            await _until(lambda: len(answers.all) >= SUBMITTERS, "no answers before the stop")
            try:
                await asyncio.to_thread(local_postgres.stop)
                answers.phase = "down"
                await _until(lambda: answers.during_outage >= 2 * SUBMITTERS, "no outage answers")
            finally:
                answers.phase = "restarting"
                await asyncio.to_thread(local_postgres.start)
            answers.phase = "back"
            # The edge recovers by itself: no restart, no request but the submissions.
            await _until(lambda: answers.accepted_after_restart >= SUBMITTERS, "no recovery")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    statuses = {r.status_code for r in answers.all}
    assert statuses <= {202, 503}, [r.text for r in answers.all if r.status_code not in {202, 503}]
    refused = [r for r in answers.all if r.status_code == 503]
    assert refused, "PostgreSQL was down and no submission was refused"
    for r in refused:
        doc = assert_problem(r, 503)
        assert int(r.headers["retry-after"]) > 0, doc
    accepted = {uuid.UUID(r.json()["id"]) for r in answers.all if r.status_code == 202}
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT id FROM jobs WHERE id = ANY($1::uuid[])", list(accepted))
    finally:
        await conn.close()
    assert {row["id"] for row in rows} == accepted


# -- a connection PostgreSQL ended while it was idle in the pool ---------------------------


async def test_connection_ended_while_idle_is_replaced_not_an_error(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL ends an idle session (shutdown, ``pg_terminate_backend``) with a FATAL error
    and then the socket; a connection that read the first but not yet the second is handed out
    by the pool and refuses its next statement before sending it (asyncpg#1069). The store
    runs it again on a new connection; whatever else happens is an outage, never a bug."""
    admin = await asyncpg.connect(database)
    settings = PostgresSettings(dsn=Secret(database), pool_min=1, pool_max=1, acquire_timeout=5)
    pool = await create_pool(settings)
    store = JobStore(pool)
    outcomes: dict[str, int] = {}
    try:
        for i in range(200):
            pid = await _backend_pid(pool)
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            for _ in range(i % 5):  # vary where the FATAL lands relative to the statement
                await asyncio.sleep(0)
            try:
                await store.get("alice", uuid.uuid4())
                outcome = "ok"
            except Exception as e:
                assert is_outage(e), repr(e)
                outcome = type(e).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        await pool.close()
        await admin.close()
    retried = [r for r in caplog.records if "found dead before a statement" in r.getMessage()]
    assert retried, f"the stuck connection was never handed out ({outcomes}): asyncpg#1069 fixed?"


async def _backend_pid(pool: LivePool) -> int:
    """The pid of the pool's session (the previous termination may land on this statement)."""
    for _ in range(10):
        with contextlib.suppress(asyncpg.PostgresConnectionError):
            pid: int = await pool.fetchval("SELECT pg_backend_pid()")
            return pid
    raise AssertionError("no live session in 10 attempts")


# -- the mapping, unit by unit -------------------------------------------------------------

OUTAGES = [
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.OperatorInterventionError("operator intervention"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    ConnectionResetError(104, "Connection reset by peer"),
    OSError("Multiple exceptions: [Errno 111] Connect call failed"),
    TimeoutError(),  # pool acquire, connect, command timeout
    redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
    aiormq.exceptions.AMQPConnectionError("connection lost"),
    aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"),
    aiormq.exceptions.ChannelInvalidStateError("No active transport in channel"),
]
BUGS = [
    RuntimeError("a bug"),
    KeyError("missing"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.InternalClientError("got result for unknown protocol state 3"),
    asyncpg.exceptions.DataError("invalid input for query argument $1"),
    FileNotFoundError(2, "No such file or directory", "/var/store/results/x"),
]


def _app(exc: Exception) -> Litestar:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise exc

    return Litestar(
        route_handlers=[boom],
        exception_handlers=exception_handlers(),
        state=State({"retry_after": 7}),
        logging_config=None,
    )


async def _answer(exc: Exception) -> httpx.Response:
    async with AsyncTestClient(_app(exc)) as client:
        return await client.get("/boom")


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
async def test_outage_is_503_problem_with_retry_after(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    r = await _answer(exc)
    doc = assert_problem(r, 503, "service-unavailable")
    assert r.headers["retry-after"] == "7"
    assert doc["instance"] == "/boom"
    assert not [rec for rec in caplog.records if rec.exc_info], "an outage is not a bug"


@pytest.mark.parametrize("exc", BUGS, ids=lambda e: type(e).__name__)
async def test_unexpected_error_is_logged_with_traceback_and_500_problem(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="edge.errors"):
        r = await _answer(exc)
    doc = assert_problem(r, 500, "internal-error")
    assert str(exc) not in r.text and type(exc).__name__ not in r.text, doc  # nothing leaks
    logged = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[1] is exc]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert "Traceback" in caplog.text and "/boom" in logged[0].getMessage()


@pytest.mark.parametrize(
    "exc",
    [
        OverloadedError("slow down", headers={"Retry-After": "2"}),
        ServiceUnavailableError("down"),
        ServiceUnavailableException(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_every_503_carries_retry_after(exc: Exception) -> None:
    r = await _answer(exc)
    assert_problem(r, 503)
    expected = "2" if isinstance(exc, OverloadedError) else "7"
    assert r.headers["retry-after"] == expected


async def test_stopped_batch_answers_its_callers_with_503() -> None:
    """Callers of a batch in flight when the runners stop are answered, not left waiting."""
    started = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()  # never finishes: stopped mid-flush
        return items

    batches: GroupCommit[int, int] = GroupCommit(flush, max_batch=8, runners=1)
    batches.start()
    caller = asyncio.create_task(batches.submit(1))
    await started.wait()
    await batches.stop()
    with pytest.raises(ServiceUnavailableError):
        await caller
