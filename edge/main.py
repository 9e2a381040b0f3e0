"""Run the edge: ``pixfleet edge`` (uvicorn, uvloop, httptools)."""

from __future__ import annotations

import os

from litestar import Litestar

from contracts.settings import load_settings
from edge.app import create_app
from edge.settings import EdgeSettings


def app_from_env() -> Litestar:
    """Application factory for ASGI servers: settings from ``PIXFLEET_*`` variables."""
    return create_app(load_settings(EdgeSettings, os.environ))


def serve(settings: EdgeSettings) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles the signals and the lifespan)."""
    import uvicorn

    uvicorn.run(
        "edge.main:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.processes if settings.processes > 1 else None,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        backlog=4096,
    )
