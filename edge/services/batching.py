"""Group commit: concurrent callers share one round trip.

Each caller awaits its own result while a few runner tasks flush whatever has accumulated
(up to ``max_batch`` items) in one call. Under light load a batch holds one item and costs
nothing extra; under load the batch grows while the previous flush is in flight. Every caller
gets an answer: its result, the flush's exception, or a 503 when the runners stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from edge.errors import ServiceUnavailableError

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Batch ``submit`` calls into ``flush(items) -> results`` (same order, same length)."""

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        runners: int = 2,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._runners = runners
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._runners)]

    async def stop(self) -> None:
        """Cancel the runners; the callers of unflushed and in-flight batches get a 503."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            _fail(fut, _stopped())

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result.

        Raises:
            Exception: whatever the flush raised for the batch holding the item.
        """
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                results = await self._flush([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"flush of {len(live)} items gave {len(results)} results")
            except asyncio.CancelledError:  # stopped mid-flush: the batch may or may not be done
                for _, fut in live:
                    _fail(fut, _stopped())
                raise
            except Exception as e:  # every caller of the batch sees the failure
                for _, fut in live:
                    _fail(fut, e)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)


def _fail(fut: asyncio.Future[R], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _stopped() -> ServiceUnavailableError:
    return ServiceUnavailableError("the edge is shutting down; retry")
