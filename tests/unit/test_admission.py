"""Admission control: permits, the wait queues, the interactive share, the adaptive limit, and
the middleware's cheap refusal (an ASGI application that counts what reaches it)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from edge.services.admission import Admission, AdmissionMiddleware
from edge.settings import AdmissionSettings


def _settings(**kw: Any) -> AdmissionSettings:
    base: dict[str, Any] = {
        "initial_limit": 4,
        "min_limit": 1,
        "max_limit": 64,
        "max_wait": 0.2,
        "interactive_share": 0.25,
    }
    return AdmissionSettings(**{**base, **kw})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_permits_up_to_the_limit_minus_the_interactive_share() -> None:
    adm = Admission(_settings(initial_limit=8, interactive_share=0.25))
    assert [adm.try_admit(False) for _ in range(7)] == [True] * 6 + [False]
    assert adm.try_admit(True) and adm.try_admit(True)  # the two reserved ones
    assert not adm.try_admit(True)
    assert adm.active == 8


async def test_waiters_are_served_in_order_interactive_first() -> None:
    adm = Admission(_settings(initial_limit=2, interactive_share=0.0))
    assert adm.try_admit(False) and adm.try_admit(False)
    order: list[str] = []

    async def waiter(name: str, interactive: bool) -> None:
        assert await adm.wait(interactive)
        order.append(name)

    tasks = [asyncio.create_task(waiter(n, n.startswith("i"))) for n in ("o1", "o2", "i1")]
    await asyncio.sleep(0)
    assert adm.waiting() == 3
    assert not adm.try_admit(False)  # a newcomer does not pass those waiting
    adm.release(0.001)
    adm.release(0.001)
    await asyncio.sleep(0.01)
    assert order == ["i1", "o1"]
    adm.release(0.001)
    await asyncio.gather(*tasks)
    assert order == ["i1", "o1", "o2"]
    assert adm.active == 2 and adm.waiting() == 0


async def test_a_waiter_past_max_wait_is_refused_and_leaves_the_queue() -> None:
    adm = Admission(_settings(initial_limit=1, interactive_share=0.0, max_wait=0.02))
    assert adm.try_admit(False)
    assert not await adm.wait(False)
    assert adm.waiting() == 0 and adm.refused == 1
    adm.release(0.001)
    assert adm.active == 0 and adm.try_admit(False)


async def test_a_cancelled_waiter_gives_nothing_away() -> None:
    adm = Admission(_settings(initial_limit=1, interactive_share=0.0, max_wait=5))
    assert adm.try_admit(False)
    task = asyncio.create_task(adm.wait(False))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adm.waiting() == 0
    adm.release(0.001)
    assert adm.active == 0


def test_hopeless_when_the_queue_cannot_drain_in_time() -> None:
    clock = Clock()
    adm = Admission(_settings(initial_limit=1, interactive_share=0.0, window=1.0), clock=clock)
    assert adm.try_admit(False)
    clock.now = 1.0
    adm.release(0.01)  # one permit per second measured
    assert adm.drain_rate() == pytest.approx(1.0)
    loop = asyncio.new_event_loop()
    try:
        adm._others.append(loop.create_future())  # one waiter: a second's wait ahead
        assert adm.hopeless(False)
        assert not adm.hopeless(True)  # interactive ones queue only behind each other
        assert adm.retry_after() == 2
    finally:
        loop.close()


def test_the_limit_falls_when_slow_or_the_publisher_lags_and_rises_when_starved() -> None:
    clock = Clock()
    pressure = [0.0]
    adm = Admission(
        _settings(initial_limit=10, target_latency=0.02, window=0.25),
        pressure=lambda: pressure[0],
        clock=clock,
    )

    def window(held: float, starve: bool) -> None:
        if starve:
            adm._starved = True
        adm.active += 1
        clock.now += 0.25
        adm.release(held)

    window(0.005, starve=True)
    assert adm.limit == pytest.approx(10 * 1.05 + 1)
    raised = adm.limit
    window(0.005, starve=False)  # fast but nobody waited: no reason to grow
    assert adm.limit == pytest.approx(raised)
    window(0.05, starve=True)  # slower than the target
    assert adm.limit == pytest.approx(raised * 0.9)
    pressure[0] = 0.5
    lowered = adm.limit
    window(0.005, starve=True)  # fast, but the publish buffer fills
    assert adm.limit == pytest.approx(lowered * 0.9)
    for _ in range(100):
        window(1.0, starve=False)
    assert adm.limit == 1.0  # never below min_limit


class Held:
    """An ASGI app that answers 202 after ``gate`` opens and records every body it read."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        if scope["method"] == "POST":
            await self.gate.wait()
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def test_middleware_refuses_cheaply_and_keeps_the_interactive_share() -> None:
    held = Held()
    adm = Admission(_settings(initial_limit=2, interactive_share=0.5, max_wait=0.05))
    app = AdmissionMiddleware(held, adm)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        normal = b'{"inputs": [], "pipeline": [], "priority": "normal"}'
        interactive = b'{"pipeline": [], "priority": "interactive"}'
        first = asyncio.create_task(client.post("/v1/jobs", content=normal))
        await asyncio.sleep(0.01)
        refused = await client.post("/v1/jobs", content=normal)  # the share left is taken
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        problem = json.loads(refused.content)
        assert problem["status"] == 503 and problem["type"].endswith("/overloaded")
        second = asyncio.create_task(client.post("/v1/jobs", content=interactive))
        await asyncio.sleep(0.01)
        assert held.bodies == [normal, interactive]  # the refused body never reached the app
        other = await client.get("/v1/jobs")  # only submissions are admitted here
        assert other.status_code == 202
        held.gate.set()
        assert (await first).status_code == 202 and (await second).status_code == 202
    assert adm.active == 0 and adm.refused == 1
