"""Admission control of job submissions: admit up to what the edge sustains, queue a little,
refuse the rest early and cheaply.

A submission holds one of ``limit`` permits while the application handles it (decode,
idempotency claim, group-committed INSERT, hand-off to the publisher). ``limit`` adapts, AIMD
over windows of ``window`` seconds: while the mean time a permit was held stays under
``target_latency`` and the publish buffer under a quarter full, a window that ran out of
permits raises it by a twentieth (and one); a window over the target (or with the buffer
filling) lowers it by a tenth. The permits so track the concurrency at which this process
still answers quickly, and the event loop (with the publisher in it) is never flooded.

A submission that finds no permit waits in a FIFO queue (interactive ones in their own, served
first) for at most ``max_wait`` seconds. One that cannot be served in time is refused at once,
before its body is read, its key looked up or anything touches PostgreSQL or Redis: the edge
answers a pre-encoded 503 problem with a ``Retry-After`` from the queue's drain rate.

``interactive_share`` of the permits is kept for interactive submissions: other submissions
take at most the rest. Only a submission that would have to wait has its body peeked at for
its priority (a msgspec decode of one field); the rest are not read here at all.

Pure asyncio and msgspec: the ASGI middleware wrapping the application is
``AdmissionMiddleware``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from contracts import media
from contracts.api import Problem
from edge.settings import AdmissionSettings

_SUBMIT_PATH = "/v1/jobs"
_PRESSURE = 0.25
"""Fill of the publish buffer past which the limit is lowered: the publisher falls behind."""


class _Priority(msgspec.Struct):
    priority: str = "normal"


_peek = msgspec.json.Decoder(_Priority)


def _is_interactive(body: bytes) -> bool:
    try:
        return _peek.decode(body).priority == "interactive"
    except msgspec.DecodeError:  # not JSON: the application refuses it with its own problem
        return False


class Admission:
    """Permits for concurrent submissions, their wait queues, and the adaptive limit."""

    def __init__(
        self,
        settings: AdmissionSettings,
        pressure: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.pressure = pressure
        """Fill of the publish buffer, 0..1 (the outbox sets it when it starts)."""
        self._clock = clock
        self.limit = float(settings.initial_limit)
        self.active = 0
        self._interactive: deque[asyncio.Future[None]] = deque()
        self._others: deque[asyncio.Future[None]] = deque()
        # the current window: when it began, permits released and their summed hold time,
        # and whether a submission found no permit during it
        self._window_start = clock()
        self._released = 0
        self._held = 0.0
        self._starved = False
        self._rate = 0.0  # permits released per second, smoothed over windows
        self.admitted = 0
        self.refused = 0

    # -- capacity --------------------------------------------------------------------------

    def _cap(self, interactive: bool) -> int:
        limit = max(int(self.limit), 1)
        if interactive:
            return limit
        return max(limit - math.ceil(limit * self.settings.interactive_share), 1)

    def waiting(self) -> int:
        return len(self._interactive) + len(self._others)

    def drain_rate(self) -> float:
        """Permits released per second (smoothed); before any measure, a guess from the limit."""
        if self._rate > 0:
            return self._rate
        return self.limit / max(self.settings.target_latency, 1e-3)

    def retry_after(self) -> int:
        """Whole seconds until the queue ahead would have drained (at least one)."""
        return max(1, math.ceil((self.waiting() + 1) / self.drain_rate()))

    # -- the permit's life -----------------------------------------------------------------

    def try_admit(self, interactive: bool) -> bool:
        """Take a permit at once if one is free and nobody of this class waits ahead."""
        # nobody may pass a waiter of its class, and the others never pass interactive waiters
        ahead = self._interactive if interactive else self.waiting()
        if self.active < self._cap(interactive) and not ahead:
            self.active += 1
            self.admitted += 1
            return True
        self._starved = True
        return False

    def hopeless(self, interactive: bool) -> bool:
        """True when a new waiter could not be served within ``max_wait``: refuse it now.
        Interactive waiters only queue behind each other."""
        waiting = len(self._interactive) if interactive else self.waiting()
        if waiting >= self.settings.max_queue:
            return True
        return waiting / self.drain_rate() > self.settings.max_wait

    async def wait(self, interactive: bool) -> bool:
        """Queue for a permit for at most ``max_wait`` seconds; True once admitted."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._interactive if interactive else self._others
        queue.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.settings.max_wait)
        except BaseException:  # timed out, or the request was cancelled while waiting
            if waiter.done():  # admitted just as time ran out: give the permit back
                self.release(0.0)
            else:
                waiter.cancel()
                queue.remove(waiter)
            self.refused += 1
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return False
        self.admitted += 1
        return True

    def release(self, held: float) -> None:
        """Give back a permit held for ``held`` seconds and hand free permits to waiters."""
        self.active -= 1
        self._released += 1
        self._held += held
        self._adapt()
        self._wake()

    def _wake(self) -> None:
        for interactive, queue in ((True, self._interactive), (False, self._others)):
            while queue and self.active < self._cap(interactive):
                waiter = queue.popleft()
                if waiter.done():  # timed out meanwhile
                    continue
                self.active += 1
                waiter.set_result(None)
            if queue:  # interactive ones still waiting: nothing for the others
                return

    def _adapt(self) -> None:
        now = self._clock()
        elapsed = now - self._window_start
        s = self.settings
        if elapsed < s.window:
            return
        if self._released:
            rate = self._released / elapsed
            self._rate = rate if self._rate == 0 else 0.5 * self._rate + 0.5 * rate
            mean = self._held / self._released
            if mean > s.target_latency or self.pressure() > _PRESSURE:
                self.limit = max(float(s.min_limit), self.limit * 0.9)
            elif self._starved:
                self.limit = min(float(s.max_limit), self.limit * 1.05 + 1)
        self._window_start, self._released, self._held, self._starved = now, 0, 0.0, False


