"""``pixfleet datasets``: register FITS files as datasets (the SODA ``ID``), list and remove them.

A file is read by the ``catalogue`` operation's ``describe`` (astropy), imported only when a
file is added, so that the other subcommands never load the numeric stack; the registry
(``pixfleet.registry.datasets``) stores what it finds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from cli.common import pg, run, store_settings

if TYPE_CHECKING:
    import asyncpg

    from contracts.datasets import DatasetInfo, DatasetRecord
    from pixfleet.store import ObjectStore


def describe_fits(path: Path, dataset_id: str) -> DatasetInfo:
    """What the FITS file at ``path`` holds, as dataset ``dataset_id`` (blocking: astropy).

    Raises:
        InvalidDatasetError: not a readable FITS file, a broken header, or no image HDU.
    """
    from pixfleet.registry.datasets import InvalidDatasetError
    from worker.errors import UsageError
    from worker.ops.catalogue import describe

    try:
        return describe(path, dataset_id)
    except UsageError as e:
        raise InvalidDatasetError(f"{path}: {e.message}") from e


async def add_dataset(
    pool: asyncpg.Pool,
    store: ObjectStore,
    path: Path,
    dataset_id: str,
    owner: str | None = None,
) -> DatasetRecord:
    """Register the FITS file at ``path`` as dataset ``dataset_id`` (public unless ``owner``),
    as ``pixfleet datasets add`` does: ``pixfleet.registry.datasets.add_dataset`` reading the
    file with ``describe_fits``.

    Raises:
        As ``pixfleet.registry.datasets.add_dataset``.
    """
    from pixfleet.registry.datasets import add_dataset as register

    return await register(pool, store, path, dataset_id, owner, describe=describe_fits)


def command(args: argparse.Namespace) -> int:
    """``pixfleet datasets add|list|remove``."""
    from pixfleet.db import create_pool
    from pixfleet.registry import datasets as registry
    from pixfleet.store import open_store

    if args.action == "add":
        if args.id is not None and len(args.paths) != 1:
            print("pixfleet: --id names one file; give one PATH", file=sys.stderr)
            return 2
        missing = [p for p in args.paths if not p.is_file()]
        if missing:
            print(f"pixfleet: no such file: {missing[0]}", file=sys.stderr)
            return 1

    async def go() -> Any:
        pool = await create_pool(pg(), attempts=3)
        try:
            if args.action == "list":
                return await registry.list_datasets(pool, uploads=args.uploads)
            store = await open_store(store_settings())
            try:
                if args.action == "remove":
                    return await registry.remove_dataset(pool, store, args.id)
                added = []
                for path in args.paths:
                    ident = args.id if args.id is not None else path.stem
                    added.append(await add_dataset(pool, store, path, ident, args.owner))
                    print(_added(added[-1]))
                return added
            finally:
                await store.close()
        finally:
            await pool.close()

    try:
        result = run(go())
    except registry.DatasetError as e:
        print(f"pixfleet: {e}", file=sys.stderr)
        return 1
    if args.action == "remove":
        print(f"removed dataset {result.id}")
    elif args.action == "list" and args.json:
        print(msgspec.json.encode(result).decode())
    elif args.action == "list":
        _print_datasets(result)
    return 0


def _added(r: DatasetRecord) -> str:
    where = f"centre {r.centre_ra:.6f} {r.centre_dec:+.6f}, radius {r.radius:.4f} deg"
    shape = "x".join(str(n) for n in r.shape)
    visible = "public" if r.owner is None else f"owner {r.owner}"
    return f"added dataset {r.id}: {shape}, {where}, {r.size} bytes, {visible}"


def _print_datasets(records: list[DatasetRecord]) -> None:
    header = ("ID", "SHAPE", "RA", "DEC", "RADIUS", "BANDS", "OWNER", "SIZE", "SHA256")
    rows = [header] + [
        (
            r.id,
            "x".join(str(n) for n in r.shape),
            "" if r.centre_ra is None else f"{r.centre_ra:.5f}",
            "" if r.centre_dec is None else f"{r.centre_dec:+.5f}",
            "" if r.radius is None else f"{r.radius:.4f}",
            ",".join(b.name or b.keyword for b in r.bands) or "-",
            r.owner or "(public)",
            str(r.size),
            r.sha256[:12],
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def add_parser(sub: Any) -> None:
    """Add ``datasets`` and its subcommands to the parser's subparsers ``sub``."""
    datasets = sub.add_parser("datasets", help="register, list and remove FITS datasets")
    action = datasets.add_subparsers(dest="action", required=True)
    add = action.add_parser(
        "add",
        help="register FITS files with a celestial WCS as datasets (the SODA ID), replacing"
        " any registered dataset of the same id",
    )
    add.add_argument("paths", metavar="PATH", nargs="+", type=Path)
    add.add_argument("--id", help="the dataset id (one PATH only; default: the file's stem)")
    add.add_argument("--owner", help="visible to this owner only (default: public)")
    listing = action.add_parser("list", help="list the registered datasets")
    listing.add_argument("--uploads", action="store_true", help="also users' FITS uploads")
    listing.add_argument("--json", action="store_true", help="a JSON array")
    remove = action.add_parser("remove", help="remove a dataset (and its file, if unshared)")
    remove.add_argument("id", metavar="ID")
