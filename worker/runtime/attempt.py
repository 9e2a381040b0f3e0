"""One leased attempt: the single lifecycle of everything a worker runs.

A delivery of a job, of a fan-out task, or of a fanned-out job's plan or combine step runs
the same way: claim → heartbeat → work in a slot → record the outcome under the lease → ack.
What differs (which row is claimed, what success records, who hears of a failure) is an
``Attempt`` subclass; this module alone decides what an outcome means:

- done: the work returns its ``record`` step, which completes the row in a lease-checked
  transaction. The attempt wrote its files under its own lease token (scratch folder and
  object keys), so an attempt that lost its lease while stalled changes nothing the job
  serves; its record is a no-op and its files are swept with the job;
- usage error, crash of the child, time limit: failed at once;
- transient error: given back and retried through the TTL retry queues until
  ``max_attempts``, then failed (and dead-lettered where the kind dead-letters);
- fatal error: failed and dead-lettered (an operator should look);
- lost lease or abort: nothing recorded (the row is no longer this attempt's);
- shutdown: given back and the message requeued for another worker;
- a backing service out while working: the lease is given back at once and the message
  requeued; bookkeeping after the work is retried in place (``Runtime.persist``), so a
  blip costs neither a retry delay nor a second computation.

The message is acknowledged only after the outcome is recorded. Must not import pixel
libraries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar, Protocol
from uuid import UUID

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from contracts.jobs import ErrorDocument
from contracts.messages import JobMessage
from pixfleet.broker import retry_delay
from worker.runtime.context import Running, Runtime
from worker.runtime.inputs import InputError
from worker.runtime.outcomes import ErrorCode, StopReason
from worker.runtime.slots import ChildCrashedError, OpFailedError, SlotStoppedError

log = logging.getLogger(__name__)

Record = Callable[[], Awaitable[None]]
"""Records a finished attempt's success under its lease (a no-op once the lease is lost)."""


class Leased(Protocol):
    """What every claim (of a job or of a task) says about its lease."""

    @property
    def job_id(self) -> UUID: ...
    @property
    def token(self) -> UUID: ...
    @property
    def attempts(self) -> int: ...
    @property
    def execution_duration(self) -> int: ...


class Attempt(ABC):
    """One claimed attempt of a job or of a task: its lease, its work, its records."""

    noun: ClassVar[str] = "job"
    dead_letters: ClassVar[bool] = True
    """Whether an exhausted or fatal failure also goes to the dead-letter queue."""

    def __init__(self, rt: Runtime, msg: JobMessage, claim: Leased, scratch: str) -> None:
        self.rt, self.msg = rt, msg
        self.job_id, self.token = claim.job_id, claim.token
        self.attempts, self.execution_duration = claim.attempts, claim.execution_duration
        self.scratch: Path = rt.scratch / scratch
        """This attempt's own scratch folder (no other attempt writes there)."""

    @property
    def label(self) -> str:
        return f"job {self.job_id}"

    @abstractmethod
    async def renew(self, seconds: float) -> bool:
        """Extend the lease; False when it is no longer this attempt's."""

    @abstractmethod
    async def release(self, error: ErrorDocument | None = None) -> bool:
        """Give the row back (``QUEUED``) for a retry or another worker."""

    @abstractmethod
    async def fail(self, error: ErrorDocument) -> bool:
        """Record the failure; True when this call ended the job."""

    @abstractmethod
    async def work(self, running: Running) -> Record:
        """Fetch the inputs, run the child, store the outputs under this attempt's keys.

        Raises:
            OpFailedError, ChildCrashedError, SlotStoppedError, InputError: as the outcomes.
        """

    async def failed(self) -> None:  # noqa: B027 (an optional hook: nothing by default)
        """What follows a failure that ended the job (events, stopping siblings)."""

    async def stopped(self, reason: StopReason) -> None:  # noqa: B027 (optional hook)
        """What follows an abort or a lost lease (nothing is recorded)."""


async def run_attempt(rt: Runtime, message: AbstractIncomingMessage, attempt: Attempt) -> None:
    """Run a claimed attempt to its recorded outcome, then ack (or requeue) its message.

    Raises:
        Exception: recording failed beyond the in-place retries (the lease is given back
            when possible; the caller requeues the message).
    """
    running = Running(attempt.job_id)
    rt.running.add(running)
    heartbeat = asyncio.create_task(_heartbeat(rt, attempt, running))
    try:
        await _run(rt, message, attempt, running)
    finally:
        heartbeat.cancel()
        rt.running.discard(running)
        _remove_scratch(attempt.scratch)


