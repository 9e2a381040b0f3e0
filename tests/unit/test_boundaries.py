"""The edge stays light and the worker never loads the web stack (checked in fresh
interpreters, so nothing imported by other tests can hide a leak)."""

from __future__ import annotations

import pytest

from tests.helpers import leaked_imports


@pytest.mark.parametrize(
    "modules",
    [["edge"], ["edge.app", "edge.main"], ["contracts", "contracts.ops", "contracts.api"]],
)
def test_edge_does_not_import_the_numeric_stack(modules: list[str]) -> None:
    assert leaked_imports(modules, {"numpy", "scipy", "astropy", "cv2", "worker"}) == ""


def test_contracts_import_msgspec_only() -> None:
    third_party = {"litestar", "asyncpg", "redis", "aio_pika", "aioboto3", "numpy", "cv2"}
    assert (
        leaked_imports(
            ["contracts", "contracts.settings", "contracts.names", "contracts.schema"], third_party
        )
        == ""
    )


@pytest.mark.parametrize(
    "modules", [["worker"], ["worker.runtime.main", "worker.runtime.runner"], ["cli.main"]]
)
def test_worker_parent_does_not_import_litestar_or_pixels(modules: list[str]) -> None:
    assert leaked_imports(modules, {"litestar", "edge", "numpy", "cv2", "scipy", "astropy"}) == ""
