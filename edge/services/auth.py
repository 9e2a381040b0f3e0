"""API-key authentication with a short-lived in-process cache (no round trip per request)."""

from __future__ import annotations

import time

from edge.errors import UnauthorizedError
from edge.store.keys import KeyStore
from pixfleet.keys import hash_key

_NEGATIVE_TTL = 5.0
_MAX_ENTRIES = 100_000


class Authenticator:
    """Resolve ``Authorization: Bearer <key>`` to an owner."""

    def __init__(self, keys: KeyStore, ttl: float) -> None:
        self._keys = keys
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
        digest = hash_key(key.strip())
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            owner = hit[0]
        else:
            owner = await self._keys.owner_of(digest)
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[digest] = (owner, now + (self._ttl if owner else _NEGATIVE_TTL))
        if owner is None:
            raise UnauthorizedError("unknown or revoked API key")
        return owner
