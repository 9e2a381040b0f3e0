"""The edge stays light and the worker never loads the web stack (checked in fresh
interpreters, so nothing imported by other tests can hide a leak)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys, importlib
for name in {modules!r}:
    importlib.import_module(name)
leaked = sorted({forbidden!r} & {{m.split('.')[0] for m in sys.modules}})
print(",".join(leaked))
"""


def _leaks(modules: list[str], forbidden: set[str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=modules, forbidden=forbidden)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize(
    "modules",
    [["edge"], ["edge.app", "edge.main"], ["contracts", "contracts.ops", "contracts.api"]],
)
def test_edge_does_not_import_the_numeric_stack(modules: list[str]) -> None:
    assert _leaks(modules, {"numpy", "scipy", "astropy", "cv2", "worker"}) == ""


def test_contracts_import_msgspec_only() -> None:
    third_party = {"litestar", "asyncpg", "redis", "aio_pika", "aioboto3", "numpy", "cv2"}
    assert (
        _leaks(
            ["contracts", "contracts.settings", "contracts.names", "contracts.schema"], third_party
        )
        == ""
    )


@pytest.mark.parametrize(
    "modules", [["worker"], ["worker.runtime.main", "worker.runtime.runner"], ["pixfleet.cli"]]
)
def test_worker_parent_does_not_import_litestar_or_pixels(modules: list[str]) -> None:
    assert _leaks(modules, {"litestar", "edge", "numpy", "cv2", "scipy", "astropy"}) == ""
