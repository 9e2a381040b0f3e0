"""What the subcommands share: settings read from the environment, and running a coroutine."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from contracts.settings import PostgresSettings, StoreSettings, load_settings


def env() -> dict[str, str]:
    return dict(os.environ)


def pg() -> PostgresSettings:
    return load_settings(PostgresSettings, env(), "PIXFLEET_POSTGRES_")


def store_settings() -> StoreSettings:
    return load_settings(StoreSettings, env(), "PIXFLEET_STORE_")


def run(coro: Any) -> Any:
    """Run ``coro`` to completion on uvloop when it is installed."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
