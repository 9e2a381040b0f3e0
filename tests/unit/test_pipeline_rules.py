"""Whole-pipeline rules (``contracts.pipeline.check_pipeline``), pools and the op union's
refusal of nested branches: pipelines are decoded from JSON as the edge decodes them."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from contracts.api import FieldError
from contracts.jobs import Pool
from contracts.opbase import Op
from contracts.ops import Archive, Branch, OpCatalog, Resize
from contracts.pipeline import check_pipeline

CATALOG = OpCatalog()
DECODER = msgspec.json.Decoder(list[CATALOG.union])  # type: ignore[name-defined]
JOB = "0190a4b2-7c1e-7000-8000-000000000001"

RESIZE = {"op": "resize", "width": 100}
FLIP = {"op": "flip"}
METADATA = {"op": "metadata"}
CONVERT = {"op": "convert", "format": "webp"}
ARCHIVE = {"op": "archive"}


def _pipeline(*steps: dict[str, Any]) -> list[Op]:
    return DECODER.decode(msgspec.json.encode(list(steps)))


def _branch(**branches: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "op": "branch",
        "branches": [{"name": name, "pipeline": steps} for name, steps in branches.items()],
    }


def _check(
    steps: list[dict[str, Any]], n_inputs: int = 1, max_steps: int = 20, max_outputs: int = 100
) -> list[FieldError]:
    return check_pipeline(_pipeline(*steps), n_inputs, max_steps=max_steps, max_outputs=max_outputs)


def _paths(problems: list[FieldError]) -> list[str | None]:
    return [p.path for p in problems]


THREE = _branch(
    small=[RESIZE, {"op": "convert", "format": "jpeg", "quality": 80}],
    web=[CONVERT],
    gray=[{"op": "filter", "kind": "grayscale"}, {"op": "crop", "width": 10, "height": 10}],
)


def test_three_branches_and_an_archive_are_fine() -> None:
    pipeline = _pipeline(RESIZE, THREE, {"op": "archive", "name": "bundle", "keep": True})
    assert isinstance(pipeline[1], Branch) and isinstance(pipeline[2], Archive)
    assert [b.name for b in pipeline[1].branches] == ["small", "web", "gray"]
    # 1 + 2 + 1 + 2 + 1 steps; 5 inputs x 3 branches + the zip = 16 outputs.
    assert check_pipeline(pipeline, 5, max_steps=7, max_outputs=16) == []


@pytest.mark.parametrize(
    "steps",
    [
        [RESIZE, FLIP, CONVERT],
        [METADATA],
        [METADATA, ARCHIVE],  # an archive takes documents too
        [RESIZE, METADATA],
        [RESIZE, THREE],
        [THREE, ARCHIVE],
        [_branch(info=[METADATA], web=[CONVERT]), ARCHIVE],
        [FLIP, {"op": "archive", "results": [{"job": JOB}]}],
    ],
)
def test_valid_pipelines(steps: list[dict[str, Any]]) -> None:
    assert _check(steps) == []


def test_an_image_step_after_metadata() -> None:
    [problem] = _check([METADATA, RESIZE])
    assert problem.path == "$.pipeline[1]"
    assert problem.message == "resize needs an image, but the step before it produces a document"
    # Each step is checked against what the one before it produces (convert: an image).
    assert _paths(_check([RESIZE, METADATA, CONVERT, FLIP, METADATA, RESIZE])) == [
        "$.pipeline[2]", "$.pipeline[5]",
    ]  # fmt: skip


def test_an_image_step_after_metadata_inside_a_branch() -> None:
    problems = _check([_branch(ok=[FLIP], info=[METADATA, FLIP, METADATA, CONVERT])])
    assert _paths(problems) == [
        "$.pipeline[0].branches[1].pipeline[1]", "$.pipeline[0].branches[1].pipeline[3]",
    ]  # fmt: skip
    # A branch continues from what the step before it produced.
    [after] = _check([METADATA, _branch(a=[RESIZE])])
    assert after.path == "$.pipeline[1].branches[0].pipeline[0]"


@pytest.mark.parametrize(
    ("steps", "path"),
    [
        ([ARCHIVE, RESIZE], "$.pipeline[0]"),
        ([RESIZE, ARCHIVE, FLIP], "$.pipeline[1]"),
        ([ARCHIVE, ARCHIVE], "$.pipeline[0]"),
    ],
)
def test_archive_must_be_last(steps: list[dict[str, Any]], path: str) -> None:
    problems = _check(steps)
    assert (problems[0].path, problems[0].message) == (path, "archive must be the last step")


@pytest.mark.parametrize(
    ("steps", "path"),
    [
        ([THREE, RESIZE], "$.pipeline[0]"),
        ([RESIZE, THREE, FLIP], "$.pipeline[1]"),
        ([THREE, FLIP, ARCHIVE], "$.pipeline[0]"),
        ([THREE, THREE], "$.pipeline[0]"),
    ],
)
def test_only_an_archive_may_follow_a_branch(steps: list[dict[str, Any]], path: str) -> None:
    problems = [p for p in _check(steps) if "branch" in p.message]
    assert [(p.path, p.message) for p in problems] == [
        (path, "only an archive may follow a branch")
    ]


@pytest.mark.parametrize(("position", "index"), [(0, 0), (2, 1)])
def test_archive_inside_a_branch(position: int, index: int) -> None:
    inner = [FLIP, ARCHIVE] if index else [ARCHIVE]
    branches = [{"name": "a", "pipeline": [FLIP]}, {"name": "b", "pipeline": [FLIP]}]
    branches.insert(position, {"name": "zip", "pipeline": inner})
    [problem] = _check([{"op": "branch", "branches": branches}])
    assert problem.path == f"$.pipeline[0].branches[{position}].pipeline[{index}]"
    assert problem.message == "archive cannot be used in a branch"


@pytest.mark.parametrize(("max_steps", "ok"), [(5, True), (4, False)])
def test_steps_inside_branches_count(max_steps: int, ok: bool) -> None:
    steps = [RESIZE, _branch(a=[FLIP, FLIP], b=[CONVERT]), ARCHIVE]  # 1 + 2 + 1 + 1
    problems = _check(steps, max_steps=max_steps)
    expected = (
        [] if ok else [FieldError(message=f"at most {max_steps} operations", path="$.pipeline")]
    )
    assert problems == expected


@pytest.mark.parametrize(
    ("steps", "n_inputs", "outputs"),
    [
        ([RESIZE], 12, 12),
        ([THREE], 10, 30),
        ([RESIZE, THREE], 4, 12),
        ([THREE, {"op": "archive", "keep": True}], 10, 31),
        ([_branch(**{f"b{i}": [FLIP] for i in range(16)})], 2, 32),
    ],
)
def test_outputs_are_inputs_times_branches(
    steps: list[dict[str, Any]], n_inputs: int, outputs: int
) -> None:
    assert _check(steps, n_inputs, max_outputs=outputs) == []
    [problem] = _check(steps, n_inputs, max_outputs=outputs - 1)
    assert problem.path == "$.pipeline"
    assert problem.message == f"the job would produce {outputs} files, at most {outputs - 1}"


def test_an_archive_counts_the_files_it_zips() -> None:
    """The limit bounds the files a worker writes, so what an archive swallows counts too."""
    assert _check([THREE, ARCHIVE], 50, max_outputs=150) == []
    [problem] = _check([THREE, ARCHIVE], 50, max_outputs=149)
    assert problem.message == "the job would produce 150 files, at most 149"


@pytest.mark.parametrize(
    ("steps", "ok"),
    [
        ([{"op": "archive", "results": [{"job": JOB}]}], True),
        ([{"op": "archive", "results": [{"job": JOB, "names": ["a.png"]}], "keep": True}], True),
        ([ARCHIVE], False),  # nothing to archive
        ([RESIZE], False),
        ([RESIZE, {"op": "archive", "results": [{"job": JOB}]}], False),
        ([THREE, {"op": "archive", "results": [{"job": JOB}]}], False),
    ],
)
def test_zero_inputs_only_for_an_archive_of_results(steps: list[dict[str, Any]], ok: bool) -> None:
    problems = _check(steps, n_inputs=0)
    assert _paths(problems) == ([] if ok else ["$.inputs"])
    # With inputs, the same pipelines are fine.
    assert _check(steps, n_inputs=1) == []


@pytest.mark.parametrize(
    ("steps", "pool"),
    [
        ([RESIZE, FLIP], Pool.standard),
        ([RESIZE, THREE, ARCHIVE], Pool.standard),
        ([{"op": "denoise"}], Pool.heavy),
        ([RESIZE, _branch(a=[FLIP], b=[{"op": "denoise"}]), ARCHIVE], Pool.heavy),
        ([{"op": "model", "name": "upscale-2x"}], Pool.heavy),
    ],
)
def test_pool_for(steps: list[dict[str, Any]], pool: Pool) -> None:
    assert CATALOG.pool_for(_pipeline(*steps)) is pool


@pytest.mark.parametrize(
    "steps",
    [
        [_branch(outer=[_branch(inner=[FLIP])])],
        [_branch(a=[FLIP], b=[RESIZE, _branch(c=[FLIP])])],
        [{"op": "branch", "branches": []}],
        [{"op": "branch", "branches": [{"name": "a", "pipeline": []}]}],
        [{"op": "branch", "branches": [{"name": "a", "pipeline": [FLIP]}] * 2}],  # same name
        [{"op": "branch", "branches": [{"name": "a.b", "pipeline": [FLIP]}]}],
        [{"op": "branch", "branches": [{"name": "a", "steps": [FLIP]}]}],
        [_branch(**{f"b{i}": [FLIP] for i in range(17)})],
    ],
    ids=["nested", "nested-later", "none", "empty", "same-name", "dot", "unknown-field", "17"],
)
def test_bad_branches_do_not_decode(steps: list[dict[str, Any]]) -> None:
    with pytest.raises(msgspec.ValidationError):
        _pipeline(*steps)


def test_branches_do_not_nest_in_the_union() -> None:
    body = msgspec.json.encode([_branch(outer=[_branch(inner=[FLIP])])])
    with pytest.raises(msgspec.ValidationError, match=r"branches\[0\]\.pipeline\[0\]"):
        DECODER.decode(body)
    [branch] = _pipeline(_branch(a=[RESIZE]))
    assert isinstance(branch, Branch)
    assert branch.branches[0].pipeline == [Resize(width=100)]


CIRCLE = {"shape": "circle", "ra": 10.0, "dec": 20.0, "radius": 0.01}
CUTOUT = {"op": "cutout", "stencils": [CIRCLE, CIRCLE, CIRCLE]}


def _check_fits(steps: list[dict[str, Any]], n_inputs: int = 1, **kw: Any) -> list[FieldError]:
    limits = {"max_steps": 20, "max_outputs": 100, **kw}
    return check_pipeline(_pipeline(*steps), n_inputs, inputs_kind="fits", **limits)


def test_astronomy_steps_chain_on_fits_and_raster_steps_do_not() -> None:
    assert _check_fits([CUTOUT, {"op": "preview"}, {"op": "resize", "width": 64}]) == []
    assert _check_fits([{"op": "header"}]) == []
    assert _check_fits([METADATA]) == []  # metadata reads FITS too
    wrong = _check_fits([RESIZE])
    assert [p.message for p in wrong] == ["resize needs an image, but the inputs are a FITS file"]
    after_preview = _check_fits([{"op": "preview"}, {"op": "header"}])
    assert _paths(after_preview) == ["$.pipeline[1]"]
    assert "the step before it produces an image" in after_preview[0].message
    raster = _check([CUTOUT])
    assert [p.message for p in raster] == ["cutout needs a FITS file, but the inputs are an image"]


def test_cutout_makes_one_file_per_input_and_stencil() -> None:
    assert _check_fits([CUTOUT], n_inputs=33, max_outputs=99) == []
    over = _check_fits([CUTOUT], n_inputs=34, max_outputs=100)
    assert [p.message for p in over] == ["the job would produce 102 files, at most 100"]


def test_composite_and_mosaic_check_their_inputs() -> None:
    lupton = {"op": "composite", "lupton": {}}
    assert _check_fits([lupton], n_inputs=3) == []
    assert [p.path for p in _check_fits([lupton], n_inputs=2)] == ["$.inputs"]
    channels = {"op": "composite", "channels": [{"colour": "#ff0000"}, {"colour": "#00ff00"}]}
    assert _check_fits([channels], n_inputs=2) == []
    assert [p.message for p in _check_fits([channels], n_inputs=3)] == ["2 channels for 3 inputs"]
    # After a cutout of 2 inputs x 3 stencils the composite sees 6 files.
    assert [p.path for p in _check_fits([CUTOUT, lupton], n_inputs=2)] == ["$.pipeline[1]"]
    assert _check_fits([{"op": "mosaic"}], n_inputs=2) == []
    assert [p.path for p in _check_fits([{"op": "mosaic"}], n_inputs=1)] == ["$.inputs"]


def test_a_fanned_out_operation_is_the_only_step_and_runs_heavy() -> None:
    problems = _check_fits([{"op": "mosaic"}, ARCHIVE], n_inputs=2)
    assert [(p.path, p.message) for p in problems] == [
        ("$.pipeline[0]", "mosaic must be the only step of its job")
    ]
    assert CATALOG.pool_for(_pipeline({"op": "mosaic"})) == Pool.heavy
    assert CATALOG.pool_for(_pipeline(CUTOUT, {"op": "preview"})) == Pool.standard
