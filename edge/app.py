"""The edge application factory: ``create_app(settings)``.

Nothing connects at import. The lifespan opens PostgreSQL, Redis, RabbitMQ and the object
store (or takes ``resources`` from a test), starts the outbox publisher and relay and the
event hub, and closes everything in reverse order.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from contracts.ops import OpCatalog
from edge.api import datasets, files, health, jobs, uploads
from edge.api.deps import Services, provide_owner, provide_services
from edge.errors import exception_handlers
from edge.openapi import job_components
from edge.resources import Resources, open_resources
from edge.services.admission import Admission, AdmissionMiddleware
from edge.services.auth import Authenticator
from edge.services.datasets import DatasetService
from edge.services.events import EventHub
from edge.services.jobs import JobService
from edge.services.outbox import Outbox
from edge.services.sweeper import Sweeper
from edge.services.uploads import UploadService
from edge.settings import EdgeSettings
from edge.store.jobs import JobStore
from edge.store.uploads import UploadStore


@contextlib.asynccontextmanager
async def start_services(
    settings: EdgeSettings, catalog: OpCatalog, res: Resources, admission: Admission
) -> AsyncIterator[Services]:
    """Build the services over open resources, start their tasks, stop them on exit."""
    job_store, upload_store = JobStore(res.pg), UploadStore(res.pg)
    sweeper = Sweeper(job_store, upload_store, res.store)
    outbox = Outbox(settings, res.rabbit, job_store, after_relay=sweeper.sweep_once)
    admission.pressure = outbox.fill
    job_service = JobService(settings, catalog, job_store, upload_store, res.redis, outbox)
    events = EventHub(res.events_redis, settings.redis.prefix)
    services = Services(
        settings=settings,
        resources=res,
        auth=Authenticator(res.pg, settings.key_cache_ttl),
        jobs=job_service,
        uploads=UploadService(settings, upload_store, res.store, jobs=job_service),
        outbox=outbox,
        events=events,
        datasets=DatasetService(res.pg),
        admission=admission,
    )
    async with contextlib.AsyncExitStack() as stack:
        await outbox.start()
        stack.push_async_callback(outbox.stop)
        job_service.start()
        stack.push_async_callback(job_service.stop)
        events.start()
        stack.push_async_callback(events.stop)
        yield services


def create_app(settings: EdgeSettings, resources: Resources | None = None) -> Litestar:
    """Build the edge application.

    Raises:
        contracts.ops.UnknownPluginError: an ``op_plugins`` module cannot be loaded.
    """
    catalog = OpCatalog.with_plugins(settings.op_plugins)
    admission = Admission(settings.admission)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            res = (
                resources
                if resources is not None
                else await stack.enter_async_context(open_resources(settings))
            )
            app.state.services = await stack.enter_async_context(
                start_services(settings, catalog, res, admission)
            )
            # Everything allocated so far lives as long as the process: keep the collector
            # from rescanning it, and collect young objects less often (fewer pauses).
            gc.freeze()
            gc.set_threshold(*settings.gc_threshold)
            yield

    handlers: list[Any] = [*jobs.ROUTES, *uploads.ROUTES, *datasets.ROUTES, *health.ROUTES]
    if settings.store.backend == "file":
        handlers.extend(files.ROUTES)
    return Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "owner": Provide(provide_owner),
        },
        middleware=[DefineMiddleware(AdmissionMiddleware, admission=admission)],
        exception_handlers=exception_handlers(),
        openapi_config=OpenAPIConfig(
            title="pixfleet",
            version="1",
            description="Distributed image processing: upload, submit jobs, fetch results.",
            path="/schema",
            components=job_components(catalog),
        ),
        request_max_body_size=settings.max_body_bytes,
        state=State({"retry_after": settings.retry_after}),
        logging_config=None,
    )
