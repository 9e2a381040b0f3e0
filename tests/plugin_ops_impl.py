"""Implementations of the test operations (run in worker children)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from worker.errors import TransientError
from worker.ops.api import InputFile, OutputFile


def slow(op: Any, inputs: list[InputFile], ctx: Any) -> list[OutputFile]:
    if op.marker:
        Path(op.marker).write_text(str(os.getpid()))
    steps = 10
    for i in range(steps):
        time.sleep(op.seconds / steps)
        ctx.progress((i + 1) / steps, f"step {i + 1}/{steps}")
    out = ctx.workdir / "slow.txt"
    out.write_text(f"slept {op.seconds} s on {len(inputs)} input(s) in pid {os.getpid()}\n")
    return [OutputFile(path=out, name="slow", media_type="text/plain")]


def flaky(op: Any, inputs: list[InputFile], ctx: Any) -> list[OutputFile]:
    raise TransientError("the test backend is unavailable")


def crash(op: Any, inputs: list[InputFile], ctx: Any) -> list[OutputFile]:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")
