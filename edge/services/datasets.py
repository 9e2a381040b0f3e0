"""The dataset catalogue as users see it: by id, and the datasets whose footprint overlaps a
circle on the sky, nearest first.

A sky query is answered in two steps: SQL keeps the datasets whose centre lies within the
query radius plus their own radius (the registry's ``near``: cheap and never too strict), then
``overlaps`` tests each candidate exactly on the sphere: the circle meets the footprint when
its centre lies inside the polygon or within the radius of one of its edges (great-circle
arcs). Unit vectors throughout, so RA wrap and the poles need no special case. Pure Python:
never numpy or astropy.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.api import FieldError
from contracts.datasets import Dataset, DatasetPage, DatasetRecord, SkyQuery
from edge.errors import DatasetNotFoundError, InvalidRequestError
from pixfleet.registry import datasets as registry
from pixfleet.registry.datasets import Vector

MAX_PAGE = 1000
_HEMISPHERE = 1e-9  # a vertex must lie this far inside the centre's hemisphere (cosine)


# -- geometry on the unit sphere -----------------------------------------------------------


def unit(ra: float, dec: float) -> Vector:
    """The unit vector of a position (degrees)."""
    a, d = math.radians(ra), math.radians(dec)
    return (math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d))


def _dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vector, b: Vector) -> Vector:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _norm(a: Vector) -> float:
    return math.sqrt(_dot(a, a))


def separation(a: Vector, b: Vector) -> float:
    """Degrees between two unit vectors (accurate at every distance)."""
    return math.degrees(math.atan2(_norm(_cross(a, b)), _dot(a, b)))


def arc_distance(p: Vector, a: Vector, b: Vector) -> float:
    """Degrees from ``p`` to the nearest point of the shorter great-circle arc from a to b."""
    n = _cross(a, b)
    length = _norm(n)
    if length < 1e-15:  # the ends coincide: the arc is a point
        return separation(p, a)
    n = (n[0] / length, n[1] / length, n[2] / length)
    s = _dot(p, n)
    q = (p[0] - s * n[0], p[1] - s * n[1], p[2] - s * n[2])  # p projected on the circle's plane
    if _norm(q) > 0 and _dot(_cross(a, q), n) >= 0 and _dot(_cross(q, b), n) >= 0:
        return math.degrees(math.atan2(abs(s), _norm(q)))  # the foot lies on the arc
    return min(separation(p, a), separation(p, b))


def contains(polygon: Sequence[Vector], centre: Vector, p: Vector) -> bool:
    """Whether ``p`` lies inside ``polygon`` (great-circle edges), every vertex of which lies
    less than 90 degrees from ``centre``.

    The gnomonic projection about ``centre`` maps great circles to straight lines, so the
    plane's even-odd rule decides; points 90 degrees or more from ``centre`` are outside.
    """
    east = _cross((0.0, 0.0, 1.0), centre)
    if _norm(east) < 1e-12:  # a pole: any tangent direction will do
        east = (1.0, 0.0, 0.0)
    size = _norm(east)
    east = (east[0] / size, east[1] / size, east[2] / size)
    north = _cross(centre, east)

    def project(v: Vector) -> tuple[float, float]:
        w = _dot(v, centre)
        return _dot(v, east) / w, _dot(v, north) / w

    if _dot(p, centre) <= 0:
        return False
    x, y = project(p)
    inside = False
    points = [project(v) for v in polygon]
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def overlaps(
    ra: float,
    dec: float,
    radius: float,
    footprint: Sequence[tuple[float, float]],
    centre: tuple[float, float],
) -> bool:
    """Whether the circle (``ra``, ``dec``, ``radius``; degrees) meets the footprint polygon
    (``[ra, dec]`` vertices joined by great-circle arcs) around ``centre``.

    A footprint with a vertex 90 degrees or more from its centre has no well-defined inside
    (corners of an all-sky image); it is taken to overlap (the SQL prefilter bounded it).
    """
    p, c = unit(ra, dec), unit(*centre)
    vertices = [unit(v_ra, v_dec) for v_ra, v_dec in footprint]
    if not vertices or any(_dot(v, c) <= _HEMISPHERE for v in vertices):
        return True
    if len(vertices) >= 3 and contains(vertices, c, p):
        return True
    edges = zip(vertices, vertices[1:] + vertices[:1], strict=True)
    return any(arc_distance(p, a, b) <= radius for a, b in edges)


# -- the service ---------------------------------------------------------------------------


def dataset_view(record: DatasetRecord, distance: float | None = None) -> Dataset:
    """The API's view of a record."""
    return Dataset(
        id=record.id,
        media_type=record.media_type,
        hdus=record.hdus,
        shape=record.shape,
        bands=record.bands,
        wcs=record.wcs,
        footprint=record.footprint,
        centre_ra=record.centre_ra,
        centre_dec=record.centre_dec,
        radius=record.radius,
        public=record.owner is None,
        upload_id=record.upload_id,
        size=record.size,
        sha256=record.sha256,
        created_at=record.created_at,
        expires_at=record.expires_at,
        distance=distance,
    )


