"""Job submission (idempotency, group-committed INSERT, outbox publish), reads and abort.

The submit path costs one Redis round trip (``SET NX GET``), a share of one multi-row INSERT,
and a share of one batch of publisher confirms; nothing on it waits for pixel work.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import redis.asyncio as aioredis

from contracts import names
from contracts.api import FieldError, JobRequest
from contracts.jobs import (
    JobEvent,
    JobSnapshot,
    Phase,
    StoredResult,
    amqp_priority,
)
from contracts.media import FITS
from contracts.messages import ControlMessage, JobMessage
from contracts.opbase import Op
from contracts.ops import Model, OpCatalog, steps
from contracts.pipeline import check_pipeline
from edge.errors import (
    IdempotencyInFlightError,
    IdempotencyMismatchError,
    InvalidRequestError,
    JobNotAbortableError,
    MalformedBodyError,
    OverloadedError,
    ResultNotReadyError,
    UnknownDatasetInputError,
    UnknownJobError,
    UnknownResultError,
    UnknownUploadError,
)
from edge.services.batching import GroupCommit
from edge.services.outbox import Outbox
from edge.services.snapshots import snapshot
from edge.settings import EdgeSettings
from edge.store.jobs import JobStore, NewJob
from edge.store.uploads import UploadStore
from pixfleet.ids import uuid7
from pixfleet.registry import datasets
from pixfleet.registry.models import get_models

_PENDING_GRACE = 30.0  # seconds after which an idempotency key with no job row is stale

_stored_results = msgspec.json.Decoder(list[StoredResult])
_encode = msgspec.json.encode


def validation_error(e: msgspec.ValidationError) -> InvalidRequestError:
    """Turn msgspec's message (``... - at `$.pipeline[0].size` ``) into a problem with a path."""
    message, _, path = str(e).rpartition(" - at ")
    if not message:
        message, path = str(e), ""
    return InvalidRequestError(
        str(e), errors=[FieldError(message=message, path=path.strip("`") or None)]
    )


