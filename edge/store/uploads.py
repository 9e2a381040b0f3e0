"""Upload rows and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg


class UploadStore:
    """SQL on ``uploads``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(
        self,
        *,
        upload_id: UUID,
        owner: str,
        object_key: str,
        size: int,
        sha256: str,
        media_type: str,
        width: int | None,
        height: int | None,
        expires_at: datetime,
    ) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "INSERT INTO uploads (id, owner, object_key, size, sha256, media_type, width, height,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
            upload_id,
            owner,
            object_key,
            size,
            sha256,
            media_type,
            width,
            height,
            expires_at,
        )
        assert row is not None  # INSERT ... RETURNING always yields the inserted row
        return row

    async def get(self, owner: str, upload_id: UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT * FROM uploads WHERE id = $1 AND owner = $2 AND expires_at > now()",
            upload_id,
            owner,
        )

    async def owned(self, owner: str, ids: Sequence[UUID]) -> dict[UUID, tuple[datetime, str]]:
        """Return {id: (expires_at, media type)} of the given uploads that belong to ``owner``
        and live."""
        rows = await self.pool.fetch(
            "SELECT id, expires_at, media_type FROM uploads"
            " WHERE owner = $1 AND id = ANY($2::uuid[]) AND expires_at > now()",
            owner,
            list(ids),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def expired(self, *, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT id, object_key FROM uploads WHERE expires_at < now() LIMIT $1", limit
        )

    async def delete(self, ids: Sequence[UUID]) -> None:
        await self.pool.execute("DELETE FROM uploads WHERE id = ANY($1::uuid[])", list(ids))
