"""The base of every operation and the aliases operation modules share.

``contracts.ops`` (the image operations and the catalogue) and ``contracts.astro`` (the
astronomy operations) both build on it. Imports msgspec and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import msgspec

from contracts.jobs import Pool

Kind = Literal["image", "fits", "document", "any"]
"""``image``: an encoded raster image (JPEG, PNG, ...) or decoded pixels; ``fits``: a FITS
file; ``document``: any other file (JSON, zip); ``any``: any of them."""
Scope = Literal["item", "job"]


@dataclass(frozen=True)
class FanOut:
    """How a ``job``-scope operation splits into tasks that run in parallel (``module:function``
    paths, run in worker children):

    - ``plan(op, files, ctx) -> worker.ops.api.Plan``: decide the tasks (each names the inputs
      it reads and carries a payload) and a shared state;
    - ``task(op, shared, payload, files, ctx) -> list[OutputFile]``: one task, on any worker of
      the operation's pool; its files are kept in the store until the job ends;
    - ``combine(op, shared, parts, ctx) -> list[OutputFile]``: once, when every task is done,
      with each task's files in task order.
    """

    plan: str
    task: str
    combine: str


class Op(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every operation."""

    pool: ClassVar[Pool] = Pool.standard
    impl: ClassVar[str] = ""
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "image"
    produces: ClassVar[Kind] = "image"
    scope: ClassVar[Scope] = "item"
    fanout: ClassVar[FanOut | None] = None
    """Set for an operation that fans out into parallel tasks (it must be a job's only step)."""
    after: ClassVar[str | None] = None
    """``module:function`` of an async hook the worker awaits, with the job's database pool,
    owner, id and output files, before it records the job complete (e.g. ``catalogue``
    recording datasets). Its exceptions fail the job like the operation's own."""

    def outputs_per_input(self) -> int:
        """Files this step makes of each item it gets (0: one file for the whole job)."""
        return 1

    def check_inputs(self, n: int) -> str | None:
        """What is wrong with giving this (first) step ``n`` inputs, or None."""
        return None


Side = Annotated[int, msgspec.Meta(ge=1, le=65_535, description="Pixels")]
Colour = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$",
        description="Background colour, #rrggbb or #rrggbbaa",
    ),
]
