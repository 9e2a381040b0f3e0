"""The child process of a slot: receives tasks over a pipe, runs operation pipelines.

This module is the child's entry point. Children are forked from a server process that
imported the pool's operation modules once (``operation_modules``, preloaded by the slots'
forkserver), so a fresh child is ready in milliseconds and the first job pays no import. At
start a child limits its own memory and dies with its parent (``PR_SET_PDEATHSIG``: the fork
server, which exits when the worker does). What it sends back is small: a finished output is
its path, name, media type, size and SHA-256 (hashed here, where the bytes were just written,
not in the worker's event loop); progress at most every ``_PROGRESS_EVERY`` seconds.
It must stay importable without the numeric stack: the parent imports it to name the target
of the child process.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from contracts.opbase import Op
from contracts.ops import OpCatalog
from contracts.settings import LimitsSettings

PR_SET_PDEATHSIG = 1
_PROGRESS_EVERY = 0.05
"""Least seconds between two progress messages over the pipe (the worker throttles further);
a job shorter than this sends none."""

Output = tuple[str, str, str, int, str]
"""A finished output as the child reports it: (path, name, media type, size, SHA-256)."""


@dataclass(frozen=True)
class ChildConfig:
    op_plugins: list[str]
    pool: str
    limits: LimitsSettings
    memory_mb: int
    threads: int


@dataclass(frozen=True)
class ChildTask:
    job_id: str
    pipeline: bytes
    inputs: list[tuple[str, str, str, str]]  # (path, media type, name, source id)
    workdir: str
    resources: dict[str, Any] = field(default_factory=dict)
    """What the runtime fetched for the operations (models, results of other jobs)."""
    kind: str = "pipeline"
    """``pipeline``; or, for a fanned-out operation (the pipeline's only step), ``plan``,
    ``task`` (with ``shared`` and ``payload``) or ``combine`` (with ``shared`` and ``parts``)."""
    shared: bytes = b""
    payload: bytes = b""
    parts: list[list[tuple[str, str, str]]] = field(default_factory=list)
    """Each task's files (path, media type, name), in task order, for ``combine``."""


@dataclass
class _Context:
    """The ``OpContext`` given to operations: where to write, limits, and progress."""

    conn: Connection
    workdir: Path
    limits: LimitsSettings
    resources: dict[str, Any]
    _weight: tuple[float, float] = field(default=(0.0, 1.0))
    _sent: float = field(default_factory=time.monotonic)

    def weigh(self, start: float, span: float) -> None:
        self._weight = (start, span)

    def progress(self, fraction: float, message: str | None = None) -> None:
        now = time.monotonic()
        if now - self._sent < _PROGRESS_EVERY:
            return
        self._sent = now
        start, span = self._weight
        value = start + span * min(1.0, max(0.0, float(fraction)))
        self.conn.send(("progress", value, message))


def _limit_self(config: ChildConfig) -> None:
    with contextlib.suppress(OSError):  # die with the parent, even on its SIGKILL (Linux)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if config.memory_mb:
        limit = config.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # SIGINT goes to the whole process group on Ctrl-C; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(task: ChildTask, decoder: Any, ctx: _Context) -> Any:
    from worker.ops.api import InputFile
    from worker.runtime.pipeline import resolve, run_pipeline

    pipeline: list[Op] = decoder.decode(task.pipeline)
    files = [InputFile(path=Path(p), media_type=m, name=n, source=s) for p, m, n, s in task.inputs]
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    if task.kind == "pipeline":
        outputs = run_pipeline(pipeline, files, ctx)
    else:
        op = pipeline[0]
        fan = type(op).fanout
        if fan is None:
            raise TypeError(f"{type(op).__name__} does not fan out")
        if task.kind == "plan":
            plan = resolve(fan.plan)(op, files, ctx)
            return (plan.shared, [(list(t.inputs), t.payload, t.label) for t in plan.tasks])
        if task.kind == "task":
            outputs = resolve(fan.task)(op, task.shared, task.payload, files, ctx)
        else:
            parts = [
                [InputFile(path=Path(p), media_type=m, name=n) for p, m, n in part]
                for part in task.parts
            ]
            outputs = resolve(fan.combine)(op, task.shared, parts, ctx)
    return [_describe(Path(f.path), f.name, f.media_type) for f in outputs]


def _describe(path: Path, name: str, media_type: str) -> Output:
    """Hash and flush an output here, in parallel across slots, not in the worker's loop (the
    store trusts the digest and need not flush the bytes again when it moves the file)."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        size = f.tell()
        os.fsync(f.fileno())
    return (str(path), name, media_type, size, digest)


def operation_modules(op_plugins: list[str], pool: str) -> list[str]:
    """The modules a child of ``pool`` imports before its first task (its operations and the
    pipeline runner); the heavy pool runs every operation."""
    catalog = OpCatalog.with_plugins(op_plugins)
    impls = [op.impl for op in catalog.ops.values() if pool in (op.pool.value, "heavy")]
    modules = {impl.partition(":")[0] for impl in impls}
    return ["worker.errors", "worker.runtime.pipeline", *sorted(modules)]


def configure_environment(config: ChildConfig) -> None:
    """Thread and decode limits of the numeric libraries, set before they are imported (in the
    fork server, which children inherit them from). The worker parent imports none of them."""
    os.environ.setdefault("OMP_NUM_THREADS", str(config.threads))
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", str(config.threads))
    # OpenCV's own decode limit, below ours: a header that lies still cannot allocate more.
    os.environ.setdefault("CV_IO_MAX_IMAGE_PIXELS", str(config.limits.max_pixels))


def child_main(conn: Connection, config: ChildConfig) -> None:
    """Serve tasks until the pipe closes."""
    _limit_self(config)
    configure_environment(config)
    from worker.errors import OpError
    from worker.runtime.pipeline import resolve

    catalog = OpCatalog.with_plugins(config.op_plugins)
    decoder = msgspec.json.Decoder(list[catalog.union])  # type: ignore[name-defined]
    for op in catalog.ops.values():
        if config.pool in (op.pool.value, "heavy"):
            resolve(op.impl)  # imported by the fork server already; a spawned child imports here
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task: ChildTask = conn.recv()
        except (EOFError, OSError):
            return
        ctx = _Context(conn, Path(task.workdir), config.limits, task.resources)
        try:
            outputs = _run(task, decoder, ctx)
        except OpError as e:
            conn.send(
                ("error", e.code, str(e.args[0]) if e.args else str(e), getattr(e, "detail", None))
            )
        except MemoryError:
            conn.send(
                ("error", "usage_error", "the job needs more memory than a worker allows", None)
            )
        except Exception as e:  # a bug or an unwrapped library error: fail and alert
            conn.send(
                (
                    "error",
                    "fatal_error",
                    f"{type(e).__name__}: {e}",
                    "".join(traceback.format_exception(e))[-4000:],
                )
            )
        else:
            conn.send(("done", outputs))
        sys.stdout.flush()
