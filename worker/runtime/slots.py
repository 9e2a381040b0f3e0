"""Slots: child processes owned by the worker, one job at a time each.

A slot knows its child's PID, replaces it after ``child_max_tasks`` jobs, and kills it to
abort a job or enforce its time limit, starting a fresh child for the next job. Children are
not forked from the parent (it runs an event loop and threads that must not be copied) but
from a fork server that imported the pool's operations once: a fresh child costs a fork, not
the second and a half of CPU that importing numpy, OpenCV and astropy takes, so recycling,
aborts and time limits stay cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from worker.runtime.child import (
    ChildConfig,
    ChildTask,
    child_main,
    configure_environment,
    operation_modules,
)
from worker.runtime.outcomes import StopReason

log = logging.getLogger(__name__)

_ctx = multiprocessing.get_context("forkserver")


def _prepare_fork_server(config: ChildConfig) -> None:
    """What the fork server imports and the environment it (and so every child) starts with."""
    configure_environment(config)
    _ctx.set_forkserver_preload(operation_modules(config.op_plugins, config.pool))


class ChildCrashedError(Exception):
    """The child died while running a job (signal, segfault, out of memory)."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"the worker process died (exit code {exitcode})")
        self.exitcode = exitcode


class SlotStoppedError(Exception):
    """The job was stopped from outside (abort, lost lease, shutdown, time limit)."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class OpFailedError(Exception):
    """The operation raised one of the worker error classes."""

    def __init__(self, code: str, message: str, detail: str | None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


class Slot:
    """One child process and the pipe to it."""

    def __init__(self, index: int, config: ChildConfig, max_tasks: int, start_timeout: float):
        self.index = index
        self.config = config
        self.max_tasks = max_tasks
        self.start_timeout = start_timeout
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.tasks_done = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        """Spawn the child and wait until it has imported its operations.

        Raises:
            ChildCrashedError: the child died or did not become ready in time.
        """
        parent, child = _ctx.Pipe()
        process = _ctx.Process(
            target=child_main,
            args=(child, self.config),
            name=f"pixfleet-slot-{self.index}",
            daemon=True,
        )
        await asyncio.to_thread(process.start)
        child.close()
        self.process, self.conn, self.tasks_done = process, parent, 0
        try:
            msg = await asyncio.wait_for(self._recv(), self.start_timeout)
        except TimeoutError:
            self.kill()
            raise ChildCrashedError(None) from None
        if msg[0] != "ready":
            self.kill()
            raise ChildCrashedError(process.exitcode)
        log.info("slot %d child ready (pid %s)", self.index, process.pid)

    async def _recv(self) -> Any:
        """Wait for one message without blocking the loop."""
        conn = self.conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        while True:
            if conn.poll():
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    raise ChildCrashedError(self._exitcode()) from None
            readable: asyncio.Future[None] = loop.create_future()
            fd = conn.fileno()
            loop.add_reader(fd, _set_once, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    def _exitcode(self) -> int | None:
        if self.process is None:
            return None
        self.process.join(timeout=1)
        return self.process.exitcode

    def kill(self) -> None:
        """Kill the child at once (SIGKILL) and forget it."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None

    async def run(
        self,
        task: ChildTask,
        *,
        timeout: float,
        stop: asyncio.Future[StopReason],
        on_progress: Callable[[float, str | None], None],
    ) -> Any:
        """Run one task in the child; return its outputs (path, name, media type), or for a
        ``plan`` task the plan (shared state, [(inputs, payload, label)]).

        Raises:
            OpFailedError: the operation raised a usage, transient or fatal error.
            ChildCrashedError: the child died; a fresh one is started.
            SlotStoppedError: ``stop`` resolved (abort, lost lease, shutdown) or the time
                limit passed; the child is killed and replaced.
        """
        if self.conn is None:
            await self.start()
        assert self.conn is not None
        self.conn.send(task)
        reading = asyncio.ensure_future(self._until_done(on_progress))
        waiting: set[asyncio.Future[Any]] = {reading, stop}
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            reading.cancel()
            self.kill()
            raise
        if reading in done:
            try:
                return reading.result()
            except ChildCrashedError:
                self.kill()
                await self._restart()
                raise
            finally:
                self.tasks_done += 1
                if self.tasks_done >= self.max_tasks:
                    self.kill()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ChildCrashedError):
            await reading
        self.kill()
        await self._restart()
        raise SlotStoppedError(stop.result() if stop in done else StopReason.TIME_LIMIT)

    async def _restart(self) -> None:
        try:
            await self.start()
        except ChildCrashedError as e:  # tried again before the next job
            log.error("slot %d could not restart its child: %s", self.index, e)

    async def _until_done(self, on_progress: Callable[[float, str | None], None]) -> Any:
        while True:
            msg = await self._recv()
            kind = msg[0]
            if kind == "progress":
                on_progress(msg[1], msg[2])
            elif kind == "done":
                return msg[1]
            elif kind == "error":
                raise OpFailedError(msg[1], msg[2], msg[3])


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SlotPool:
    """The worker's slots; a job borrows a free one."""

    def __init__(self, config: ChildConfig, size: int, max_tasks: int, start_timeout: float):
        self.slots = [Slot(i, config, max_tasks, start_timeout) for i in range(size)]
        self._free: asyncio.Queue[Slot] = asyncio.Queue()

    async def start(self) -> None:
        _prepare_fork_server(self.slots[0].config)
        await asyncio.gather(*(slot.start() for slot in self.slots))
        for slot in self.slots:
            self._free.put_nowait(slot)

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[Slot]:
        slot = await self._free.get()
        try:
            yield slot
        finally:
            self._free.put_nowait(slot)

    def pids(self) -> list[int | None]:
        return [slot.pid for slot in self.slots]

    def close(self) -> None:
        for slot in self.slots:
            slot.kill()
