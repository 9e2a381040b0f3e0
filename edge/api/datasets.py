"""Datasets: FITS files known by an id (the SODA ``ID``), found by id or by a circle on the sky."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from litestar import Request, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter

from contracts.api import Problem
from contracts.datasets import Dataset, DatasetPage
from edge.api.deps import Owner, ServicesDep
from edge.errors import PROBLEM_JSON
from edge.services.datasets import MAX_PAGE

_PREFIX = "/v1/datasets/"
_PROBLEM = {
    422: ResponseSpec(
        Problem, description="A parameter is invalid (RFC 9457)", media_type=PROBLEM_JSON
    )
}


@get("/v1/datasets", summary="Find datasets", responses=_PROBLEM)
async def list_datasets(
    services: ServicesDep,
    owner: Owner,
    ra: Annotated[
        float | None, QueryParameter(required=False, description="Right ascension, degrees 0-360")
    ] = None,
    dec: Annotated[
        float | None, QueryParameter(required=False, description="Declination, degrees -90-90")
    ] = None,
    radius: Annotated[
        float | None, QueryParameter(required=False, description="Degrees, above 0, at most 180")
    ] = None,
    limit: Annotated[int, QueryParameter(description=f"1 to {MAX_PAGE}")] = 100,
    cursor: Annotated[str | None, QueryParameter(required=False)] = None,
) -> DatasetPage:
    """The datasets you may use: the public ones and those of your FITS uploads.

    With ``ra``, ``dec`` and ``radius`` (ICRS degrees; all three or none), only those whose
    footprint on the sky overlaps that circle, nearest centre first, each with its
    ``distance``; files without a celestial WCS are never found this way. Without, all of
    them by id. Page with ``cursor`` (the ``next`` of the previous page, with the same
    query). A parameter out of range, or only some of the three, is a 422.
    """
    query = services.datasets.query(ra, dec, radius)
    return await services.datasets.search(owner, query, cursor, limit)


@get(
    "/v1/datasets/{dataset_id:path}",
    summary="Get a dataset",
    responses={
        404: ResponseSpec(
            Problem, description="No such dataset of yours or public", media_type=PROBLEM_JSON
        )
    },
)
async def get_dataset(
    request: Request[object, object, State],
    dataset_id: FromPath[str],
    services: ServicesDep,
    owner: Owner,
) -> Dataset:
    """One dataset: its HDUs, science-plane shape, bands, celestial WCS and footprint. Ids may
    hold ``/`` and ``:``; percent-encode ``?``, ``#``, ``%`` and consecutive slashes."""
    return await services.datasets.get(owner, _dataset_id(request, dataset_id))


def _dataset_id(request: Request[object, object, State], parsed: str) -> str:
    # Litestar's path parameter collapses "//" (ivo://...): read the raw path when there is one.
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        text = raw.decode("latin-1").partition("?")[0]
        if text.startswith(_PREFIX):
            return unquote(text[len(_PREFIX) :])
    return parsed.removeprefix("/")


ROUTES = [list_datasets, get_dataset]
