"""Dependencies injected into handlers."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from edge.resources import Resources
from edge.services.admission import Admission
from edge.services.auth import Authenticator
from edge.services.datasets import DatasetService
from edge.services.events import EventHub
from edge.services.jobs import JobService
from edge.services.outbox import Outbox
from edge.services.uploads import UploadService
from edge.settings import EdgeSettings


@dataclass
class Services:
    settings: EdgeSettings
    resources: Resources
    auth: Authenticator
    jobs: JobService
    uploads: UploadService
    outbox: Outbox
    events: EventHub
    datasets: DatasetService
    admission: Admission


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_owner(
    request: Request[object, object, State], services: NamedDependency[Services]
) -> str:
    """The owner of the request's API key (401 problem otherwise).

    Depending on ``services`` puts the two dependencies in separate batches: Litestar
    resolves a batch of several concurrently in a task group, which costs more than both.
    """
    return await services.auth.owner(request.headers.get("authorization"))


ServicesDep = NamedDependency[Services]
"""The edge's services (explicitly injected)."""
Owner = NamedDependency[str]
"""The authenticated owner of the request."""
