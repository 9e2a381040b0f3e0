"""Runs a job's pipeline over its inputs inside a worker child.

Items flow from step to step: an ``item``-scope operation is called once per item, a
``job``-scope one once with every item (as files). A ``branch`` runs each of its named
sub-pipelines from the same item and names the results ``<input>.<branch>``; whatever is left
at the end of a branch or of the pipeline is encoded (``imaging.finish``), so pixels are decoded
once and encoded once however many steps touch them. Progress is reported per input.

Imports no pixel library itself (the child imports this module before its operations):
``imaging`` is imported when a picture must be encoded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from contracts.opbase import Op
from contracts.ops import Branch, tag_of
from worker.errors import UsageError
from worker.ops.api import InputFile, Item, OpContext, Picture


class WeightedContext(OpContext, Protocol):
    def weigh(self, start: float, span: float) -> None:
        """Map the operations' progress fractions into [start, start + span]."""
        ...


_impls: dict[str, Callable[..., Any]] = {}


def resolve(impl: str) -> Callable[..., Any]:
    """Import ``module:function`` once."""
    fn = _impls.get(impl)
    if fn is None:
        module, _, name = impl.partition(":")
        fn = _impls[impl] = getattr(importlib.import_module(module), name)
    return fn


def run_pipeline(
    pipeline: Sequence[Op], inputs: list[InputFile], ctx: WeightedContext
) -> list[InputFile]:
    """Apply the pipeline; return the files it produced, in order."""
    items: list[Item] = list(inputs)
    per_item = [op for op in pipeline if type(op).scope == "item" and not isinstance(op, Branch)]
    if len(per_item) == len(pipeline):  # the common case: progress per input
        n = max(len(items), 1)
        out = []
        for i, item in enumerate(items):
            out.append(_finish(_steps(pipeline, item, ctx, i / n, 1 / n), ctx))
        return out
    n_steps = len(pipeline)
    for k, op in enumerate(pipeline):
        start, span = k / n_steps, 1 / n_steps
        if isinstance(op, Branch):
            items = _branch(op, items, ctx, start, span)
        elif type(op).scope == "job":
            ctx.weigh(start, span)
            files = [_finish(item, ctx) for item in items]
            items = list(resolve(type(op).impl)(op, files, ctx))
        else:
            n = max(len(items), 1)
            items = [
                _steps([op], item, ctx, start + span * i / n, span / n)
                for i, item in enumerate(items)
            ]
    return [_finish(item, ctx) for item in items]


def _steps(
    steps: Sequence[Op], item: Item, ctx: WeightedContext, start: float, span: float
) -> Item:
    """Run item-scope steps on one item, sharing [start, start + span] of the progress."""
    n = len(steps)
    for k, op in enumerate(steps):
        ctx.weigh(start + span * k / n, span / n)
        if type(op).scope != "item":
            files = resolve(type(op).impl)(op, [_finish(item, ctx)], ctx)
            if len(files) != 1:
                raise UsageError(f"{tag_of(op)} cannot be used inside a branch")
            item = files[0]
            continue
        item = resolve(type(op).impl)(op, item, ctx)
    ctx.weigh(start + span, 0.0)
    ctx.progress(1.0)
    return item


def _branch(
    op: Branch[Op], items: list[Item], ctx: WeightedContext, start: float, span: float
) -> list[Item]:
    out: list[Item] = []
    branches = [(b.name, b.pipeline) for b in op.branches]
    total = max(len(items) * len(branches), 1)
    k = 0
    for item in items:
        for name, steps in branches:
            named = replace(item, name=f"{item.name}.{name}")
            done = _steps(steps, named, ctx, start + span * k / total, span / total)
            out.append(_finish(done, ctx))  # encode now: the pixels of a branch can go
            k += 1
    return out


def _finish(item: Item, ctx: OpContext) -> InputFile:
    if isinstance(item, Picture):
        from worker.ops.imaging import finish

        return finish(item, ctx)
    return item
