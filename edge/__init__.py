"""The pixfleet HTTP edge: accepts uploads and jobs, answers snapshots, streams events.

Imports contracts, pixfleet, litestar, msgspec, asyncpg, redis and aio-pika. Never imports
numpy, scipy, astropy, cv2 or worker: a test proves it.
"""
