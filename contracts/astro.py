"""Astronomy operations: SODA cutouts, previews, headers, colour composites and mosaics.

Positions are ICRS degrees. Stencils follow IVOA SODA 1.0 (``CIRCLE ra dec r``, ``POLYGON ra1
dec1 ...``, ``RANGE ra1 ra2 dec1 dec2``): in JSON they are tagged objects (``{"shape":
"circle", ...}``), and :func:`parse_stencil` reads the SODA text form for the SODA face.
Inputs of these operations are FITS files: uploads or catalogue datasets (``datasets`` in a
job request). Imports msgspec and the standard library only.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import msgspec

from contracts.jobs import Pool
from contracts.opbase import Colour, FanOut, Kind, Op, Scope, Side

Ra = Annotated[float, msgspec.Meta(ge=0, le=360, description="Right ascension, degrees")]
Dec = Annotated[float, msgspec.Meta(ge=-90, le=90, description="Declination, degrees")]
Radius = Annotated[float, msgspec.Meta(gt=0, le=180, description="Degrees")]
Metres = Annotated[float, msgspec.Meta(gt=0, description="Wavelength, metres")]
DatasetId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][!-~]*$",
        description="A dataset id (the SODA ID): printable ASCII, no spaces",
    ),
]


class Stencil(msgspec.Struct, tag_field="shape", forbid_unknown_fields=True, frozen=True):
    """A region of the sky (SODA ``POS``)."""

    def soda(self) -> str:
        """The SODA text form, e.g. ``CIRCLE 10.5 -3 0.01``."""
        raise NotImplementedError


def _num(v: float) -> str:
    return "-Inf" if v == -math.inf else "+Inf" if v == math.inf else repr(float(v))


class Circle(Stencil, tag="circle", frozen=True):
    """``CIRCLE ra dec radius``: the pixels whose centres lie within ``radius`` of the centre."""

    ra: Ra
    dec: Dec
    radius: Radius

    def soda(self) -> str:
        return f"CIRCLE {_num(self.ra)} {_num(self.dec)} {_num(self.radius)}"


class Polygon(Stencil, tag="polygon", frozen=True):
    """``POLYGON ra1 dec1 ra2 dec2 ...``: great-circle edges, at least three vertices, in
    either winding; the smaller of the two regions the edges bound is meant."""

    vertices: Annotated[list[tuple[Ra, Dec]], msgspec.Meta(min_length=3, max_length=100)]

    def __post_init__(self) -> None:
        following = self.vertices[1:] + self.vertices[:1]
        for (ra1, dec1), (ra2, dec2) in zip(self.vertices, following, strict=True):
            if dec1 == dec2 and (ra1 - ra2) % 360 == 0:
                raise ValueError("polygon vertices must differ from their neighbours")

    def soda(self) -> str:
        return "POLYGON " + " ".join(f"{_num(ra)} {_num(dec)}" for ra, dec in self.vertices)


Bound = Annotated[float, msgspec.Meta(description="Degrees, or -Infinity / Infinity for open")]


class Range(Stencil, tag="range", frozen=True):
    """``RANGE ra1 ra2 dec1 dec2``: a box of right ascension and declination.

    ``ra1 > ra2`` wraps through 0/360 (``RANGE 350 10 ...`` is 20 degrees wide); ±infinity
    leaves a side open (JSON: ``"-Infinity"``/``"Infinity"`` strings are not JSON numbers, so
    use ``null`` for an open bound).
    """

    ra: tuple[float | None, float | None]
    dec: tuple[float | None, float | None]

    def __post_init__(self) -> None:
        for v in self.ra:
            if v is not None and not 0 <= v <= 360:
                raise ValueError("range ra bounds must lie in [0, 360]")
        for v in self.dec:
            if v is not None and not -90 <= v <= 90:
                raise ValueError("range dec bounds must lie in [-90, 90]")
        lo, hi = self.dec
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("range dec bounds must be ordered (dec1 <= dec2)")

    def bounds(self) -> tuple[float, float, float, float]:
        """``(ra1, ra2, dec1, dec2)`` with open sides filled (RA 0..360, Dec -90..90)."""
        ra1, ra2 = self.ra
        dec1, dec2 = self.dec
        if ra1 is None or ra2 is None:
            ra1, ra2 = (0.0 if ra1 is None else ra1), (360.0 if ra2 is None else ra2)
        return (
            ra1,
            ra2,
            -90.0 if dec1 is None else dec1,
            90.0 if dec2 is None else dec2,
        )

    def soda(self) -> str:
        parts = [
            -math.inf if self.ra[0] is None else self.ra[0],
            math.inf if self.ra[1] is None else self.ra[1],
            -math.inf if self.dec[0] is None else self.dec[0],
            math.inf if self.dec[1] is None else self.dec[1],
        ]
        return "RANGE " + " ".join(_num(v) for v in parts)


AnyStencil = Circle | Polygon | Range


class StencilSyntaxError(ValueError):
    """A SODA ``POS``/``CIRCLE``/``POLYGON`` value that cannot be read."""


def parse_stencil(text: str) -> AnyStencil:
    """Read the SODA text form (``CIRCLE 12 34 0.1``, ``POLYGON ...``, ``RANGE ...``).

    Raises:
        StencilSyntaxError: unknown shape, wrong count, or a value out of range.
    """
    words = text.split()
    if not words:
        raise StencilSyntaxError("empty stencil")
    shape, args = words[0].upper(), words[1:]
    try:
        values = [float(w) for w in args]
    except ValueError as e:
        raise StencilSyntaxError(f"{shape}: not a number: {e}") from e
    if any(math.isnan(v) for v in values):
        raise StencilSyntaxError(f"{shape}: NaN is not a coordinate")
    try:
        if shape == "CIRCLE":
            if len(values) != 3:
                raise StencilSyntaxError("CIRCLE takes ra dec radius")
            return msgspec.convert(
                {"shape": "circle", "ra": values[0], "dec": values[1], "radius": values[2]},
                Circle,
            )
        if shape == "POLYGON":
            if len(values) < 6 or len(values) % 2:
                raise StencilSyntaxError("POLYGON takes at least three ra dec pairs")
            pairs = [values[i : i + 2] for i in range(0, len(values), 2)]
            return msgspec.convert({"shape": "polygon", "vertices": pairs}, Polygon)
        if shape == "RANGE":
            if len(values) != 4:
                raise StencilSyntaxError("RANGE takes ra1 ra2 dec1 dec2")
            ra = [None if math.isinf(v) else v for v in values[:2]]
            dec = [None if math.isinf(v) else v for v in values[2:]]
            return msgspec.convert({"shape": "range", "ra": ra, "dec": dec}, Range)
    except msgspec.ValidationError as e:
        raise StencilSyntaxError(f"{shape}: {e}") from e
    raise StencilSyntaxError(f"unknown shape {words[0]!r} (CIRCLE, POLYGON or RANGE)")


HduSelection = Literal["science", "all"]


class Cutout(Op, tag="cutout", frozen=True):
    """Cut each input FITS along each stencil: one FITS file per input x stencil.

    The cutout is the bounding box of the pixels whose centres lie in the stencil, clipped at
    the image edge; a stencil holding no pixel centre of the image is an error naming it.
    ``hdus="science"`` cuts the first image HDU with a celestial WCS; ``"all"`` also every
    other image HDU on the same pixel grid (error and quality planes). ``band`` keeps the
    spectral planes of a cube within it (metres, SODA ``BAND``). ``mask`` sets pixels outside
    a circle or polygon to NaN (float data) or to BLANK (integer data). The output's primary
    HDU holds the provenance (source, HDU, stencil, pixel bounds, software, date); each cut
    plane follows as an image HDU whose WCS (SIP distortion included) puts every pixel where
    it was on the sky.
    """

    impl: ClassVar[str] = "worker.ops.cutout:cutout"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "fits"
    produces: ClassVar[Kind] = "fits"
    scope: ClassVar[Scope] = "job"

    stencils: Annotated[list[AnyStencil], msgspec.Meta(min_length=1, max_length=100)]
    hdus: HduSelection = "science"
    band: tuple[Metres, Metres] | None = None
    mask: bool = False

    def __post_init__(self) -> None:
        if self.band is not None and self.band[0] > self.band[1]:
            raise ValueError("band must be ordered (low, high)")
        if self.mask and all(isinstance(s, Range) for s in self.stencils):
            raise ValueError("mask applies to circle and polygon stencils")

    def outputs_per_input(self) -> int:
        return len(self.stencils)


Stretch = Literal["linear", "sqrt", "log", "asinh", "sinh", "histeq"]
Limits = Literal["minmax", "percentile", "zscale"]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
Colormap = Literal[
    "gray",
    "viridis",
    "magma",
    "inferno",
    "plasma",
    "cividis",
    "turbo",
    "hot",
    "bone",
    "cool",
    "jet",
    "twilight",
]
NanColour = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?:#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|transparent)$",
        description="#rrggbb, #rrggbbaa or transparent",
    ),
]
HduRef = Annotated[int, msgspec.Meta(ge=0, le=999)] | Annotated[str, msgspec.Meta(max_length=68)]


class Scaling(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How data values become display levels: limits, then a stretch of [0, 1].

    ``limits``: ``minmax`` (finite data range), ``percentile`` (``low``..``high`` percent) or
    ``zscale`` (IRAF's, as astropy's ``ZScaleInterval``). ``a`` is the stretch's parameter,
    as in ``astropy.visualization`` (log 1000, asinh 0.1, sinh 1/3; unused otherwise).
    """

    stretch: Stretch = "asinh"
    limits: Limits = "zscale"
    low: Percent = 0.5
    high: Percent = 99.5
    a: Annotated[float, msgspec.Meta(gt=0, le=1e6)] | None = None

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise ValueError("low must be below high")


