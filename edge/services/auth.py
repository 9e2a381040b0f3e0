"""API-key authentication with a short-lived in-process cache (no round trip per request)."""

from __future__ import annotations

import time

import asyncpg

from edge.errors import UnauthorizedError
from pixfleet.registry import keys

_NEGATIVE_TTL = 5.0
_MAX_ENTRIES = 100_000


class Authenticator:
    """Resolve ``Authorization: Bearer <key>`` to an owner."""

    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[bytes, tuple[str | None, float]] = {}

    async def owner(self, authorization: str | None) -> str:
        """Return the owner of the presented key.

        Raises:
            UnauthorizedError: no key, a malformed header, or an unknown or revoked key.
        """
        if not authorization:
            raise UnauthorizedError("send 'Authorization: Bearer <API key>'")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise UnauthorizedError("send 'Authorization: Bearer <API key>'")
        digest = keys.hash_key(key.strip())
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            owner = hit[0]
        else:
            owner = await keys.owner_of(self._pool, digest)
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[digest] = (owner, now + (self._ttl if owner else _NEGATIVE_TTL))
        if owner is None:
            raise UnauthorizedError("unknown or revoked API key")
        return owner
