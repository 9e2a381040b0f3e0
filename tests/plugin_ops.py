"""Operations that exist only for tests, added through ``op_plugins`` like any plugin.

Only Structs here (the edge imports this module to validate requests); the functions live in
``tests.plugin_ops_impl`` and are imported by worker children alone.
"""

from __future__ import annotations

from typing import ClassVar

from contracts.jobs import Pool
from contracts.opbase import FanOut, Kind, Op, Scope


class JobOp(Op):
    """Test operations see every input at once and may follow or produce anything."""

    scope: ClassVar[Scope] = "job"
    consumes: ClassVar[Kind] = "any"
    produces: ClassVar[Kind] = "document"


class Slow(JobOp, tag="test_slow"):
    """Sleep ``seconds`` in steps, reporting progress; output a small text file."""

    impl: ClassVar[str] = "tests.plugin_ops_impl:slow"
    seconds: float = 1.0
    marker: str = ""
    """A file the op creates when it starts (lets a test see that a job is running)."""


class Flaky(JobOp, tag="test_flaky"):
    """Always fail with a transient error."""

    impl: ClassVar[str] = "tests.plugin_ops_impl:flaky"


class Crash(JobOp, tag="test_crash"):
    """Kill its own process."""

    impl: ClassVar[str] = "tests.plugin_ops_impl:crash"


class HeavySlow(JobOp, tag="test_heavy_slow"):
    """Like ``test_slow``, on the heavy pool."""

    pool: ClassVar[Pool] = Pool.heavy
    impl: ClassVar[str] = "tests.plugin_ops_impl:slow"
    seconds: float = 0.1
    marker: str = ""


class Fan(JobOp, tag="test_fan"):
    """Fan out one task per input; each task writes its input's size, the combine step their
    sum. ``seconds`` makes each task (``combine_seconds`` the combine) sleep; ``markers``
    (a folder) gets a file per task start (``task-<n>-<pid>``) and per combine run
    (``combine-<pid>``); task number ``fail`` raises a usage error."""

    impl: ClassVar[str] = "tests.plugin_ops_impl:fan_plan"
    fanout: ClassVar[FanOut | None] = FanOut(
        plan="tests.plugin_ops_impl:fan_plan",
        task="tests.plugin_ops_impl:fan_task",
        combine="tests.plugin_ops_impl:fan_combine",
    )
    seconds: float = 0.0
    combine_seconds: float = 0.0
    markers: str = ""
    fail: int | None = None


OPS = (Slow, Flaky, Crash, HeavySlow, Fan)
