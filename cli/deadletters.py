"""Dead letters: list them, and replay them (the job starts over with fresh attempts)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from contracts import names
from contracts.messages import JobMessage
from contracts.settings import PostgresSettings, RabbitSettings
from pixfleet import broker
from pixfleet.db import create_pool

_decoder = msgspec.json.Decoder(JobMessage)


async def list_dead(rabbit: RabbitSettings) -> list[dict[str, Any]]:
    """Return the dead letters without consuming them (they are requeued unchanged)."""
    conn = await broker.connect(rabbit, attempts=3)
    rows: list[dict[str, Any]] = []
    try:
        channel = await conn.channel()
        queue = await channel.get_queue(names.dead_queue(rabbit.namespace), ensure=False)
        held = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            held.append(message)
            headers = {
                k: v.decode() if isinstance(v, bytes) else v
                for k, v in (message.headers or {}).items()
            }
            try:
                job = str(_decoder.decode(message.body).job_id)
            except msgspec.DecodeError:
                job = None
            rows.append({"job_id": job, "headers": headers})
        for message in held:
            await message.nack(requeue=True)
        await channel.close()
    finally:
        await conn.close()
    return rows


async def replay_dead(rabbit: RabbitSettings, pg: PostgresSettings, job: str | None) -> int:
    """Move dead letters (all, or one job's) back to their pool with attempts reset."""
    conn = await broker.connect(rabbit, attempts=3)
    pool = await create_pool(pg, attempts=3)
    replayed = 0
    try:
        channel = await conn.channel(publisher_confirms=True)
        queue = await channel.get_queue(names.dead_queue(rabbit.namespace), ensure=False)
        exchange = await channel.get_exchange(names.jobs_exchange(rabbit.namespace), ensure=False)
        keep = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            try:
                msg = _decoder.decode(message.body)
            except msgspec.DecodeError:
                keep.append(message)
                continue
            if job is not None and msg.job_id != UUID(job):
                keep.append(message)
                continue
            reset = await pool.fetchval(
                "UPDATE jobs SET phase = 'QUEUED', attempts = 0, error = NULL, ended_at = NULL,"
                " enqueued_at = now(), progress = 0 WHERE id = $1 AND phase = 'ERROR'"
                " RETURNING true",
                msg.job_id,
            )
            if reset:
                await exchange.publish(
                    broker.job_message(msgspec.structs.replace(msg, attempt=0)), msg.pool.value
                )
                replayed += 1
            await message.ack()
        for message in keep:
            await message.nack(requeue=True)
        await channel.close()
    finally:
        await pool.close()
        await conn.close()
    return replayed
