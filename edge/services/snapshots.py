"""Render job rows as API snapshots."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from contracts.jobs import ErrorDocument, JobSnapshot, Phase, Pool, PriorityClass, ResultItem

_results_decoder = msgspec.json.Decoder(list[ResultItem])
_error_decoder = msgspec.json.Decoder(ErrorDocument)


def job_href(job_id: object) -> str:
    return f"/v1/jobs/{job_id}"


def snapshot(row: Any) -> JobSnapshot:
    """Build the API view of a job row (results get their download ``href``)."""
    job_id = row["id"]
    href = job_href(job_id)
    results = []
    if row["results"]:
        results = [
            msgspec.structs.replace(r, href=f"{href}/results/{quote(r.name)}")
            for r in _results_decoder.decode(row["results"])
        ]
    return JobSnapshot(
        id=job_id,
        phase=Phase(row["phase"]),
        href=href,
        priority=PriorityClass(row["priority_class"]),
        pool=Pool(row["pool"]),
        run_id=row["run_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        destruction_at=row["destruction_at"],
        execution_duration=row["execution_duration"],
        attempts=row["attempts"],
        progress=min(1.0, max(0.0, row["progress"])),
        progress_message=row["progress_message"],
        results=results,
        error=_error_decoder.decode(row["error"]) if row["error"] else None,
    )