class JobService:
    """Everything the jobs API decides."""

    def __init__(
        self,
        settings: EdgeSettings,
        catalog: OpCatalog,
        jobs: JobStore,
        uploads: UploadStore,
        redis: aioredis.Redis,
        outbox: Outbox,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.jobs = jobs
        self.uploads = uploads
        self.redis = redis
        self.outbox = outbox
        union: Any = catalog.union  # built at run time: a value, not a static type
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(JobRequest[union])
        self._encoder = msgspec.json.Encoder(order="deterministic")
        self._models: dict[str, float] = {}  # registered model name -> cached until
        self._inserts: GroupCommit[NewJob, bool] = GroupCommit(
            jobs.insert_many, max_batch=settings.insert_batch
        )
        # Concurrent idempotency claims share one pipelined round trip (and one connection).
        self._claims: GroupCommit[tuple[str, str], bytes | None] = GroupCommit(
            self._claim_many, max_batch=settings.insert_batch
        )
        # Uploads never change owner once written: remember (owner, id) -> (expiry, type).
        self._owned: dict[tuple[str, UUID], tuple[datetime, str]] = {}

    def start(self) -> None:
        self._inserts.start()
        self._claims.start()

    async def stop(self) -> None:
        await self._claims.stop()
        await self._inserts.stop()

    async def _claim_many(self, claims: list[tuple[str, str]]) -> list[bytes | None]:
        """``SET key value NX GET EX ttl`` for many keys in one pipeline: the previous value
        of each key, None where this call claimed it."""
        pipe = self.redis.pipeline(transaction=False)
        for key, value in claims:
            pipe.set(key, value, nx=True, get=True, ex=self.settings.idempotency_ttl)
        results: list[bytes | None] = await pipe.execute()
        return results

    def decode(self, body: bytes) -> Any:
        """Decode and check a job request.

        Raises:
            MalformedBodyError: the body is empty or not JSON.
            InvalidRequestError: wrong fields, types, ranges, unknown op, or over a limit.
        """
        if not body.strip():
            raise MalformedBodyError("the body is empty; send a JSON job request")
        try:
            req = self.decoder.decode(body)
        except msgspec.ValidationError as e:
            raise validation_error(e) from None
        except msgspec.DecodeError as e:
            raise MalformedBodyError(str(e)) from None
        s = self.settings
        problems = []
        if len(req.inputs) > s.max_inputs:
            problems.append(FieldError(message=f"at most {s.max_inputs} inputs", path="$.inputs"))
        problems += check_pipeline(
            req.pipeline,
            len(req.inputs) + len(req.datasets),
            max_steps=s.max_pipeline,
            max_outputs=s.limits.max_outputs,
            inputs_kind="fits" if req.datasets and not req.inputs else "any",
        )
        if req.execution_duration and req.execution_duration > s.max_execution_duration:
            problems.append(
                FieldError(
                    message=f"at most {s.max_execution_duration} seconds",
                    path="$.execution_duration",
                )
            )
        if problems:
            raise InvalidRequestError(
                "the request exceeds a limit or its pipeline does not fit together",
                errors=problems,
            )
        return req

    async def _check_models(self, pipeline: Sequence[Op]) -> None:
        """Refuse models nobody registered (a short cache keeps this off the hot path)."""
        wanted = {op.name for op in steps(pipeline) if isinstance(op, Model)}
        if not wanted:
            return
        now = time.monotonic()
        missing = {n for n in wanted if self._models.get(n, 0.0) < now}
        if missing:
            found = await get_models(self.jobs.pool, missing)
            for name in found:
                self._models[name] = now + 30.0
            unknown = sorted(missing - set(found))
            if unknown:
                raise InvalidRequestError(
                    f"unknown model(s): {', '.join(unknown)}; see `pixfleet models list`",
                    errors=[
                        FieldError(message=f"unknown model {n}", path="$.pipeline") for n in unknown
                    ],
                )

    async def _check_inputs(self, owner: str, req: Any, now: datetime) -> None:
        """Refuse uploads that are not the owner's (or expired) and datasets the owner cannot
        see; then check that the pipeline takes the kind of files the inputs are."""
        inputs: Sequence[UUID] = req.inputs
        known = {u: v for u in inputs if (v := self._owned.get((owner, u))) and v[0] > now}
        missing = [u for u in inputs if u not in known]
        if missing:
            found = await self.uploads.owned(owner, missing)
            if len(self._owned) > 100_000:
                self._owned.clear()
            for upload_id, value in found.items():
                self._owned[(owner, upload_id)] = known[upload_id] = value
            unknown = [str(u) for u in missing if u not in found]
            if unknown:
                raise UnknownUploadError(
                    f"unknown or expired upload(s): {', '.join(unknown)}",
                    errors=[
                        FieldError(message=f"unknown upload {u}", path="$.inputs") for u in unknown
                    ],
                )
        if req.datasets:
            try:
                await datasets.check_visible(self.jobs.pool, owner, req.datasets)
            except datasets.UnknownDatasetError as e:
                raise UnknownDatasetInputError(
                    f"unknown dataset(s): {', '.join(e.ids)}",
                    errors=[
                        FieldError(message=f"unknown dataset {d}", path="$.datasets") for d in e.ids
                    ],
                ) from e
        kinds = {"fits" if known[u][1] == FITS else "image" for u in inputs}
        if req.datasets:
            kinds.add("fits")
        if len(kinds) == 1:
            problems = check_pipeline(
                req.pipeline,
                len(inputs) + len(req.datasets),
                max_steps=self.settings.max_pipeline,
                max_outputs=self.settings.limits.max_outputs,
                inputs_kind=kinds.pop(),  # type: ignore[arg-type]  # "fits" or "image"
            )
            if problems:
                raise InvalidRequestError(
                    "the pipeline does not take the kind of files the inputs are",
                    errors=problems,
                )

    async def submit(
        self, owner: str, body: bytes, idempotency_key: str | None
    ) -> tuple[JobSnapshot, bool]:
        """Accept a job; return its snapshot and whether this is a replay of an earlier answer.

        Raises:
            MalformedBodyError, InvalidRequestError, UnknownUploadError: bad request.
            IdempotencyMismatchError: the key was used with another body.
            IdempotencyInFlightError: the first request with this key is still running.
        """
        req = self.decode(body)
        if self.outbox.saturated:
            raise OverloadedError(
                "jobs arrive faster than the broker takes them; retry shortly",
                headers={"Retry-After": str(self.settings.retry_after)},
            )
        now = datetime.now(UTC)
        await self._check_inputs(owner, req, now)
        await self._check_models(req.pipeline)
        encoded = self._encoder.encode(req)
        digest = hashlib.sha256(encoded).digest()
        job_id = uuid7()
        rkey = None
        if idempotency_key is not None:
            rkey = names.idempotency_key(self.settings.redis.prefix, owner, idempotency_key)
            value = f"{digest.hex()}:{job_id}:{time.time():.3f}"
            previous = await self._claims.submit((rkey, value))
            if previous is not None:
                return await self._replay(owner, idempotency_key, rkey, previous, digest), True
        duration = req.execution_duration or self.settings.default_execution_duration
        pool = self.catalog.pool_for(req.pipeline)
        priority = amqp_priority(req.priority)
        new = NewJob(
            id=job_id,
            owner=owner,
            run_id=req.run_id,
            idempotency_key=idempotency_key,
            request_digest=digest,
            pool=pool.value,
            priority_class=req.priority.value,
            priority=priority,
            request=encoded.decode(),
            destruction_at=now + timedelta(seconds=self.settings.job_ttl),
            execution_duration=duration,
            created_at=now,
        )
        try:
            inserted = await self._inserts.submit(new)
        except BaseException:
            if rkey is not None:
                await self._forget(rkey)
            raise
        if not inserted:  # PostgreSQL, the authority, already holds this key
            assert idempotency_key is not None
            return await self._replay_from_db(owner, idempotency_key, digest), True
        self.outbox.enqueue(JobMessage(job_id=job_id, pool=pool, priority=priority))
        return (
            JobSnapshot(
                id=job_id,
                phase=Phase.QUEUED,
                href=f"/v1/jobs/{job_id}",
                priority=req.priority,
                pool=pool,
                run_id=req.run_id,
                created_at=now,
                destruction_at=new.destruction_at,
                execution_duration=duration,
            ),
            False,
        )

    async def _forget(self, rkey: str) -> None:
        # Best effort: otherwise the key is treated as stale after _PENDING_GRACE.
        with contextlib.suppress(Exception):
            await self.redis.delete(rkey)

    async def _replay(
        self, owner: str, key: str, rkey: str, previous: bytes | str, digest: bytes
    ) -> JobSnapshot:
        text = previous.decode() if isinstance(previous, bytes) else previous
        digest_hex, job_id, stamp = text.split(":")
        if digest_hex != digest.hex():
            raise IdempotencyMismatchError(
                f"Idempotency-Key {key!r} was first used with a different request body"
            )
        row = await self.jobs.get(owner, UUID(job_id))
        if row is not None:
            return snapshot(row)
        row = await self.jobs.get_by_idempotency_key(owner, key)
        if row is not None:
            return await self._replay_from_db(owner, key, digest)
        if time.time() - float(stamp) < _PENDING_GRACE:
            raise IdempotencyInFlightError(f"a request with Idempotency-Key {key!r} is running")
        # The first request died between Redis and PostgreSQL: forget it and ask for a retry.
        await self._forget(rkey)
        raise IdempotencyInFlightError(f"retry: the first request with key {key!r} was lost")

    async def _replay_from_db(self, owner: str, key: str, digest: bytes) -> JobSnapshot:
        row = await self.jobs.get_by_idempotency_key(owner, key)
        if row is None:  # raced with the sweeper; extremely unlikely
            raise IdempotencyInFlightError("retry")
        if bytes(row["request_digest"]) != digest:
            raise IdempotencyMismatchError(
                f"Idempotency-Key {key!r} was first used with a different request body"
            )
        return snapshot(row)

    async def get(self, owner: str, job_id: UUID) -> JobSnapshot:
        """Raises: UnknownJobError: no such job of this owner."""
        row = await self.jobs.get(owner, job_id)
        if row is None:
            raise UnknownJobError(f"no job {job_id}")
        return snapshot(row)

    async def result(self, owner: str, job_id: UUID, name: str) -> tuple[str, str]:
        """The object-store key and media type of one result of the owner's completed job.

        Raises:
            UnknownJobError: no such job of this owner.
            ResultNotReadyError: the job has not completed.
            UnknownResultError: the job has no result of that name.
        """
        row = await self.jobs.get(owner, job_id)
        if row is None:
            raise UnknownJobError(f"no job {job_id}")
        if row["phase"] != Phase.COMPLETED:
            raise ResultNotReadyError(f"job {job_id} is {row['phase']}")
        for item in _stored_results.decode(row["results"] or "[]"):
            if item.name == name:
                # Records that predate per-attempt keys name the job's own folder.
                return item.key or names.result_object(job_id, name), item.media_type
        raise UnknownResultError(f"job {job_id} has no result {name!r}")

    async def list_for_owner(
        self, owner: str, phases: Sequence[Phase], cursor: UUID | None, limit: int
    ) -> tuple[list[JobSnapshot], UUID | None]:
        rows = await self.jobs.list_for_owner(
            owner, phases=[p.value for p in phases], before=cursor, limit=limit + 1
        )
        items = [snapshot(r) for r in rows[:limit]]
        return items, (items[-1].id if len(rows) > limit else None)

    async def abort(self, owner: str, job_id: UUID) -> JobSnapshot:
        """Abort a job that has not ended; a running job's child process is killed.

        Raises:
            UnknownJobError: no such job of this owner.
            JobNotAbortableError: the job has already ended.
        """
        row = await self.jobs.abort(owner, job_id)
        if row is None:
            current = await self.jobs.get(owner, job_id)
            if current is None:
                raise UnknownJobError(f"no job {job_id}")
            raise JobNotAbortableError(f"job {job_id} is {current['phase']}")
        prefix = self.settings.redis.prefix
        await self.redis.publish(
            names.control_channel(prefix),
            msgspec.json.encode(ControlMessage(action="abort", job_id=job_id)),
        )
        await self.redis.publish(
            names.job_channel(prefix, job_id),
            msgspec.json.encode(JobEvent(job_id=job_id, phase=Phase.ABORTED)),
        )
        return snapshot(row)
