"""PostgreSQL: connection pools with bounded connect retries, and the migration runner.

Migrations are ``contracts/migrations/NNN_<what>.sql``, applied in order inside one
transaction that holds an advisory lock: running ``migrate`` twice, or from two processes at
once, applies each migration exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from contracts.settings import PostgresSettings

log = logging.getLogger(__name__)

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


async def create_pool(settings: PostgresSettings, *, attempts: int = 10) -> asyncpg.Pool:
    """Open a connection pool, retrying the first connect a bounded number of times.

    Raises:
        OSError: PostgreSQL stayed unreachable for every attempt.
    """
    for attempt in range(1, attempts + 1):
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                settings.dsn.reveal(),
                min_size=settings.pool_min,
                max_size=settings.pool_max,
                timeout=settings.connect_timeout,
                command_timeout=settings.command_timeout,
                init=_init_connection,
                reset=_no_reset,
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as e:
            if attempt == attempts:
                raise
            log.warning("postgres pool attempt %d/%d failed: %s", attempt, attempts, e)
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")
