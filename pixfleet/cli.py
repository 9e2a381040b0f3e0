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
from typing import Any

from contracts.settings import PostgresSettings, RabbitSettings, load_settings


def _env() -> dict[str, str]:
    return dict(os.environ)


def _pg() -> PostgresSettings:
    return load_settings(PostgresSettings, _env(), "PIXFLEET_POSTGRES_")


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

    settings = load_settings(EdgeSettings, _env())
    if args.port is not None:
        os.environ["PIXFLEET_PORT"] = str(args.port)
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


def cmd_run(args: argparse.Namespace) -> int:
    from pixfleet.supervise import run_stack

    return run_stack(port=args.port, demo=not args.no_demo)


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
        "run": cmd_run,
    }[args.command]
    return handler(args)
