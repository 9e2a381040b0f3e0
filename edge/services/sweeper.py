"""The sweeper: destroys what has passed its destruction time. Expired jobs lose their results
and intermediate files and become ``ARCHIVED``; expired uploads are deleted with their object.
Run by the relay leader only (one edge process at a time), after each relay pass.
"""

from __future__ import annotations

from contracts import names
from edge.store.jobs import JobStore
from edge.store.uploads import UploadStore
from pixfleet.store import ObjectStore

_BATCH = 100


class Sweeper:
    def __init__(self, jobs: JobStore, uploads: UploadStore, store: ObjectStore) -> None:
        self.jobs, self.uploads, self.store = jobs, uploads, store

    async def sweep_once(self) -> int:
        """One pass over at most a batch of jobs and of uploads; return how many ended."""
        expired = await self.jobs.expired(limit=_BATCH)
        for job_id in expired:
            # Every attempt's results (results/<job>/<attempt>/...) and a fan-out's leftovers.
            await self.store.delete_prefix(names.result_prefix(job_id))
            await self.store.delete_prefix(names.work_prefix(job_id))
        if expired:
            await self.jobs.archive(expired)
        uploads = await self.uploads.expired(limit=_BATCH)
        for row in uploads:
            await self.store.delete(row["object_key"])
        if uploads:
            await self.uploads.delete([r["id"] for r in uploads])
        return len(expired) + len(uploads)
