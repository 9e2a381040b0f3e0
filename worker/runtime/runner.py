"""Deliveries of one pool, dispatched: a job message to a job attempt, a task message to a
task attempt (``attempt.run_attempt`` is the one lifecycle of both).

Every delivery ends acked, rejected or requeued; a delivery that meets an outage before or
after its attempt is requeued after a pause (the attempt has given its lease back).
Must not import pixel libraries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from contracts.messages import JobMessage
from worker.runtime import fanout
from worker.runtime.attempt import Attempt, run_attempt
from worker.runtime.context import Runtime
from worker.runtime.job import claim_job, job_not_claimed

log = logging.getLogger(__name__)

_message_decoder = msgspec.json.Decoder(JobMessage)
_REQUEUE_PAUSE = 1.0
"""Seconds before a delivery that met an outage goes back to the queue."""


async def handle(rt: Runtime, message: AbstractIncomingMessage) -> None:
    """Process one delivery; never raises (every path acks, nacks or rejects)."""
    try:
        msg = _message_decoder.decode(message.body)
    except msgspec.DecodeError as e:
        log.error("undecodable message dead-lettered: %s", e)
        await message.reject(requeue=False)
        return
    try:
        attempt: Attempt | None
        if msg.task is None:
            attempt = await claim_job(rt, msg)
            if attempt is None:
                await job_not_claimed(rt, message, msg)
                return
        else:
            attempt = await fanout.claim_task(rt, msg)
            if attempt is None:
                await fanout.task_not_claimed(rt, message, msg)
                return
        await run_attempt(rt, message, attempt)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # an outage mid-way: let the broker redeliver later
        log.exception("job %s: infrastructure error, message requeued: %r", msg.job_id, e)
        await asyncio.sleep(_REQUEUE_PAUSE)
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)
