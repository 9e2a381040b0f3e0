"""The operator command ``pixfleet``.

Subcommands import the edge or the worker only when they run, so ``pixfleet worker`` never
loads litestar and ``pixfleet edge`` never loads the numeric stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from contracts.settings import PostgresSettings, RabbitSettings, StoreSettings, load_settings

if TYPE_CHECKING:
    from contracts.datasets import DatasetRecord
    from pixfleet.models import ModelSpec


def _env() -> dict[str, str]:
    return dict(os.environ)


def _pg() -> PostgresSettings:
    return load_settings(PostgresSettings, _env(), "PIXFLEET_POSTGRES_")


def _store_settings() -> StoreSettings:
    return load_settings(StoreSettings, _env(), "PIXFLEET_STORE_")


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def cmd_migrate(args: argparse.Namespace) -> int:
    from pixfleet.db import create_database, migrate

    async def go() -> list[str]:
        if await create_database(_pg()):
            print("created database", file=sys.stderr)
        return await migrate(_pg())

    applied = _run(go())
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'up to date'}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import asyncpg

    from pixfleet.keys import create_key

    async def go() -> str:
        conn = await asyncpg.connect(_pg().dsn.reveal())
        try:
            return await create_key(conn, args.owner, args.label)
        finally:
            await conn.close()

    print(_run(go()))
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    from edge.main import serve
    from edge.settings import EdgeSettings
    from pixfleet.logs import setup_logging

    setup_logging(os.environ.get("PIXFLEET_LOG_LEVEL", "INFO"))
    settings = load_settings(EdgeSettings, _env())
    if args.port is not None:
        settings.port = args.port
    serve(settings)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pixfleet.logs import setup_logging
    from worker.runtime.main import run_worker
    from worker.settings import WorkerSettings

    env = _env()
    if args.pool:
        env["PIXFLEET_POOL"] = args.pool
    if args.slots:
        env["PIXFLEET_SLOTS"] = str(args.slots)
    setup_logging(os.environ.get("PIXFLEET_LOG_LEVEL", "INFO"))
    _run(run_worker(load_settings(WorkerSettings, env)))
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    from pixfleet.broker import definitions

    rabbit = load_settings(RabbitSettings, _env(), "PIXFLEET_RABBIT_")
    print(json.dumps(definitions(rabbit), indent=2))
    return 0


def cmd_dead(args: argparse.Namespace) -> int:
    from pixfleet.deadletters import list_dead, replay_dead

    rabbit = load_settings(RabbitSettings, _env(), "PIXFLEET_RABBIT_")
    if args.action == "list":
        for row in _run(list_dead(rabbit)):
            print(json.dumps(row))
    else:
        n = _run(replay_dead(rabbit, _pg(), args.job))
        print(f"replayed {n} dead letter(s)")
    return 0


_MODEL_OPTIONS = (
    "channels", "input_range", "mean", "output_range", "scale", "tile", "overlap", "description"
)  # fmt: skip


def cmd_models(args: argparse.Namespace) -> int:
    from pixfleet import models
    from pixfleet.db import create_pool
    from pixfleet.store import open_store

    async def go() -> Any:
        pool = await create_pool(_pg(), attempts=3)
        try:
            if args.action == "list":
                return await models.list_models(pool)
            store = await open_store(_store_settings())
            try:
                if args.action == "remove":
                    return await models.remove_model(pool, store, args.name)
                given = {k: getattr(args, k) for k in _MODEL_OPTIONS}
                params = {k: v for k, v in given.items() if v is not None}
                return await models.add_model(pool, store, args.name, args.file, **params)
            finally:
                await store.close()
        finally:
            await pool.close()

    if args.action == "add" and not args.file.is_file():
        print(f"pixfleet: no such file: {args.file}", file=sys.stderr)
        return 1
    try:
        result = _run(go())
    except (models.InvalidModelError, models.UnknownModelError) as e:
        print(f"pixfleet: {e}", file=sys.stderr)
        return 1
    if args.action == "add":
        print(f"added model {result.name}: {result.size} bytes, sha256 {result.sha256}")
    elif args.action == "remove":
        print(f"removed model {result.name}")
    elif args.json:
        print(msgspec.json.encode(result).decode())
    else:
        _print_models(result)
    return 0


def _print_models(specs: list[ModelSpec]) -> None:
    header = ("NAME", "SCALE", "TILE", "OVERLAP", "CHANNELS", "RANGE", "SIZE", "SHA256", "ADDED")
    rows = [header] + [
        (
            s.name,
            f"x{s.scale}",
            str(s.tile or "whole"),
            str(s.overlap),
            s.channels,
            f"{s.input_range}->{s.output_range}",
            str(s.size),
            s.sha256[:12],
            s.created_at.strftime("%Y-%m-%d %H:%M") if s.created_at else "",
        )
        for s in specs
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row, spec in zip(rows, [None, *specs], strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        if spec is not None and spec.description:
            line += f"  {spec.description}"
        print(line.rstrip() if spec is None else line)


def _means(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {value!r}") from None


def cmd_datasets(args: argparse.Namespace) -> int:
    from pixfleet import datasets
    from pixfleet.db import create_pool
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
        pool = await create_pool(_pg(), attempts=3)
        try:
            if args.action == "list":
                return await datasets.list_datasets(pool, uploads=args.uploads)
            store = await open_store(_store_settings())
            try:
                if args.action == "remove":
                    return await datasets.remove_dataset(pool, store, args.id)
                added = []
                for path in args.paths:
                    ident = args.id if args.id is not None else path.stem
                    added.append(await datasets.add_dataset(pool, store, path, ident, args.owner))
                    print(_added(added[-1]))
                return added
            finally:
                await store.close()
        finally:
            await pool.close()

    try:
        result = _run(go())
    except datasets.DatasetError as e:
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


def cmd_run(args: argparse.Namespace) -> int:
    from pixfleet.supervise import run_stack

    return run_stack(port=args.port, demo=not args.no_demo)


def _add_models_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="register, list and remove ONNX models")
    action = models.add_subparsers(dest="action", required=True)
    add = action.add_parser(
        "add", help="register an ONNX model file under NAME (replacing any model of that name)"
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("file", metavar="FILE", type=Path)
    add.add_argument("--scale", type=int, help="output side / input side (default 1)")
    add.add_argument("--tile", type=int, help="tile side in pixels, 0 = whole image (256)")
    add.add_argument("--overlap", type=int, help="context pixels around each tile (16)")
    add.add_argument("--channels", choices=["rgb", "bgr", "gray"], help="(default rgb)")
    add.add_argument("--input-range", type=int, choices=[1, 255], help="0..1 or 0..255 (1)")
    add.add_argument("--output-range", type=int, choices=[1, 255], help="0..1 or 0..255 (1)")
    add.add_argument(
        "--mean", type=_means, help="per channel (model order), e.g. 123.7,116.3,103.5"
    )
    add.add_argument("--description")
    listing = action.add_parser("list", help="list the registered models")
    listing.add_argument("--json", action="store_true", help="a JSON array")
    remove = action.add_parser("remove", help="unregister a model and delete its file")
    remove.add_argument("name", metavar="NAME")


def _add_datasets_parser(sub: Any) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply migrations")
    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--owner", required=True)
    create.add_argument("--label")
    edge = sub.add_parser("edge", help="serve the HTTP API")
    edge.add_argument("--port", type=int)
    worker = sub.add_parser("worker", help="run one worker process of a pool")
    worker.add_argument("--pool", choices=["standard", "heavy"])
    worker.add_argument("--slots", type=int)
    sub.add_parser("topology", help="print the RabbitMQ definitions document")
    dead = sub.add_parser("dead", help="list or replay dead letters")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("--job", help="replay only this job id")
    _add_models_parser(sub)
    _add_datasets_parser(sub)
    run = sub.add_parser("run", help="migrate, start the edge and both pools, run a demo job")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--no-demo", action="store_true")
    args = parser.parse_args(argv)
    handler = {
        "migrate": cmd_migrate,
        "keys": cmd_keys,
        "edge": cmd_edge,
        "worker": cmd_worker,
        "topology": cmd_topology,
        "dead": cmd_dead,
        "models": cmd_models,
        "datasets": cmd_datasets,
        "run": cmd_run,
    }[args.command]
    return handler(args)