class Preview(Op, tag="preview", frozen=True):
    """Render a FITS image for the eye: limits and stretch, colour map, PNG/JPEG/WebP.

    The plane is the HDU ``hdu`` (default: the first image HDU with data) and, for cubes,
    ``plane`` (the index along the non-celestial axes, flattened). NaNs become transparent
    (PNG and WebP; black in JPEG) or ``nan_colour``. ``size`` bounds the longer side (area
    averaging).
    """

    impl: ClassVar[str] = "worker.ops.preview:preview"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "fits"
    produces: ClassVar[Kind] = "image"

    scaling: Scaling = Scaling()
    colormap: Colormap = "gray"
    nan_colour: NanColour = "transparent"
    size: Side | None = None
    format: Literal["png", "jpeg", "webp"] = "png"
    hdu: HduRef | None = None
    plane: Annotated[int, msgspec.Meta(ge=0)] = 0


class Header(Op, tag="header", frozen=True):
    """The FITS headers (every HDU, or ``hdu``) and the celestial WCS summaries as JSON."""

    impl: ClassVar[str] = "worker.ops.header:header"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "fits"
    produces: ClassVar[Kind] = "document"

    hdu: HduRef | None = None


Projection = Literal["TAN", "SIN", "ARC", "ZEA", "STG", "CAR"]


