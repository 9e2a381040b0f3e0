"""``pixfleet models``: register ONNX models for the ``model`` operation, list and remove them
(``pixfleet.registry.models``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from cli.common import pg, run, store_settings

if TYPE_CHECKING:
    from pixfleet.registry.models import ModelSpec


_MODEL_OPTIONS = (
    "channels", "input_range", "mean", "output_range", "scale", "tile", "overlap", "description"
)  # fmt: skip


def command(args: argparse.Namespace) -> int:
    """``pixfleet models add|list|remove``."""
    from pixfleet.db import create_pool
    from pixfleet.registry import models
    from pixfleet.store import open_store

    async def go() -> Any:
        pool = await create_pool(pg(), attempts=3)
        try:
            if args.action == "list":
                return await models.list_models(pool)
            store = await open_store(store_settings())
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
        result = run(go())
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


def add_parser(sub: Any) -> None:
    """Add ``models`` and its subcommands to the parser's subparsers ``sub``."""
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
