"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Response, get

from contracts import media
from edge.api.deps import ServicesDep

_PROBE_TIMEOUT = 1.0


@get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about its dependencies)."""
    return {"status": "ok"}


async def _check(coro: Any) -> str:
    try:
        await asyncio.wait_for(coro, _PROBE_TIMEOUT)
    except Exception as e:
        return f"unavailable: {type(e).__name__}"
    return "ok"


async def _rabbit_ok(services: ServicesDep) -> None:
    if services.resources.rabbit.is_closed:
        raise ConnectionError("rabbitmq connection closed")
    # The robust connection reports open while it reconnects: ask the broker.
    channel = await services.resources.rabbit.channel()
    await channel.close()


@get("/readyz", summary="Readiness")
async def readyz(services: ServicesDep) -> Response[bytes]:
    """200 when PostgreSQL, Redis and RabbitMQ answer; 503 (with each check) otherwise."""
    res = services.resources
    pg, rd, mq = await asyncio.gather(
        _check(res.pg.fetchval("SELECT 1")),
        _check(res.redis.ping()),
        _check(_rabbit_ok(services)),
    )
    checks = {"postgres": pg, "redis": rd, "rabbitmq": mq}
    ready = all(v == "ok" for v in checks.values())
    body = {"ready": ready, "checks": checks, "relay_leader": services.outbox.is_leader}
    headers = {} if ready else {"Retry-After": str(services.settings.retry_after)}
    return Response(
        msgspec.json.encode(body),
        status_code=200 if ready else 503,
        media_type=media.JSON,
        headers=headers,
    )


ROUTES = [healthz, readyz]
