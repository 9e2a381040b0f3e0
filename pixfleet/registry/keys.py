"""The API-key registry: keys are generated once, shown once, and stored as SHA-256 hashes.
Every statement on ``api_keys`` is here: the edge resolves keys (``owner_of``), the operator
command and the tests create them.

Imports the standard library and asyncpg only.
"""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

KEY_PREFIX = "pfk_"


def hash_key(key: str) -> bytes:
    """What is stored of a key: its SHA-256."""
    return hashlib.sha256(key.encode()).digest()


async def create_key(
    conn: asyncpg.Pool | asyncpg.Connection, owner: str, label: str | None = None
) -> str:
    """Create an API key for ``owner`` and return it (it cannot be shown again).

    Raises:
        ValueError: the owner name is empty or longer than 128 characters.
    """
    if not owner or len(owner) > 128:
        raise ValueError("owner must be 1 to 128 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (key_hash, owner, label) VALUES ($1, $2, $3)",
        hash_key(key),
        owner,
        label,
    )
    return key


async def owner_of(pool: asyncpg.Pool, key_hash: bytes) -> str | None:
    """The owner of the key whose hash is ``key_hash``; None if unknown or revoked."""
    owner: str | None = await pool.fetchval(
        "SELECT owner FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
    )
    return owner


async def revoke_owner_keys(conn: asyncpg.Pool | asyncpg.Connection, owner: str) -> int:
    """Revoke every key of an owner; return how many."""
    result: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE owner = $1 AND revoked_at IS NULL", owner
    )
    return int(result.split()[-1])