_Cursor = tuple[float | None, str]
_cursor_decoder = msgspec.json.Decoder(_Cursor)


def _cursor(position: float | None, last: str) -> str:
    raw = msgspec.json.encode((position, last))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(text: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        parsed: _Cursor = _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidRequestError(
            "cursor is not one this API gave",
            errors=[FieldError(message="bad cursor", path="cursor")],
        ) from None
    return parsed


class DatasetService:
    """Everything the datasets API decides (the registry speaks SQL)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, owner: str, dataset_id: str) -> Dataset:
        """Raises: DatasetNotFoundError: no dataset of this id that ``owner`` may see."""
        try:
            record = await registry.get(self.pool, owner, dataset_id)
        except registry.UnknownDatasetError as e:
            raise DatasetNotFoundError(f"no dataset {dataset_id!r}") from e
        return dataset_view(record)

    def query(self, ra: float | None, dec: float | None, radius: float | None) -> SkyQuery | None:
        """The sky query of the request's parameters: all three, or none (no query).

        Raises:
            InvalidRequestError: some but not all are given, or one is out of range.
        """
        given = {"ra": ra, "dec": dec, "radius": radius}
        if all(v is None for v in given.values()):
            return None
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise InvalidRequestError(
                "give ra, dec and radius together (a circle on the sky), or none of them",
                errors=[FieldError(message="required with the others", path=k) for k in missing],
            )
        try:
            return msgspec.convert(given, SkyQuery)
        except msgspec.ValidationError as e:
            message, _, where = str(e).rpartition(" - at ")  # "... - at `$.ra`"
            name = where.strip("`").removeprefix("$.") or None
            raise InvalidRequestError(
                str(e), errors=[FieldError(message=message or str(e), path=name)]
            ) from None

    async def search(
        self, owner: str, query: SkyQuery | None, cursor: str | None, limit: int
    ) -> DatasetPage:
        """The datasets ``owner`` may see: with a query, those whose footprint overlaps it,
        nearest centre first; without, all of them by id. Pages of ``limit``.

        Raises:
            InvalidRequestError: ``limit`` out of 1..1000, or a cursor this API did not give.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(
                f"limit must be 1 to {MAX_PAGE}",
                errors=[FieldError(message=f"1 to {MAX_PAGE}", path="limit")],
            )
        after = None if cursor is None else _parse_cursor(cursor)
        if query is None:
            records = await registry.by_id(self.pool, owner, after[1] if after else None, limit + 1)
            items = [dataset_view(r) for r in records[:limit]]
            more = len(records) > limit
            return DatasetPage(items=items, next=_cursor(None, items[-1].id) if more else None)
        start = None
        if after is not None:
            if after[0] is None:
                raise InvalidRequestError(
                    "this cursor belongs to a listing without a sky query",
                    errors=[FieldError(message="bad cursor", path="cursor")],
                )
            start = (after[0], after[1])
        return await self._near(owner, query, start, limit)

    async def _near(
        self, owner: str, query: SkyQuery, after: tuple[float, str] | None, limit: int
    ) -> DatasetPage:
        centre = unit(query.ra, query.dec)
        batch = max(limit + 1, 64)
        found: list[tuple[DatasetRecord, float]] = []
        while len(found) <= limit:
            rows = await registry.near(
                self.pool, owner, centre, query.dec, query.radius, after, batch
            )
            for record, dot in rows:
                after = (dot, record.id)
                footprint, middle = _footprint(record)
                if overlaps(query.ra, query.dec, query.radius, footprint, middle):
                    found.append((record, dot))
                    if len(found) > limit:
                        break
            if len(rows) < batch:
                break
        items = [
            dataset_view(r, separation(centre, unit(*_footprint(r)[1]))) for r, _ in found[:limit]
        ]
        last = found[limit - 1] if len(found) > limit else None
        return DatasetPage(items=items, next=_cursor(last[1], last[0].id) if last else None)


def _footprint(record: DatasetRecord) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """The footprint and centre of a record found by a sky query (the SQL demands both)."""
    if record.footprint is None or record.centre_ra is None or record.centre_dec is None:
        raise AssertionError(f"dataset {record.id!r} has no footprint")
    return record.footprint, (record.centre_ra, record.centre_dec)
