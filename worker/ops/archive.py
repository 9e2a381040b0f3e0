"""The ``archive`` operation: a zip of the job's other outputs and of chosen earlier results.

Entries are copied into the zip file on disk in chunks (``ZipFile.write``), so an archive of
gigabytes never sits in memory; images that are already compressed are stored, everything
else deflated. Results of other jobs were fetched by the runtime into ``ctx.resources``
(``"results"``: a list of files) after it checked that they belong to the job's owner.
"""

from __future__ import annotations

import zipfile

from contracts.media import AVIF, GIF, JPEG, PNG, WEBP, ZIP
from contracts.ops import Archive
from worker.errors import UsageError
from worker.ops.api import InputFile, OpContext, result_name, unique_name

_STORED = frozenset({JPEG, PNG, WEBP, AVIF, GIF})


def archive(op: Archive, items: list[InputFile], ctx: OpContext) -> list[InputFile]:
    """Write ``<op.name>.zip``; return it (after the items themselves when ``op.keep``).

    Entry names are the items' file names; a repeated name gets a ``2-``, ``3-`` prefix.
    Earlier results are under ``<job id>/<result name>``.

    Raises:
        UsageError: there is nothing to archive.
    """
    extra: list[InputFile] = ctx.resources.get("results", [])
    if not items and not extra:
        raise UsageError("the archive would be empty")
    path = ctx.workdir / f"{op.name}.zip"
    seen: set[str] = set()
    entries = [(item, result_name(item.name, item.path)) for item in items] + [
        (f, f.name) for f in extra
    ]
    with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
        for i, (item, name) in enumerate(entries, 1):
            name = unique_name(name, seen.__contains__)
            seen.add(name)
            compress = zipfile.ZIP_STORED if item.media_type in _STORED else zipfile.ZIP_DEFLATED
            zf.write(item.path, name, compress_type=compress, compresslevel=6)
            ctx.progress(i / len(entries), f"{i} of {len(entries)} entries")
    zipped = InputFile(path=path, media_type=ZIP, name=op.name)
    return [*items, zipped] if op.keep else [zipped]
