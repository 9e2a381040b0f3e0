"""What an attempt hands its child besides the pipeline: input files (uploads and datasets,
fetched when the store is not local), registered models, and results of earlier jobs.

Must not import pixel libraries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from contracts import names
from contracts.api import JobRequest
from contracts.ops import ResultRef
from pixfleet.store import ObjectNotFoundError
from worker.ops.api import InputFile
from worker.runtime.context import Runtime


class InputError(Exception):
    """An input of the job is gone (expired or deleted) or not the owner's to use."""


class Step(msgspec.Struct):
    """What the runtime reads of a pipeline step: the resources it needs fetched."""

    op: str
    name: str | None = None
    results: list[ResultRef] = []
    branches: list[Branch] | None = None


class Branch(msgspec.Struct):
    pipeline: list[Step]


request_decoder = msgspec.json.Decoder(JobRequest[msgspec.Raw])
steps_decoder = msgspec.json.Decoder(list[Step])


def top_level_ops(rt: Runtime, steps: list[Step]) -> list[Any]:
    """The operation classes of a pipeline's top-level steps."""
    return [rt.catalog.ops[s.op] for s in steps if s.op in rt.catalog.ops]


async def input_files(
    rt: Runtime,
    owner: str,
    request: JobRequest[msgspec.Raw],
    workdir: Path,
    only: list[int] | None = None,
    uploads: Mapping[UUID, tuple[str, str]] | None = None,
) -> list[tuple[str, str, str, str]]:
    """The job's input files (uploads, then datasets) as (path, media type, name, source id),
    fetched from the store when it is not local; ``only`` picks some by index. ``uploads``
    (id -> object key, media type) are the rows the claim already read; otherwise they are
    looked up.

    Raises:
        InputError: an input no longer exists, or a dataset is not visible to ``owner``.
    """
    wanted: list[tuple[str, str, str]] = []  # (object key, media type, name)
    if request.inputs:
        if uploads is None:
            rows = await rt.jobs.inputs(request.inputs)
            uploads = {k: (r["object_key"], r["media_type"]) for k, r in rows.items()}
        for upload_id in request.inputs:
            found_upload = uploads.get(upload_id)
            if found_upload is None:
                raise InputError(f"input {upload_id} no longer exists")
            wanted.append((*found_upload, str(upload_id)))
    if request.datasets:
        from pixfleet.registry import datasets

        found = await datasets.lookup(rt.jobs.pool, owner, request.datasets)
        for dataset_id in request.datasets:
            row = found.get(dataset_id)
            if row is None:
                raise InputError(f"dataset {dataset_id!r} does not exist")
            wanted.append((row["object_key"], row["media_type"], dataset_id))
    picked = [wanted[i] for i in only] if only is not None else wanted
    files = []
    for n, (key, media_type, name) in enumerate(picked):
        path = rt.store.local_path(key)
        if path is None:
            path = workdir / "in" / str(n)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                await rt.store.download(key, path)
            except ObjectNotFoundError as e:
                raise InputError(f"input {name} is missing from the store") from e
        files.append((str(path), media_type, file_stem(name), name))
    return files


async def resources(rt: Runtime, owner: str, pipeline: list[Step], workdir: Path) -> dict[str, Any]:
    """Fetch what the steps need beyond the inputs: registered models, earlier results.

    Raises:
        InputError: a model is not registered, or an earlier result is not the owner's.
    """
    steps = [s for step in pipeline for s in _flatten(step)]
    found: dict[str, Any] = {}
    wanted = {s.name for s in steps if s.op == "model" and s.name}
    if wanted:
        from pixfleet.registry import models

        specs = await models.get_models(rt.jobs.pool, wanted)
        for name in wanted:
            spec = specs.get(name)
            if spec is None:
                raise InputError(f"model {name!r} is not registered")
            path = await models.fetch_model(rt.store, spec, rt.scratch / "models")
            found[f"model:{name}"] = models.LocalModel.of(spec, path)
    refs = [ref for s in steps if s.op == "archive" for ref in s.results]
    if refs:
        found["results"] = await _earlier_results(rt, owner, refs, workdir / "results")
    return found


async def _earlier_results(
    rt: Runtime, owner: str, refs: list[ResultRef], into: Path
) -> list[InputFile]:
    found = await rt.jobs.finished_results(owner, [r.job for r in refs])
    files = []
    for ref in refs:
        results = found.get(ref.job)
        if results is None:
            raise InputError(f"job {ref.job} is not one of your completed jobs")
        by_name = {r.name: r for r in results}
        for name in ref.names or list(by_name):
            item = by_name.get(name)
            if item is None:
                raise InputError(f"job {ref.job} has no result named {name!r}")
            path = into / str(ref.job) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                await rt.store.download(item.key or names.result_object(ref.job, name), path)
            except ObjectNotFoundError as e:
                raise InputError(f"result {name!r} of job {ref.job} has expired") from e
            files.append(InputFile(path=path, media_type=item.media_type, name=f"{ref.job}/{name}"))
    return files


def file_stem(name: str) -> str:
    """A name safe as a file name stem (dataset ids may hold ``/``, ``:`` or ``?``)."""
    stem = _UNSAFE.sub("_", name).strip("._")
    return stem[:100] or "input"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _flatten(step: Step) -> list[Step]:
    if step.branches is None:
        return [step]
    return [s for branch in step.branches for s in branch.pipeline]
