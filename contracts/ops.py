"""Operations: a msgspec tagged union (``{"op": "resize", ...}``), each member carrying its pool.

An operation Struct declares class variables: ``pool`` (where it runs), ``impl``
(``"module:function"``, the synchronous function a worker child calls), ``consumes`` and
``produces`` (the kind of item it reads and hands on, which the edge checks step by step) and
``scope`` (``"item"``: called once per input with one item; ``"job"``: called once with every
item). The path is a string, so declaring an operation never imports the code that runs it: the
edge validates requests with these Structs without importing the numeric stack.

A pipeline is applied to each input in order; it may end in a ``branch`` (named sub-pipelines
that each continue from the same item) and then an ``archive`` (a zip of everything before it).

Operators and tests add operations through plugin modules (``op_plugins`` settings): a module
exposing ``OPS``, a sequence of such Structs. Imports msgspec and the standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union
from uuid import UUID

import msgspec

from contracts.astro import ASTRO_OPS
from contracts.jobs import Pool
from contracts.opbase import Colour, Kind, Op, Scope, Side

OpT = TypeVar("OpT")

ImageFormat = Literal["jpeg", "png", "webp", "tiff", "avif"]
ThumbnailFormat = Literal["jpeg", "png", "webp", "avif"]
Quality = Annotated[int, msgspec.Meta(ge=1, le=100, description="Encoder quality, 1 to 100")]
Gravity = Literal[
    "centre", "north", "south", "east", "west", "northeast", "northwest", "southeast", "southwest"
]
BranchName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
]
Interpolation = Literal["auto", "nearest", "linear", "cubic", "area", "lanczos"]


class Thumbnail(Op, tag="thumbnail", frozen=True):  # inherited anyway; restated for mypy
    """Scale an image so that its longer side is ``size`` pixels (never upscales) and encode it.

    EXIF orientation is applied first; the aspect ratio is kept. JPEGs are decoded at 1/2, 1/4
    or 1/8 scale when the result allows. Metadata other than the ICC profile is dropped.
    """

    impl: ClassVar[str] = "worker.ops.thumbnail:thumbnail"

    size: Annotated[int, msgspec.Meta(ge=1, le=8192, description="Longer side, pixels")]
    format: ThumbnailFormat = "webp"
    quality: Quality = 85


class Convert(Op, tag="convert", frozen=True):
    """Encode the image as ``format``.

    ``quality`` applies to JPEG, WebP (lossy) and AVIF; ``lossless`` to WebP and AVIF;
    ``compression`` (zlib level) to PNG and TIFF (deflate). 16-bit samples are kept by PNG and
    TIFF (and AVIF at 12 bits); alpha by PNG, WebP, TIFF and AVIF (JPEG composites onto
    ``background``). ``metadata="keep"`` keeps EXIF and XMP, but GPS tags only with
    ``keep_gps``; ``"strip"`` drops both. The ICC profile is kept either way (it defines the
    colours) unless ``keep_icc`` is false. TIFF output carries no metadata (OpenCV's TIFF
    writer takes none).
    """

    impl: ClassVar[str] = "worker.ops.convert:convert"

    format: ImageFormat
    quality: Quality | None = None
    """Default: JPEG 85, WebP 80, AVIF 60."""
    lossless: bool = False
    compression: Annotated[int, msgspec.Meta(ge=0, le=9)] = 6
    progressive: bool = False
    metadata: Literal["keep", "strip"] = "keep"
    keep_gps: bool = False
    keep_icc: bool = True
    background: Colour = "#ffffff"
    auto_orient: bool = True

    def __post_init__(self) -> None:
        if self.progressive and self.format != "jpeg":
            raise ValueError("progressive applies to JPEG only")
        if self.lossless and self.format not in ("webp", "avif"):
            raise ValueError("lossless applies to WebP and AVIF (PNG and TIFF are lossless)")
        if self.quality is not None and self.format in ("png", "tiff"):
            raise ValueError("quality applies to JPEG, WebP and AVIF; use compression")
        if self.keep_gps and self.metadata == "strip":
            raise ValueError('keep_gps needs metadata="keep"')


class Resize(Op, tag="resize", frozen=True):
    """Scale to ``width`` and/or ``height``.

    ``fit``: ``inside`` keeps the aspect ratio within the box; ``contain`` does the same and
    pads to exactly the box with ``background``; ``cover`` fills the box and crops the rest
    around ``gravity``; ``fill`` stretches to the box. With one side given the other follows
    the aspect ratio. Images are never enlarged unless ``upscale`` is true. ``auto``
    interpolation is area averaging down and Lanczos up.
    """

    impl: ClassVar[str] = "worker.ops.geometry:resize"

    width: Side | None = None
    height: Side | None = None
    fit: Literal["contain", "cover", "fill", "inside"] = "inside"
    upscale: bool = False
    gravity: Gravity = "centre"
    background: Colour = "#00000000"
    interpolation: Interpolation = "auto"
    auto_orient: bool = True

    def __post_init__(self) -> None:
        if self.width is None and self.height is None:
            raise ValueError("give width, height or both")


class Crop(Op, tag="crop", frozen=True):
    """Cut a ``width`` x ``height`` box at (``x``, ``y``), or placed by ``gravity``.

    A box reaching past the image is clipped to it; a box outside the image is an error.
    """

    impl: ClassVar[str] = "worker.ops.geometry:crop"

    width: Side
    height: Side
    x: Annotated[int, msgspec.Meta(ge=0, le=65_535)] | None = None
    y: Annotated[int, msgspec.Meta(ge=0, le=65_535)] | None = None
    gravity: Gravity = "centre"
    auto_orient: bool = True

    def __post_init__(self) -> None:
        if (self.x is None) != (self.y is None):
            raise ValueError("give both x and y, or neither (gravity places the box)")


class Rotate(Op, tag="rotate", frozen=True):
    """Rotate clockwise by ``angle`` degrees.

    Multiples of 90 are exact pixel moves. Other angles resample (cubic) onto a canvas that
    holds the whole rotated image (``expand``) or keeps the size, filled with ``background``.
    """

    impl: ClassVar[str] = "worker.ops.geometry:rotate"

    angle: Annotated[float, msgspec.Meta(ge=-360, le=360)]
    expand: bool = True
    background: Colour = "#00000000"
    auto_orient: bool = True


class Flip(Op, tag="flip", frozen=True):
    """Mirror the image: ``horizontal`` (left-right), ``vertical`` (top-bottom) or ``both``."""

    impl: ClassVar[str] = "worker.ops.geometry:flip"

    axis: Literal["horizontal", "vertical", "both"] = "horizontal"
    auto_orient: bool = True


class Metadata(Op, tag="metadata", frozen=True):
    """Describe the image as JSON without decoding its pixels.

    Format, dimensions, channels, bit depth, colour space and ICC profile, EXIF (camera, lens,
    exposure, timestamps, GPS in decimal degrees, orientation), XMP presence; for FITS the
    header and a WCS summary.
    """

    impl: ClassVar[str] = "worker.ops.metadata:metadata"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = ("image", "fits")
    produces: ClassVar[Kind] = "document"

    exif: bool = True
    """Include the EXIF tags (GPS too)."""
    fits_header: bool = True
    """Include the FITS header cards."""


FilterKind = Literal["blur", "median", "unsharp", "bilateral", "grayscale", "clahe"]
_FILTER_PARAMS: dict[str, frozenset[str]] = {
    "blur": frozenset({"sigma"}),
    "median": frozenset({"size"}),
    "unsharp": frozenset({"sigma", "amount", "threshold"}),
    "bilateral": frozenset({"size", "sigma", "sigma_color"}),
    "grayscale": frozenset(),
    "clahe": frozenset({"clip_limit", "tiles"}),
}


class Filter(Op, tag="filter", frozen=True):
    """Apply one filter.

    ``blur``: gaussian, ``sigma`` (default 2). ``median``: ``size`` x ``size`` window (odd,
    default 3). ``unsharp``: unsharp mask, ``sigma`` (1), ``amount`` (1), ``threshold`` (0,
    in 8-bit levels). ``bilateral``: edge-preserving smoothing, ``size`` (9), ``sigma`` (space,
    5) and ``sigma_color`` (50, 8-bit levels). ``grayscale``: luminance (alpha kept).
    ``clahe``: contrast-limited adaptive histogram equalisation of the lightness, ``clip_limit``
    (2) over ``tiles`` x ``tiles`` tiles (8). Parameters of another kind are refused.
    """

    impl: ClassVar[str] = "worker.ops.filters:apply_filter"

    kind: FilterKind
    sigma: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    size: Annotated[int, msgspec.Meta(ge=1, le=31)] | None = None
    amount: Annotated[float, msgspec.Meta(ge=0, le=10)] | None = None
    threshold: Annotated[float, msgspec.Meta(ge=0, le=255)] | None = None
    sigma_color: Annotated[float, msgspec.Meta(gt=0, le=255)] | None = None
    clip_limit: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    tiles: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None

    def __post_init__(self) -> None:
        given = {
            name
            for name in (
                "sigma",
                "size",
                "amount",
                "threshold",
                "sigma_color",
                "clip_limit",
                "tiles",
            )
            if getattr(self, name) is not None
        }
        extra = given - _FILTER_PARAMS[self.kind]
        if extra:
            raise ValueError(f"{self.kind} takes no {', '.join(sorted(extra))}")
        if self.kind == "median" and self.size is not None and self.size % 2 == 0:
            raise ValueError("median size must be odd")


class Denoise(Op, tag="denoise", frozen=True):
    """Non-local means denoising (OpenCV), colour or grayscale.

    ``strength`` filters the luminance (higher removes more noise and more detail),
    ``colour_strength`` the colour components; ``template`` and ``search`` are the patch and
    search window sides (odd). Runs on the heavy pool.
    """

    pool: ClassVar[Pool] = Pool.heavy
    impl: ClassVar[str] = "worker.ops.filters:denoise"

    strength: Annotated[float, msgspec.Meta(ge=1, le=30)] = 5.0
    colour_strength: Annotated[float, msgspec.Meta(ge=1, le=30)] = 5.0
    template: Annotated[int, msgspec.Meta(ge=3, le=11)] = 7
    search: Annotated[int, msgspec.Meta(ge=5, le=35)] = 21

    def __post_init__(self) -> None:
        if self.template % 2 == 0 or self.search % 2 == 0:
            raise ValueError("template and search must be odd")
        if self.search < self.template:
            raise ValueError("search must be at least template")


ModelName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
]


class Model(Op, tag="model", frozen=True):
    """Run a registered image-to-image ONNX model (``pixfleet models add``) over the image.

    Large images are processed in overlapping tiles of the model's registered size, so memory
    stays bounded. Runs on the heavy pool.
    """

    pool: ClassVar[Pool] = Pool.heavy
    impl: ClassVar[str] = "worker.ops.model:run_model"

    name: ModelName


class ResultRef(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Results of one of the owner's finished jobs; all of them unless ``names`` is given."""

    job: UUID
    names: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1000)] | None = None


