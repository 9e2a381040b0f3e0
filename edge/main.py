"""Run the edge: ``pixfleet edge`` (uvicorn, uvloop, httptools).

The settings are read once, by the caller of ``serve``; nothing here reads ``PIXFLEET_*``.
"""

from __future__ import annotations

import base64
import os
import pickle
from typing import Any

from litestar import Litestar

from edge.app import create_app
from edge.settings import EdgeSettings

# The settings of a multi-process edge, as the parent hands them to the processes uvicorn
# spawns (pickled, base64): the same trust boundary as multiprocessing's own pickles.
_SETTINGS_VARIABLE = "_PIXFLEET_EDGE_SETTINGS"


def app_for_process() -> Litestar:
    """Application factory of the processes of a multi-process edge (``processes > 1``):
    the app built from the settings the parent passed down.

    Raises:
        KeyError: not started by ``serve`` (no settings were passed down).
        TypeError: what was passed down is not ``EdgeSettings``.
    """
    from pixfleet.logs import setup_logging

    setup_logging(os.environ.get("PIXFLEET_LOG_LEVEL", "INFO"))  # as the parent's own
    settings = pickle.loads(base64.b64decode(os.environ[_SETTINGS_VARIABLE]))
    if not isinstance(settings, EdgeSettings):
        raise TypeError(f"{_SETTINGS_VARIABLE} holds a {type(settings).__name__}")
    return create_app(settings)


def serve(settings: EdgeSettings) -> None:
    """Serve the edge built from ``settings`` until SIGINT/SIGTERM (uvicorn handles the signals
    and the lifespan).

    One process (the default) serves the app built here. With ``settings.processes > 1``
    uvicorn spawns its processes and each imports its app from a string, so it cannot be given
    this one: the settings are passed down in the processes' environment and each builds its
    app with ``app_for_process`` from exactly these settings (the variables are not read again).
    """
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "proxy_headers": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        "backlog": 4096,
    }
    if settings.processes == 1:
        uvicorn.run(create_app(settings), **options)
        return
    os.environ[_SETTINGS_VARIABLE] = base64.b64encode(pickle.dumps(settings)).decode()
    uvicorn.run(
        f"{__name__}:{app_for_process.__name__}",
        factory=True,
        workers=settings.processes,
        **options,
    )
