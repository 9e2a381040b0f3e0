"""Implementations of the test operations (run in worker children)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from worker.errors import TransientError, UsageError
from worker.ops.api import InputFile, OutputFile, Plan, TaskSpec


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


def fan_plan(op: Any, inputs: list[InputFile], ctx: Any) -> Plan:
    shared = json.dumps({"inputs": len(inputs)}).encode()
    tasks = [
        TaskSpec(inputs=(i,), payload=str(i).encode(), label=item.name)
        for i, item in enumerate(inputs)
    ]
    return Plan(shared=shared, tasks=tasks)


def _mark(op: Any, name: str) -> None:
    if op.markers:
        Path(op.markers, f"{name}-{os.getpid()}").write_text(str(os.getpid()))


def fan_task(
    op: Any, shared: bytes, payload: bytes, inputs: list[InputFile], ctx: Any
) -> list[OutputFile]:
    index = int(payload)
    _mark(op, f"task-{index}")
    if op.fail == index:
        raise UsageError(f"input {inputs[0].name} is not to my taste")
    time.sleep(op.seconds)
    ctx.progress(1.0)
    out = ctx.workdir / f"part-{index}.json"
    size = inputs[0].path.stat().st_size
    out.write_text(json.dumps({"index": index, "size": size, "of": json.loads(shared)["inputs"]}))
    return [OutputFile(path=out, name=f"part-{index}", media_type="application/json")]


def fan_combine(op: Any, shared: bytes, parts: list[list[InputFile]], ctx: Any) -> list[OutputFile]:
    _mark(op, "combine")
    time.sleep(op.combine_seconds)
    found = [json.loads(part[0].path.read_text()) for part in parts]
    out = ctx.workdir / "sum.json"
    out.write_text(json.dumps({"parts": found, "sum": sum(p["size"] for p in found)}))
    return [OutputFile(path=out, name="sum", media_type="application/json")]
