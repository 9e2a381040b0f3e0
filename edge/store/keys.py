"""API keys as the edge resolves them (only SHA-256 hashes are stored; ``pixfleet keys``
creates and revokes them)."""

from __future__ import annotations

import asyncpg


class KeyStore:
    """SQL on ``api_keys`` (only hashes are stored)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def owner_of(self, key_hash: bytes) -> str | None:
        owner: str | None = await self.pool.fetchval(
            "SELECT owner FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
        )
        return owner
