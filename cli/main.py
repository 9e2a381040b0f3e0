"""The operator command ``pixfleet`` (``python -m cli``).

Subcommands import the edge or the worker only when they run, so ``pixfleet worker`` never
loads litestar and ``pixfleet edge`` never loads the numeric stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cli import datasets, models
from cli.common import env, pg, run
from contracts.settings import RabbitSettings, load_settings


def cmd_migrate(args: argparse.Namespace) -> int:
    from pixfleet.db import create_database, migrate

    async def go() -> list[str]:
        if await create_database(pg()):
            print("created database", file=sys.stderr)
        return await migrate(pg())

    applied = run(go())
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'up to date'}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import asyncpg

    from pixfleet.registry.keys import create_key

    async def go() -> str:
        conn = await asyncpg.connect(pg().dsn.reveal())
        try:
            return await create_key(conn, args.owner, args.label)
        finally:
            await conn.close()

    print(run(go()))
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    from edge.main import serve
    from edge.settings import EdgeSettings
    from pixfleet.logs import setup_logging

    setup_logging(os.environ.get("PIXFLEET_LOG_LEVEL", "INFO"))
    settings = load_settings(EdgeSettings, env())
    if args.port is not None:
        settings.port = args.port
    serve(settings)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pixfleet.logs import setup_logging
    from worker.runtime.main import run_worker
    from worker.settings import WorkerSettings

    variables = env()
    if args.pool:
        variables["PIXFLEET_POOL"] = args.pool
    if args.slots:
        variables["PIXFLEET_SLOTS"] = str(args.slots)
    setup_logging(os.environ.get("PIXFLEET_LOG_LEVEL", "INFO"))
    run(run_worker(load_settings(WorkerSettings, variables)))
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    from pixfleet.broker import definitions

    rabbit = load_settings(RabbitSettings, env(), "PIXFLEET_RABBIT_")
    print(json.dumps(definitions(rabbit), indent=2))
    return 0


def cmd_dead(args: argparse.Namespace) -> int:
    from cli.deadletters import list_dead, replay_dead

    rabbit = load_settings(RabbitSettings, env(), "PIXFLEET_RABBIT_")
    if args.action == "list":
        for row in run(list_dead(rabbit)):
            print(json.dumps(row))
    else:
        n = run(replay_dead(rabbit, pg(), args.job))
        print(f"replayed {n} dead letter(s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cli.supervise import run_stack

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
    models.add_parser(sub)
    datasets.add_parser(sub)
    stack = sub.add_parser("run", help="migrate, start the edge and both pools, run a demo job")
    stack.add_argument("--port", type=int, default=8000)
    stack.add_argument("--no-demo", action="store_true")
    args = parser.parse_args(argv)
    handler = {
        "migrate": cmd_migrate,
        "keys": cmd_keys,
        "edge": cmd_edge,
        "worker": cmd_worker,
        "topology": cmd_topology,
        "dead": cmd_dead,
        "models": models.command,
        "datasets": datasets.command,
        "run": cmd_run,
    }[args.command]
    return handler(args)