class Archive(Op, tag="archive", frozen=True):
    """Zip everything the steps before it produced, and the chosen ``results`` of the owner's
    finished jobs, into ``<name>.zip``.

    The archive is written to disk entry by entry (already compressed images are stored,
    everything else deflated), never held in memory. The other outputs are kept as results
    too when ``keep`` is true. Only allowed as the last step; a job whose pipeline is only an
    ``archive`` with ``results`` needs no inputs.
    """

    impl: ClassVar[str] = "worker.ops.archive:archive"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "any"
    produces: ClassVar[Kind] = "document"
    scope: ClassVar[Scope] = "job"

    name: BranchName = "archive"
    results: Annotated[list[ResultRef], msgspec.Meta(max_length=100)] = []
    keep: bool = False


class NamedPipeline(
    msgspec.Struct, Generic[OpT], forbid_unknown_fields=True, kw_only=True, frozen=True
):
    """One named branch: its steps continue from the item the branch starts from."""

    name: BranchName
    pipeline: Annotated[list[OpT], msgspec.Meta(min_length=1)]


class Branch(Op, Generic[OpT], tag="branch", frozen=True):
    """End the per-input pipeline in named branches, each continuing from the same item.

    Each branch gives one output per input, named ``<input>.<branch>.<ext>``, in the order
    given. A branch holds no ``branch`` or ``archive``; an ``archive`` may follow the
    ``branch``.
    """

    impl: ClassVar[str] = "-"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "any"
    produces: ClassVar[Kind] = "any"

    branches: Annotated[list[NamedPipeline[OpT]], msgspec.Meta(min_length=1, max_length=16)]

    def __post_init__(self) -> None:
        names = [b.name for b in self.branches]
        if len(set(names)) != len(names):
            raise ValueError("branch names must differ")


