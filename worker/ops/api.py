"""The interface between the worker runtime and operations: files in, files out, a context.

An operation is ``def op(op: <Op Struct>, inputs: list[InputFile], ctx: OpContext) ->
list[OutputFile]``, called in a child process. Standard library only (plus ``contracts``
for default limits): the runtime imports this module without the numeric stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from contracts.settings import LimitsSettings


@dataclass(frozen=True)
class InputFile:
    """A file an operation reads."""

    path: Path
    media_type: str
    """What the uploader or the previous step declared; operations sniff the bytes anyway."""
    name: str
    """A short stem for output names, e.g. the upload id."""


@dataclass(frozen=True)
class OutputFile:
    """A file an operation wrote under ``ctx.workdir``."""

    path: Path
    name: str
    media_type: str


class OpContext(Protocol):
    """What the runtime gives an operation: where to write, the input limits, progress."""

    workdir: Path
    max_pixels: int
    max_side: int

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report the fraction (0 to 1) of the operation done."""
        ...


@dataclass
class LocalContext:
    """An ``OpContext`` for tests and scripts: progress reports are kept in ``events``."""

    workdir: Path
    max_pixels: int = field(default_factory=lambda: LimitsSettings().max_pixels)
    max_side: int = field(default_factory=lambda: LimitsSettings().max_side)
    events: list[tuple[float, str | None]] = field(default_factory=list)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record a progress report."""
        self.events.append((fraction, message))
