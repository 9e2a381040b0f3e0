"""Settings groups shared by the deployables, and the loader that reads ``PIXFLEET_*`` variables.

Each deployable composes its own settings Struct (``EdgeSettings``, ``WorkerSettings``) from
these groups. A nested group ``postgres`` of a Struct read with prefix ``PIXFLEET_`` is read
from ``PIXFLEET_POSTGRES_*``; list fields take comma-separated values. Secrets are ``Secret``
values whose ``repr`` never shows them. Imports msgspec and the standard library only.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class Secret(str):
    """A string that hides itself from ``repr`` (and so from logs and tracebacks)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('**********')" if self else "Secret('')"

    def reveal(self) -> str:
        """Return the plain value."""
        return str.__str__(self)


class _Group(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class PostgresSettings(_Group):
    """PostgreSQL, the job store of record."""

    dsn: Secret = Secret("postgresql://postgres@127.0.0.1:5432/pixfleet")
    pool_min: PositiveInt = 2
    pool_max: PositiveInt = 10
    connect_timeout: Positive = 5.0
    """Seconds to wait for one connection attempt."""
    command_timeout: Positive = 10.0
    """Seconds any statement may take."""
    acquire_timeout: Positive = 2.0
    """Seconds a request waits for a pooled connection before it is refused with 503."""


class RedisSettings(_Group):
    """Redis: idempotency fast path, progress pub/sub, control messages."""

    url: Secret = Secret("redis://127.0.0.1:6379/0")
    prefix: str = "pixfleet"
    """Prefix of every key and channel (several deployments or tests can share one Redis)."""
    max_connections: PositiveInt = 64
    timeout: Positive = 2.0
    """Seconds for one command, and to wait for a free pooled connection."""


class RabbitSettings(_Group):
    """RabbitMQ topology and publishing."""

    url: Secret = Secret("amqp://guest:guest@127.0.0.1:5672/")
    namespace: str = "pixfleet"
    """First part of every exchange and queue name (``pixfleet.jobs``, ``pixfleet.standard``)."""
    max_priority: Annotated[int, msgspec.Meta(ge=4, le=255)] = 4
    """``x-max-priority`` of the pool queues. Each level costs the broker CPU per message
    (classic priority queues keep one sub-queue per level): interactive 4, normal 2,
    batch 1, pre-generation 0."""
    retry_delays: list[Positive] = msgspec.field(default_factory=lambda: [2.0, 10.0, 60.0, 300.0])
    """Backoff before retry n (seconds); one TTL queue per entry, the last reused past the end."""
    connect_timeout: Positive = 5.0
    publish_timeout: Positive = 10.0
    """Seconds to wait for a publisher confirm."""
    heartbeat: PositiveInt = 15
    """AMQP heartbeat (seconds) asked of the broker unless the URL sets one: a stalled
    (paused, frozen) process loses its connection, and the broker hands its unacknowledged
    messages to others, after about two of these instead of RabbitMQ's default minute."""


class StoreSettings(_Group):
    """Object store for uploads and results."""

    backend: Literal["file", "s3"] = "file"
    root: str = "var/store"
    """File store: directory holding the objects."""
    bucket: str = "pixfleet"
    endpoint_url: str | None = None
    """S3: endpoint of an S3-compatible server (None for AWS)."""
    region: str = "us-east-1"
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    signing_key: Secret = Secret("change-me-pixfleet-dev-signing-key")
    """File store: HMAC key of signed download URLs."""
    public_url: str = "http://127.0.0.1:8000"
    """File store: base URL of the edge that serves signed downloads."""
    url_ttl: PositiveInt = 300
    """Seconds a signed download URL stays valid."""


class LimitsSettings(_Group):
    """Input limits enforced by both the edge (before queueing) and the workers (before decode)."""

    max_upload_bytes: PositiveInt = 64 * 1024 * 1024
    max_pixels: PositiveInt = 64_000_000
    """Width x height above which an image is refused before any decode."""
    max_side: PositiveInt = 65_535
    """Longest side accepted; a 1 x 100,000 strip is refused before decode."""
    max_frames: PositiveInt = 1_000
    """Frames (animation) or pages (TIFF) above which an input is refused; the first is used."""
    max_output_pixels: PositiveInt = 100_000_000
    """Width x height any step may produce (a resize, a rotation canvas, a model's output)."""
    max_outputs: PositiveInt = 256
    """Outputs a job may produce: inputs x branches."""


class ServiceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The groups every deployable reads: the base of ``EdgeSettings`` and ``WorkerSettings``."""

    postgres: PostgresSettings = msgspec.field(default_factory=PostgresSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    rabbit: RabbitSettings = msgspec.field(default_factory=RabbitSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _is_list(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _is_list(typing.get_args(tp)[0])
    return origin is list


def _collect(cls: type[msgspec.Struct], env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out: dict[str, Any] = {}
    for name in cls.__struct_fields__:
        tp = hints[name]
        key = f"{prefix}{name.upper()}"
        if _is_struct(tp):
            nested = _collect(tp, env, f"{key}_")
            if nested:
                out[name] = nested
        elif key in env:
            raw = env[key]
            out[name] = [p.strip() for p in raw.split(",") if p.strip()] if _is_list(tp) else raw
    return out


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is Secret and isinstance(obj, str):
        return Secret(obj)
    raise NotImplementedError


def load_settings(cls: type[S], env: Mapping[str, str], prefix: str = "PIXFLEET_") -> S:
    """Build ``cls`` from environment variables, typing strings with ``strict=False``.

    Raises:
        msgspec.ValidationError: a variable has a value of the wrong type or out of range.
    """
    return msgspec.convert(_collect(cls, env, prefix), cls, strict=False, dec_hook=_dec_hook)


def settings_help(cls: type[msgspec.Struct], prefix: str = "PIXFLEET_") -> list[tuple[str, str]]:
    """List (variable, default) pairs of a settings Struct, for documentation."""
    rows: list[tuple[str, str]] = []
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = cls()
    for name in cls.__struct_fields__:
        key = f"{prefix}{name.upper()}"
        if _is_struct(hints[name]):
            rows.extend(settings_help(hints[name], f"{key}_"))
        else:
            rows.append((key, repr(getattr(defaults, name))))
    return rows
