"""pixfleet workers: one process per pool consuming RabbitMQ, pixel work in child processes.

The worker parent (``worker.runtime``) imports contracts, pixfleet, aio-pika, asyncpg, redis
and aioboto3, never the numeric stack: pixel libraries are imported by the children only
(``worker.ops``). Never imports litestar or edge.
"""
