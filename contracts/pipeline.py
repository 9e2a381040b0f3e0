"""Whole-pipeline rules, checked at the edge so a bad pipeline is a 422 and never queued.

Step by step, each operation must take the kind of item the previous one hands on (an image
operation cannot follow ``metadata``, which produces a document); a ``branch`` may only end the
per-input steps and an ``archive`` only end the pipeline; the number of steps and of outputs
is bounded. Imports msgspec and the standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts.api import FieldError
from contracts.opbase import Kind, Op
from contracts.ops import Archive, Branch, tag_of


def check_pipeline(
    pipeline: Sequence[Op],
    n_inputs: int,
    *,
    max_steps: int,
    max_outputs: int,
    inputs_kind: Kind = "image",
) -> list[FieldError]:
    """Return what is wrong with a pipeline over ``n_inputs`` inputs of ``inputs_kind``
    (``any`` when they differ) (empty when it is fine)."""
    problems: list[FieldError] = []
    n_steps = sum(
        sum(len(b.pipeline) for b in op.branches) if isinstance(op, Branch) else 1
        for op in pipeline
    )
    if n_steps > max_steps:
        problems.append(FieldError(message=f"at most {max_steps} operations", path="$.pipeline"))
    kind: Kind = inputs_kind
    outputs = peak = n_inputs
    last = len(pipeline) - 1
    if pipeline and (wrong := pipeline[0].check_inputs(n_inputs)):
        problems.append(FieldError(message=wrong, path="$.inputs"))
    for i, op in enumerate(pipeline):
        path = f"$.pipeline[{i}]"
        problems += _placement(op, i, len(pipeline), outputs, path)
        if isinstance(op, Archive):
            if i != last:
                problems.append(FieldError(message="archive must be the last step", path=path))
            outputs = (outputs + 1) if op.keep else 1
            continue
        if isinstance(op, Branch):
            if i != last and not (i + 1 == last and isinstance(pipeline[last], Archive)):
                problems.append(
                    FieldError(message="only an archive may follow a branch", path=path)
                )
            for j, branch in enumerate(op.branches):
                problems += _chain(branch.pipeline, kind, f"{path}.branches[{j}].pipeline")
            outputs *= len(op.branches)
            peak = max(peak, outputs)
            kind = "any"
            continue
        problems += _chain([op], kind, path, first=i)
        kind = _after(op, kind)
        per_input = op.outputs_per_input()
        outputs = outputs * per_input if per_input else 1
        peak = max(peak, outputs)
    if n_inputs == 0 and not _archive_of_results(pipeline):
        problems.append(
            FieldError(
                message="give inputs, or a pipeline of one archive of earlier results",
                path="$.inputs",
            )
        )
    if max(outputs, peak) > max_outputs:
        problems.append(
            FieldError(
                message=f"the job would produce {max(outputs, peak)} files, at most {max_outputs}",
                path="$.pipeline",
            )
        )
    return problems


def _placement(op: Op, i: int, n_steps: int, items: int, path: str) -> list[FieldError]:
    """A fanned-out operation alone in its job; a job-scope step given ``items`` it takes."""
    problems = []
    if type(op).fanout is not None and n_steps > 1:
        problems.append(
            FieldError(message=f"{tag_of(op)} must be the only step of its job", path=path)
        )
    if i > 0 and type(op).scope == "job" and (wrong := op.check_inputs(items)):
        problems.append(FieldError(message=wrong, path=path))
    return problems


def _chain(
    steps: Sequence[Op], kind: Kind, path: str, first: int | None = None
) -> list[FieldError]:
    problems = []
    for j, op in enumerate(steps):
        where = path if first is not None else f"{path}[{j}]"
        if isinstance(op, Archive):
            problems.append(FieldError(message="archive cannot be used in a branch", path=where))
            continue
        takes = type(op).consumes
        accepted = takes if isinstance(takes, tuple) else (takes,)
        if "any" not in accepted and kind != "any" and kind not in accepted:
            before = "the inputs are" if first == 0 else "the step before it produces"
            problems.append(
                FieldError(
                    message=f"{tag_of(op)} needs {' or '.join(_a(k) for k in accepted)}, "
                    f"but {before} {_a(kind)}",
                    path=where,
                )
            )
        kind = _after(op, kind)
    return problems


def _after(op: Op, kind: Kind) -> Kind:
    produced = type(op).produces
    return kind if produced == "any" else produced


def _archive_of_results(pipeline: Sequence[Op]) -> bool:
    return len(pipeline) == 1 and isinstance(pipeline[0], Archive) and bool(pipeline[0].results)


def _a(kind: str) -> str:
    return {"image": "an image", "fits": "a FITS file", "any": "any file"}.get(kind, f"a {kind}")
