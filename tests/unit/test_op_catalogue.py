"""Every ``module:function`` path of the operation catalogue (the built-ins and the test
plugins) names a function that takes what the worker hands it.

Paths are strings so that declaring an operation imports nothing; a renamed or moved function
would otherwise surface only when a job of that operation runs. They are resolved here with the
runtime's own ``resolve``: ``impl`` (called in a child by the pipeline), the ``fanout`` steps
(``plan``, ``task`` and ``combine``, called in a child) and ``after`` (awaited by the runtime).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from contracts.ops import OpCatalog
from worker.runtime.pipeline import resolve

CATALOG = OpCatalog.with_plugins(["tests.plugin_ops"])

# The positional arguments each path is called with (worker/runtime/pipeline.py, child.py and
# the ``after`` hook's caller), and whether it is awaited.
_CALLS: dict[str, tuple[int, bool]] = {
    "impl": (3, False),  # op, item or files, ctx
    "plan": (3, False),  # op, files, ctx
    "task": (5, False),  # op, shared, payload, files, ctx
    "combine": (4, False),  # op, shared, parts, ctx
    "after": (4, True),  # pool, owner, job id, outputs
}


def _paths() -> list[Any]:
    params = []
    for tag, op in sorted(CATALOG.ops.items()):
        paths = {"impl": op.impl}
        if op.fanout is not None:
            fan = op.fanout
            paths.update(plan=fan.plan, task=fan.task, combine=fan.combine)
        if op.after is not None:
            paths["after"] = op.after
        params += [pytest.param(role, path, id=f"{tag}-{role}") for role, path in paths.items()]
    return params


PATHS = _paths()


def _takes(fn: Callable[..., Any], n: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    return True


@pytest.mark.parametrize(("role", "path"), PATHS)
def test_every_path_resolves_to_a_function_of_the_right_shape(role: str, path: str) -> None:
    fn = resolve(path)
    arguments, awaited = _CALLS[role]
    assert callable(fn), path
    assert _takes(fn, arguments), f"{path} does not take {arguments} positional arguments"
    assert inspect.iscoroutinefunction(fn) == awaited, path


def test_the_catalogue_has_every_kind_of_path() -> None:
    """Built-ins and plugins both count, so no role above goes untested."""
    tags = {p.id.rsplit("-", 1)[0] for p in PATHS}
    roles = {p.values[0] for p in PATHS}
    assert {"thumbnail", "mosaic", "catalogue", "test_fan", "test_slow"} <= tags
    assert roles == set(_CALLS)
