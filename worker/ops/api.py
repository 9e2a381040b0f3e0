"""The interface between the worker runtime and operations: items in, items out, a context.

An item is an ``InputFile`` (a file on disk: an upload, an encoded image, a JSON document) or
a ``Picture`` (decoded pixels with the metadata they came with). An operation with
``scope = "item"`` is ``def op(op: <Op Struct>, item: Item, ctx: OpContext) -> Item``, called
once per input (and per branch); one with ``scope = "job"`` is ``def op(op, items:
list[Item], ctx) -> list[Item]``, called once. Image operations decode with
``worker.ops.imaging.load`` (which accepts either kind) and return a ``Picture``; the runtime
encodes a ``Picture`` left at the end of a pipeline or branch (``imaging.finish``), so
``resize`` then ``crop`` then ``convert`` decodes once and encodes once.

Standard library only (plus ``contracts`` for default limits): the runtime imports this
module without the numeric stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from contracts.settings import LimitsSettings


@dataclass(frozen=True)
class InputFile:
    """A file an operation reads."""

    path: Path
    media_type: str
    """What the uploader or the previous step declared; operations sniff the bytes anyway."""
    name: str
    """A short stem for output names, e.g. the upload id (safe as a file name)."""
    source: str = ""
    """The id the file came from (upload id, dataset id) for provenance; "" if not an input."""


OutputFile = InputFile
"""A file an operation wrote under ``ctx.workdir`` (the same shape as an input)."""


@dataclass(frozen=True)
class Picture:
    """Decoded pixels and the metadata that travels with them.

    ``pixels`` is a numpy array as OpenCV holds it: ``(h, w)`` gray, ``(h, w, 3)`` BGR or
    ``(h, w, 4)`` BGRA; ``uint8``, ``uint16`` or ``float32`` (0 to 1).
    """

    pixels: Any
    name: str
    source_type: str
    """Media type of the file the pixels came from (the default output format)."""
    orientation: int = 1
    """EXIF orientation still to apply (1: the pixels are upright)."""
    exif: bytes | None = None
    """The EXIF block as TIFF bytes (``II*``/``MM*``), without the ``Exif\\0\\0`` prefix."""
    icc: bytes | None = None
    xmp: bytes | None = None

    def with_pixels(self, pixels: Any, **changes: Any) -> Picture:
        """Return a copy holding other pixels (and any other changed field)."""
        return replace(self, pixels=pixels, **changes)


Item = InputFile | Picture


def unique_name(name: str, taken: Callable[[str], bool]) -> str:
    """``name``, or the first of ``2-name``, ``3-name``, ... that ``taken`` says is free."""
    final, n = name, 1
    while taken(final):
        n += 1
        final = f"{n}-{name}"
    return final


def result_name(name: str, path: Path) -> str:
    """The name a file is published (and archived) under: ``<name><suffix>`` unless the file
    is already called ``name``."""
    return name if path.name == name else f"{name}{path.suffix}"


def output_path(workdir: Path, filename: str) -> Path:
    """A path for a new file in ``workdir``, numbered like ``unique_name`` if one is there."""
    return workdir / unique_name(filename, lambda n: (workdir / n).exists())


class OpContext(Protocol):
    """What the runtime gives an operation: where to write, the limits, progress, resources."""

    workdir: Path
    limits: LimitsSettings
    resources: dict[str, Any]
    """Files the runtime fetched for this task, e.g. registered models (``"model:<name>"``)."""

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report the fraction (0 to 1) of the operation done."""
        ...


@dataclass
class LocalContext:
    """An ``OpContext`` for tests and scripts: progress reports are kept in ``events``."""

    workdir: Path
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    resources: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str | None]] = field(default_factory=list)
    """Progress reports as the job would see them (mapped by ``weigh``)."""
    _weight: tuple[float, float] = (0.0, 1.0)

    def weigh(self, start: float, span: float) -> None:
        """Map later reports into [start, start + span] (the pipeline runner calls this)."""
        self._weight = (start, span)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record a progress report."""
        start, span = self._weight
        self.events.append((start + span * min(1.0, max(0.0, fraction)), message))


@dataclass(frozen=True)
class TaskSpec:
    """One task of a fanned-out operation (see ``contracts.ops.FanOut``)."""

    inputs: tuple[int, ...]
    """Indexes of the job's input files the task reads."""
    payload: bytes = b""
    """What the task needs beyond its inputs (encoded by the operation, opaque to the runtime)."""
    label: str = ""
    """Names the task in progress and errors, e.g. the input's name."""


@dataclass(frozen=True)
class Plan:
    """What a fanned-out operation's ``plan`` returns: a shared state for every task and for
    ``combine``, and the tasks in order."""

    shared: bytes
    tasks: list[TaskSpec]