BUILTIN_OPS: tuple[type[Op], ...] = (
    Thumbnail,
    Convert,
    Resize,
    Crop,
    Rotate,
    Flip,
    Metadata,
    Filter,
    Denoise,
    Model,
    Archive,
    *ASTRO_OPS,
)

_POOL_WEIGHT = {Pool.standard: 0, Pool.heavy: 1}


class UnknownPluginError(Exception):
    """An ``op_plugins`` entry could not be imported or exposes no ``OPS``."""


class OpCatalog:
    """The operations a deployment knows: built-ins plus plugin operations.

    ``union`` is the tagged union of every operation and ``Branch`` over the others (branches
    do not nest).

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
            if tag == "branch":
                raise ValueError("the tag 'branch' is reserved")
            self.ops[tag] = op
        step: Any = Union[tuple(self.ops.values())]  # noqa: UP007 - built at run time
        self.step: Any = step
        self.union: Any = Union[(*self.ops.values(), Branch[step])]

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
        """Return the heaviest pool the pipeline's operations need (branches included)."""
        return max((type(op).pool for op in steps(pipeline)), key=_POOL_WEIGHT.__getitem__)


def tag_of(op: Op | type[Op]) -> str:
    """The ``op`` value of an operation (or its class)."""
    cls = op if isinstance(op, type) else type(op)
    return str(cls.__struct_config__.tag)


def steps(pipeline: Sequence[Op]) -> Iterable[Op]:
    """Yield every operation of a pipeline, those inside branches included."""
    for op in pipeline:
        if isinstance(op, Branch):
            for branch in op.branches:
                yield from branch.pipeline
        else:
            yield op
