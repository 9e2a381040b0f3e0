"""HMAC signatures of the file store's download URLs: made by the store, checked by the edge.

Pure functions over the standard library; imported by the edge route that serves
``/v1/files/{key}``, so it must stay free of aioboto3, litestar and the numeric stack.
"""

from __future__ import annotations

import hashlib
import hmac
import json

_DOMAIN = "pixfleet.store.url.v1"
"""First field of every signed message, so the key signs nothing else by accident."""


def _message(key: str, exp: int, name: str | None, media_type: str | None) -> bytes:
    # A JSON array is an unambiguous encoding: strings are quoted and escaped, so no choice of
    # fields can shift a boundary ("a/b" + "c" differs from "a" + "b/c"), and null differs
    # from "". ensure_ascii makes every str encodable, lone surrogates included.
    fields = [_DOMAIN, key, int(exp), name, media_type]
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def sign(key: str, exp: int, secret: str, name: str | None, media_type: str | None) -> str:
    """Hex HMAC-SHA256 of a download of ``key`` until unix time ``exp``, named and typed."""
    msg = _message(key, exp, name, media_type)
    return hmac.new(secret.encode("utf-8", "surrogatepass"), msg, hashlib.sha256).hexdigest()


def verify(
    key: str,
    exp: int,
    sig: str,
    secret: str,
    name: str | None,
    media_type: str | None,
    now: float,
) -> bool:
    """True if ``sig`` signs exactly these fields and ``now`` is before ``exp``.

    The comparison takes the same time wherever the signatures differ.
    """
    if now >= exp:
        return False
    expected = sign(key, exp, secret, name, media_type).encode("ascii")
    # surrogatepass: any str from a query string encodes; a wrong one simply fails to match
    return hmac.compare_digest(expected, sig.encode("utf-8", "surrogatepass"))
