"""Operations: a msgspec tagged union (``{"op": "thumbnail", ...}``), each member carrying its pool.

An operation Struct declares two class variables: ``pool`` (where it runs) and ``impl``
(``"module:function"``, the synchronous function a worker child calls). The path is a string,
so declaring an operation never imports the code that runs it: the edge validates requests
with these Structs without importing the numeric stack.

Operators and tests add operations through plugin modules (``op_plugins`` settings): a module
exposing ``OPS``, a sequence of such Structs. Imports msgspec and the standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union

import msgspec

from contracts.jobs import Pool


class Op(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every operation."""

    pool: ClassVar[Pool] = Pool.standard
    impl: ClassVar[str] = ""


ImageFormat = Literal["jpeg", "png", "webp"]


class Thumbnail(Op, tag="thumbnail", frozen=True):  # inherited anyway; restated for mypy
    """Scale an image so that its longer side is ``size`` pixels (never upscales).

    EXIF orientation is applied first; the aspect ratio is kept.
    """

    impl: ClassVar[str] = "worker.ops.thumbnail:thumbnail"

    size: Annotated[int, msgspec.Meta(ge=1, le=8192, description="Longer side, pixels")]
    format: ImageFormat = "webp"
    quality: Annotated[int, msgspec.Meta(ge=1, le=100)] = 85


BUILTIN_OPS: tuple[type[Op], ...] = (Thumbnail,)

_POOL_WEIGHT = {Pool.standard: 0, Pool.heavy: 1}


class UnknownPluginError(Exception):
    """An ``op_plugins`` entry could not be imported or exposes no ``OPS``."""


class OpCatalog:
    """The operations a deployment knows: built-ins plus plugin operations.

    Raises:
        ValueError: two operations share a tag, or an operation has no ``impl``.
    """

    def __init__(self, ops: Iterable[type[Op]] = BUILTIN_OPS) -> None:
        self.ops: dict[str, type[Op]] = {}
        for op in ops:
            tag = op.__struct_config__.tag
            if not isinstance(tag, str) or not op.impl:
                raise ValueError(f"operation {op.__name__} needs a string tag and an impl")
            if tag in self.ops and self.ops[tag] is not op:
                raise ValueError(f"two operations are tagged {tag!r}")
            self.ops[tag] = op
        self.union: Any = Union[tuple(self.ops.values())]  # noqa: UP007 - built at run time

    @classmethod
    def with_plugins(cls, modules: Sequence[str]) -> OpCatalog:
        """Build the catalogue of the built-ins and each plugin module's ``OPS``.

        Raises:
            UnknownPluginError: a module cannot be imported or has no ``OPS``.
        """
        ops: list[type[Op]] = list(BUILTIN_OPS)
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ImportError as e:
                raise UnknownPluginError(f"cannot import op plugin {name!r}: {e}") from e
            try:
                ops.extend(module.OPS)
            except AttributeError as e:
                raise UnknownPluginError(f"op plugin {name!r} exposes no OPS") from e
        return cls(ops)

    def pool_for(self, pipeline: Sequence[Op]) -> Pool:
        """Return the heaviest pool the pipeline's operations need."""
        return max((type(op).pool for op in pipeline), key=_POOL_WEIGHT.__getitem__)