class Grid(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """An output celestial grid: centre, pixel scale, size, rotation (east of north, degrees)
    and projection. North is up and east left when ``rotation`` is 0."""

    ra: Ra
    dec: Dec
    width: Side
    height: Side
    scale: Annotated[float, msgspec.Meta(gt=0, le=3600, description="Arcseconds per pixel")]
    rotation: Annotated[float, msgspec.Meta(ge=-360, le=360)] = 0.0
    projection: Projection = "TAN"


class Channel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One channel of a composite: its colour (the alpha of ``#rrggbbaa`` multiplies it, like
    ``weight``) and how its values are scaled."""

    colour: Colour
    scaling: Scaling = Scaling()
    weight: Annotated[float, msgspec.Meta(gt=0, le=100)] = 1.0


class Lupton(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Lupton et al. (2004) asinh colour, as ``astropy.visualization.make_lupton_rgb``: the
    three channels (red, green, blue in order) share one stretch of their mean intensity, so
    colours are kept in saturated regions."""

    minimum: float | list[float] = 0.0
    """The black level: one for all channels, or one per channel (red, green, blue)."""
    stretch: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    Q: Annotated[float, msgspec.Meta(ge=0)] = 8.0

    def __post_init__(self) -> None:
        if isinstance(self.minimum, list) and len(self.minimum) not in (1, 3):
            raise ValueError("minimum takes one value or three (red, green, blue)")


class Composite(Op, tag="composite", frozen=True):
    """Combine N >= 2 FITS inputs (in order) into one colour image.

    Each channel is scaled (its ``scaling``), coloured (``colour``, times ``weight``) and the
    channels are summed and clipped (additive mode). With ``lupton`` instead of ``channels``
    the three inputs are red, green and blue, combined as ``make_lupton_rgb`` does. Inputs on
    other grids are reprojected onto the first input's
    WCS, or onto ``grid``. PNG (8 or 16 bit), JPEG or TIFF out. Runs on the heavy pool.
    """

    pool: ClassVar[Pool] = Pool.heavy
    impl: ClassVar[str] = "worker.ops.composite:composite"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "fits"
    produces: ClassVar[Kind] = "image"
    scope: ClassVar[Scope] = "job"

    channels: Annotated[list[Channel], msgspec.Meta(min_length=2, max_length=16)] | None = None
    lupton: Lupton | None = None
    grid: Grid | None = None
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    format: Literal["png", "jpeg", "tiff"] = "png"
    bits: Literal[8, 16] = 8
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")] = "composite"

    def __post_init__(self) -> None:
        if (self.channels is None) == (self.lupton is None):
            raise ValueError("give channels or lupton")
        if self.bits == 16 and self.format == "jpeg":
            raise ValueError("JPEG is 8 bit")

    def check_inputs(self, n: int) -> str | None:
        """What is wrong with ``n`` inputs for this composite, or None."""
        if self.lupton is not None and n != 3:
            return f"lupton takes three inputs (red, green, blue), got {n}"
        if self.channels is not None and len(self.channels) != n:
            return f"{len(self.channels)} channels for {n} inputs"
        if n < 2:
            return "a composite needs at least two inputs"
        return None

    def outputs_per_input(self) -> int:
        return 0  # one file for the whole job


class Mosaic(Op, tag="mosaic", frozen=True):
    """Reproject several FITS images onto one celestial grid and combine them.

    The grid is ``grid`` when given, else a TAN grid covering every input at ``scale``
    (arcseconds per pixel; default: the finest input's). ``combine``: ``mean`` (weighted by
    coverage), ``median`` or ``sum``. Outputs ``<name>.fits`` (the mosaic, with its WCS),
    ``<name>.coverage.fits`` (how many inputs cover each pixel) and ``<name>.png`` (a
    preview with ``preview`` scaling). Reprojection fans out: one task per input on the heavy
    pool, run in parallel by free workers, combined when all are done. Runs on the heavy pool
    and must be the only step of its job.
    """

    pool: ClassVar[Pool] = Pool.heavy
    impl: ClassVar[str] = "worker.ops.mosaic:plan"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "fits"
    produces: ClassVar[Kind] = "fits"
    scope: ClassVar[Scope] = "job"
    fanout: ClassVar[FanOut | None] = FanOut(
        plan="worker.ops.mosaic:plan",
        task="worker.ops.mosaic:reproject_input",
        combine="worker.ops.mosaic:combine",
    )

    grid: Grid | None = None
    scale: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    combine: Literal["mean", "median", "sum"] = "mean"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    preview: Scaling = Scaling()
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")] = "mosaic"

    def check_inputs(self, n: int) -> str | None:
        return None if n >= 2 else "a mosaic needs at least two inputs"

    def outputs_per_input(self) -> int:
        return 0


class Catalogue(Op, tag="catalogue", frozen=True):
    """Record each input FITS as a dataset visible to the job's owner (id: the upload id):
    its HDUs, shapes, bands and footprint on the sky, as ``pixfleet datasets add`` does for
    the server's datasets. The edge runs it for every FITS upload; outputs
    ``<input>.dataset.json``, the record."""

    impl: ClassVar[str] = "worker.ops.catalogue:catalogue"
    after: ClassVar[str | None] = "pixfleet.registry.datasets:record_job_datasets"
    consumes: ClassVar[Kind | tuple[Kind, ...]] = "fits"
    produces: ClassVar[Kind] = "document"


ASTRO_OPS: tuple[type[Op], ...] = (Cutout, Preview, Header, Composite, Mosaic, Catalogue)
