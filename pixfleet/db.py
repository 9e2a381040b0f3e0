"""PostgreSQL: connection pools with bounded connect retries and a guard against connections
PostgreSQL ended while they sat idle (``LivePool``), and the migration runner.

Migrations are ``contracts/migrations/NNN_<what>.sql``, applied in order inside one
transaction that holds an advisory lock: running ``migrate`` twice, or from two processes at
once, applies each migration exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from contracts.settings import PostgresSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATION_LOCK = 0x70697866  # "pixf": advisory lock key held while migrating
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """Return (version, name, sql) of every migration shipped in ``contracts``, in order."""
    found = []
    for entry in resources.files("contracts.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text()))
    return sorted(found)


async def _connect_retrying(settings: PostgresSettings, dsn: str, attempts: int) -> Any:
    for attempt in range(1, attempts + 1):
        try:
            return await asyncpg.connect(dsn, timeout=settings.connect_timeout)
        except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as e:
            if attempt == attempts:
                raise
            delay = min(5.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning("postgres connect attempt %d/%d failed: %s", attempt, attempts, e)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def create_database(settings: PostgresSettings) -> bool:
    """Create the settings' database if it does not exist; return True if it was created."""
    parts = urlsplit(settings.dsn.reveal())
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await _connect_retrying(settings, admin, attempts=5)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:  # created by a concurrent migrate
            return False
        return True
    finally:
        await conn.close()


async def migrate(settings: PostgresSettings) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date).

    Raises:
        asyncpg.PostgresError: a migration failed; nothing of it is applied.
    """
    conn = await _connect_retrying(settings, settings.dsn.reveal(), attempts=10)
    applied: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                log.info("applying migration %s", name)
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
                applied.append(name)
    finally:
        await conn.close()
    return applied


async def _init_connection(conn: Any) -> None:
    # jsonb columns travel as text; callers encode and decode with msgspec.
    await conn.set_type_codec("jsonb", encoder=str, decoder=str, schema="pg_catalog")


async def _no_reset(conn: Any) -> None:
    # The default reset runs four statements on every release; pixfleet never leaves session
    # state (no LISTEN, cursors or session advisory locks) on pooled connections.
    return None


class LivePool(asyncpg.Pool):
    """An asyncpg pool whose one-statement calls (``fetch``, ``fetchrow``, ``fetchval``,
    ``execute``, ``executemany``) wait a bounded time for a connection and survive a
    connection PostgreSQL ended while it sat idle.

    When PostgreSQL ends a session (fast shutdown, ``pg_terminate_backend``,
    ``idle_session_timeout``) it sends a FATAL error, then closes the socket. An idle pooled
    connection that has read the error but not yet the close is stuck: asyncpg's protocol
    waits for a ReadyForQuery that never comes (MagicStack/asyncpg#1069), the pool still
    counts the connection open and hands it out, and the next statement fails *before it is
    sent* with ``InternalClientError: cannot switch to state 12; another operation (2) is in
    progress`` (2 is "discard until ReadyForQuery", not a second operation), aborting the
    connection. Every idle connection read the same error, so the pool's connections are
    expired and the statement runs once more on a new one (or meets a connection error while
    the server is down). Nothing was sent, so the retry is safe for any statement.
    """

    acquire_timeout: float | None = None
    """Seconds a statement waits for a pooled connection (None: as long as it takes)."""

    async def on_live_connection(self, statement: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``statement`` on a pooled connection, once more on a new one if that
        connection was found dead before anything was sent.

        Raises:
            TimeoutError: no connection within ``acquire_timeout``, or the statement timed out.
            asyncpg.PostgresConnectionError: the connection was lost (also when both
                connections were dead before the statement was sent).
            asyncpg.PostgresError: what the server said.
            OSError: PostgreSQL is unreachable.
        """
        lost: Exception | None = None
        for attempt in (1, 2):
            async with self.acquire(timeout=self.acquire_timeout) as conn:
                try:
                    return await statement(conn)
                except (asyncpg.InterfaceError, asyncpg.InternalClientError) as e:
                    if not conn.is_closed():
                        raise  # a misuse on a live connection: a bug
                    lost = e
            if attempt == 1:
                log.warning("postgres connection found dead before a statement; retrying: %r", lost)
                await self.expire_connections()
        raise asyncpg.ConnectionDoesNotExistError(
            f"the connection to PostgreSQL was lost before the statement was sent: {lost!r}"
        ) from lost

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        return await self.on_live_connection(lambda c: c.execute(query, *args, timeout=timeout))

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> None:
        await self.on_live_connection(lambda c: c.executemany(command, args, timeout=timeout))

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None
    ) -> list[Any]:
        return await self.on_live_connection(
            lambda c: c.fetch(query, *args, timeout=timeout, record_class=record_class)
        )

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        return await self.on_live_connection(
            lambda c: c.fetchval(query, *args, column=column, timeout=timeout)
        )

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None
    ) -> Any:
        return await self.on_live_connection(
            lambda c: c.fetchrow(query, *args, timeout=timeout, record_class=record_class)
        )


async def create_pool(settings: PostgresSettings, *, attempts: int = 10) -> LivePool:
    """Open a connection pool, retrying the first connect a bounded number of times.

    Raises:
        OSError: PostgreSQL stayed unreachable for every attempt.
    """
    for attempt in range(1, attempts + 1):
        try:
            pool = LivePool(
                settings.dsn.reveal(),
                min_size=settings.pool_min,
                max_size=settings.pool_max,
                max_queries=50_000,
                max_inactive_connection_lifetime=300.0,
                timeout=settings.connect_timeout,
                command_timeout=settings.command_timeout,
                init=_init_connection,
                reset=_no_reset,
                loop=None,
                connection_class=asyncpg.Connection,
                record_class=asyncpg.Record,
            )
            pool.acquire_timeout = settings.acquire_timeout
            await pool
            return pool
        except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as e:
            if attempt == attempts:
                raise
            log.warning("postgres pool attempt %d/%d failed: %s", attempt, attempts, e)
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")
