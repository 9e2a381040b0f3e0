"""Dataset rows the edge reads: by id, by id order, and near a point of the sky."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from contracts.datasets import DatasetRecord
from pixfleet.datasets import RECORD, VISIBLE, decode_record

Vector = tuple[float, float, float]

PREFILTER_MARGIN = 1e-5
"""Degrees added to the prefilter's reach: float rounding must never drop a true overlap."""

_DOT = "(d.x * $2::float8 + d.y * $3::float8 + d.z * $4::float8)"

# A dataset can overlap the circle (q, r) only if its centre lies within r + its radius of q:
# a declination band wide enough for the largest radius (an index range), then the exact
# bound on the dot product of the unit vectors (no RA wrap, no trouble at the poles).
_NEAR = f"""
SELECT {RECORD}, {_DOT} AS dot
FROM datasets d
WHERE {VISIBLE}
  AND d.centre_dec BETWEEN $5::float8 - $6::float8 - (SELECT max(radius) FROM datasets)
                       AND $5::float8 + $6::float8 + (SELECT max(radius) FROM datasets)
  AND {_DOT} >= cos(radians(least(180.0, $6::float8 + d.radius)))
  AND ($7::float8 IS NULL OR {_DOT} < $7 OR ({_DOT} = $7 AND d.id > $8::text))
ORDER BY dot DESC, d.id
LIMIT $9
"""


class DatasetStore:
    """SQL on ``datasets`` (rows an owner may see: public ones and their live uploads')."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, owner: str, dataset_id: str) -> DatasetRecord | None:
        doc = await self.pool.fetchval(
            f"SELECT {RECORD} FROM datasets d WHERE {VISIBLE} AND d.id = $2", owner, dataset_id
        )
        return None if doc is None else decode_record(doc)

    async def visible(self, owner: str, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that ``owner`` may use as job inputs."""
        rows = await self.pool.fetch(
            f"SELECT d.id FROM datasets d WHERE {VISIBLE} AND d.id = ANY($2::text[])",
            owner,
            list(ids),
        )
        return {r[0] for r in rows}

    async def by_id(self, owner: str, after: str | None, limit: int) -> list[DatasetRecord]:
        """Up to ``limit`` datasets in id order, those after ``after``."""
        rows = await self.pool.fetch(
            f"SELECT {RECORD} FROM datasets d WHERE {VISIBLE}"
            " AND ($2::text IS NULL OR d.id > $2) ORDER BY d.id LIMIT $3",
            owner,
            after,
            limit,
        )
        return [decode_record(r[0]) for r in rows]

    async def near(
        self,
        owner: str,
        centre: Vector,
        dec: float,
        radius: float,
        after: tuple[float, str] | None,
        limit: int,
    ) -> list[tuple[DatasetRecord, float]]:
        """Up to ``limit`` datasets whose centre lies within ``radius`` plus their own radius
        of ``centre`` (a unit vector; ``dec`` its declination, degrees), nearest first, each
        with the cosine of its distance; those after ``after`` (cosine, id) in that order.
        The candidates of an exact overlap test: none that overlaps is left out."""
        dot, last = after if after is not None else (None, None)
        rows = await self.pool.fetch(
            _NEAR,
            owner,
            *centre,
            dec,
            radius + PREFILTER_MARGIN,
            dot,
            last,
            limit,
        )
        return [(decode_record(r[0]), r[1]) for r in rows]