async def _run(
    rt: Runtime, message: AbstractIncomingMessage, attempt: Attempt, running: Running
) -> None:
    try:
        record = await attempt.work(running)
    except OpFailedError as e:
        error = _error(ErrorCode.of(e.code), e.message, e.detail)
    except ChildCrashedError as e:
        error = _error(ErrorCode.CRASHED, str(e))
    except InputError as e:
        error = _error(ErrorCode.USAGE, str(e))
    except SlotStoppedError as e:
        if e.reason is not StopReason.TIME_LIMIT:
            await _stopped(rt, message, attempt, e.reason)
            return
        limit = attempt.execution_duration
        error = _error(
            ErrorCode.TIME_LIMIT, f"the {attempt.noun} ran longer than its limit of {limit} s"
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        # A backing service went away while the attempt gathered its inputs or stored its
        # outputs: give the job back now, not when the lease expires.
        log.exception("%s: could not run, giving it back", attempt.label)
        await _give_back(rt, attempt)
        raise
    else:
        try:
            await record()
        except asyncio.CancelledError:
            raise
        except Exception:
            await _give_back(rt, attempt)
            raise
        await message.ack()
        return
    await _failed(rt, message, attempt, error)


def _remove_scratch(scratch: Path) -> None:
    """Remove an attempt's scratch folder: usually two empty folders once the outputs moved
    into the store (two syscalls), anything left behind by a failure otherwise."""
    try:
        (scratch / "out").rmdir()
        scratch.rmdir()
    except OSError:  # not empty (inputs fetched from S3, a failure's files) or never made
        shutil.rmtree(scratch, ignore_errors=True)


def _error(code: ErrorCode, message: str, detail: str | None = None) -> ErrorDocument:
    return ErrorDocument(
        code=code.value, message=message, detail=detail, retryable=code is ErrorCode.TRANSIENT
    )


async def _give_back(rt: Runtime, attempt: Attempt) -> None:
    with contextlib.suppress(Exception):
        await rt.persist(f"giving back {attempt.label}", attempt.release)


async def _failed(
    rt: Runtime, message: AbstractIncomingMessage, attempt: Attempt, error: ErrorDocument
) -> None:
    s = rt.settings
    transient = error.code == ErrorCode.TRANSIENT
    exhausted = transient and attempt.attempts >= s.max_attempts
    if transient and not exhausted:
        level, delay = retry_delay(s.rabbit, attempt.attempts)
        log.info(
            "%s attempt %d failed transiently; retry in %.0f s",
            attempt.label,
            attempt.attempts,
            delay,
        )
        await rt.publish_retry(attempt.msg, level, attempt=attempt.attempts)
        await rt.persist(f"releasing {attempt.label}", lambda: attempt.release(error))
        await message.ack()
        return
    if exhausted:
        error = msgspec.structs.replace(
            error, message=f"{error.message} (gave up after {attempt.attempts} attempts)"
        )
    if attempt.dead_letters and (exhausted or error.code == ErrorCode.FATAL):
        await rt.dead_letter(attempt.msg, attempt.attempts, error)
    log.info("%s failed: %s: %s", attempt.label, error.code, error.message)
    if await rt.persist(f"failing {attempt.label}", lambda: attempt.fail(error)):
        await attempt.failed()
    await message.ack()


async def _stopped(
    rt: Runtime, message: AbstractIncomingMessage, attempt: Attempt, reason: StopReason
) -> None:
    if reason is StopReason.SHUTDOWN:
        await rt.persist(f"releasing {attempt.label}", attempt.release)
        await message.nack(requeue=True)
        return
    log.info("%s stopped: %s", attempt.label, reason.value)
    await attempt.stopped(reason)
    await message.ack()


async def _heartbeat(rt: Runtime, attempt: Attempt, running: Running) -> None:
    """Renew the lease every third of it; a lease found lost stops the child."""
    lease = rt.settings.lease_seconds
    while not running.stop.done():
        await asyncio.sleep(lease / 3)
        try:
            if not await attempt.renew(lease):
                running.request_stop(StopReason.LOST)
        except Exception as e:  # keep running: the lease outlives a short outage
            log.warning("lease renewal of %s failed: %r", attempt.label, e)