def _overloaded(retry_after: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = msgspec.json.encode(
        Problem(
            type="https://pixfleet.dev/problems/overloaded",
            title="The service is shedding load",
            status=503,
            detail="submissions arrive faster than this edge accepts them; retry after the "
            "Retry-After seconds",
            instance=_SUBMIT_PATH,
        )
    )
    headers = [
        (b"content-type", media.PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    return headers, body


class AdmissionMiddleware:
    """ASGI middleware: ``POST /v1/jobs`` passes through ``Admission``; the rest untouched."""

    def __init__(self, app: Any, admission: Admission) -> None:
        self.app = app
        self.admission = admission
        self._refusals: dict[int, tuple[list[tuple[bytes, bytes]], bytes]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != _SUBMIT_PATH:
            await self.app(scope, receive, send)
            return
        adm = self.admission
        if not adm.try_admit(False):
            receive, interactive = await self._peek(receive)
            if not (interactive and adm.try_admit(True)):
                if adm.hopeless(interactive):
                    adm.refused += 1
                    await self._refuse(send)
                    return
                if not await adm.wait(interactive):
                    await self._refuse(send)
                    return
        start = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            adm.release(time.monotonic() - start)

    async def _peek(self, receive: Any) -> tuple[Any, bool]:
        """Read the (small, already buffered) body to learn its priority; return a receive
        that replays it to the application."""
        messages, chunks, size = [], [], 0
        limit = self.admission.settings.peek_bytes
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False) or size > limit:
                break
        interactive = size <= limit and _is_interactive(b"".join(chunks))
        replay = deque(messages)

        async def replayed() -> Any:
            return replay.popleft() if replay else await receive()

        return replayed, interactive

    async def _refuse(self, send: Any) -> None:
        retry_after = self.admission.retry_after()
        cached = self._refusals.get(retry_after)
        if cached is None:
            cached = self._refusals[retry_after] = _overloaded(retry_after)
        headers, body = cached
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
