"""The ``cutout`` operation: IVOA SODA cutouts of FITS images along circles, polygons and ranges.

For each input and each stencil (inputs outer, stencils inner) one FITS file: a primary HDU
holding the provenance (source, HDU, stencil, pixel bounds, software, date), then the cut of
the science plane (and with ``hdus="all"`` of every other image HDU on the same grid). The
pixel box is the bounding box of the pixels whose centres lie in the stencil
(``worker.ops.sky``), clipped at the image; cubes are cut on their celestial axes, and along
the spectral axis to ``band``. Only the box is read: memory-mapped for plain HDUs, only the
tiles it touches for tile-compressed ones. Values are written as stored (the dtype, BSCALE,
BZERO and BLANK of the source), and each header is the source's with the reference pixels
moved, so every pixel keeps its sky position (SIP and other distortions included).

Runs in a worker child: numpy and astropy; never imports litestar.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCSSUB_SPECTRAL

from contracts.astro import AnyStencil, Cutout, Range
from contracts.media import FITS
from worker.errors import UsageError
from worker.ops import sky
from worker.ops.api import InputFile, OpContext, OutputFile, Picture, output_path
from worker.ops.fitsio import (
    ImagePlane,
    header_cards,
    image_planes,
    open_fits,
    science_plane,
    stored,
    write_images,
)

# Structural cards (written anew), checksums (wrong once cut) and pixel ranges of the source
# array (IRAF, NOAO sections: wrong once the array is cut).
_DROP = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|GROUPS|CHECKSUM|DATASUM|END"
    r"|DATASEC|TRIMSEC|BIASSEC|CCDSEC|DETSEC|AMPSEC|ORIGSEC)$"
)
# Cards holding a pixel coordinate of the array: CRPIXja (every alternate WCS), IRAF's LTVj,
# DSS's CNPIXj.
_PIXEL_CARD = re.compile(r"^(CRPIX|LTV|CNPIX)(\d)([A-Z]?)$")
# Cards naming lookup-table distortions and their tables (which wcs.to_header leaves out).
_LOOKUP_CARD = re.compile(r"^(CPDIS|CPERR|DP|D2IMDIS|D2IMERR|D2IM)\d$|^(D2IMEXT|NPOLEXT)$")
# Cards of a source primary HDU that mean nothing in a primary without data.
_NO_DATA = frozenset({"BSCALE", "BZERO", "BLANK", "BUNIT"})
_BITPIX = {"u1": 8, "i2": 16, "i4": 32, "i8": 64, "f4": -32, "f8": -64}
# Provenance cards of the output's primary HDU; the source primary's own are not copied.
_PROVENANCE = frozenset(
    {"ORIGIN", "CREATOR", "DATE", "SRCNAME", "SRCHDU", "SRCEXT", "STENCIL", "MASKED"}
    | {"XMIN", "XMAX", "YMIN", "YMAX", "ZMIN", "ZMAX", "BANDLO", "BANDHI", "NEXTEND"}
)


def cutout(op: Cutout, items: list[InputFile], ctx: OpContext) -> list[OutputFile]:
    """Cut every input along every stencil: ``<name>.<k>.fits`` (k from 1), or
    ``<name>.cutout.fits`` for a single stencil, in input then stencil order.

    Raises:
        UsageError: an input is not a readable FITS image with a celestial WCS, a stencil
            misses an input, ``band`` selects no plane, or a cutout is over the output limit.
    """
    outputs: list[OutputFile] = []
    total = len(items) * len(op.stencils)
    for item in items:
        if isinstance(item, Picture):
            raise UsageError("cutout reads FITS files, not decoded pixels")
        with open_fits(item, ctx, raw=True) as hdul:
            source = _open_source(hdul, item, op)
            for k, stencil in enumerate(op.stencils, 1):
                suffix = "cutout" if len(op.stencils) == 1 else str(k)
                outputs.append(_cut(source, stencil, op, suffix, ctx))
                ctx.progress(len(outputs) / total)
    return outputs


@dataclass
class _Source:
    """One input, opened: its planes, celestial grid and the slices that do not move."""

    item: InputFile
    hdul: Any
    science: ImagePlane
    planes: list[ImagePlane]
    grid: sky.SkyGrid
    x_axis: int
    y_axis: int
    """numpy axes of the celestial x and y (the last two for an ordinary image or cube)."""
    fixed: dict[int, slice] = field(default_factory=dict)
    """numpy axis -> slice for the other axes (the spectral planes within ``band``)."""
    arrays: dict[int, Any] = field(default_factory=dict)
    """HDU index -> what to slice for its stored values (``fitsio.stored``)."""
    cards: dict[int, list[str]] = field(default_factory=dict)
    """HDU index -> its header's cards, with the science WCS for planes without their own."""
    tables: list[tuple[list[str], np.ndarray]] = field(default_factory=list)
    """The lookup tables of the science WCS's distortions (``WCSDVARR``, ``D2IMARR``)."""
    band: tuple[float, float] | None = None


def _open_source(hdul: Any, item: InputFile, op: Cutout) -> _Source:
    science = science_plane(hdul, item)
    if science.wcs is None:
        raise UsageError(f"input {item.name!r} has no celestial WCS")
    wcs = science.wcs
    ndim = len(science.shape)
    first, second = sorted((int(wcs.wcs.lng), int(wcs.wcs.lat)))
    if second >= ndim:
        raise UsageError(f"input {item.name!r}: the celestial axes are not data axes")
    x_axis, y_axis = ndim - 1 - first, ndim - 1 - second
    celestial = wcs if wcs.naxis == 2 and first == 0 else wcs.celestial
    try:
        grid = sky.SkyGrid(celestial, (science.shape[y_axis], science.shape[x_axis]))
    except UsageError as e:
        raise UsageError(f"input {item.name!r}: {e.message}") from e
    planes = [science]
    if op.hdus == "all":
        planes += [
            p
            for p in image_planes(hdul, item)
            if p.index != science.index and p.shape == science.shape
        ]
    source = _Source(item, hdul, science, planes, grid, x_axis, y_axis)
    for plane in planes:
        source.arrays[plane.index] = stored(plane, item)
        cards = header_cards(plane.hdu, item)
        if plane.wcs is None:  # an error or quality plane without a WCS of its own
            cards = _with_wcs(cards, science.wcs, source.cards[science.index])
        source.cards[plane.index] = cards
    source.tables = _lookup_tables(hdul, science, item)
    if op.band is not None:
        axis, kept = _band_planes(science, op.band, item)
        source.fixed[axis] = kept
        source.band = op.band
    return source


def _band_planes(
    plane: ImagePlane, band: tuple[float, float], item: InputFile
) -> tuple[int, slice]:
    """The numpy axis of the spectral planes and the slice of those whose wavelength (at the
    plane's centre, vacuum, metres) lies within ``band``.

    Raises:
        UsageError: no spectral data axis, no wavelength for it, or no plane within ``band``.
    """
    wcs = plane.wcs
    assert wcs is not None
    spec = int(wcs.wcs.spec)
    if spec < 0 or spec >= len(plane.shape):
        raise UsageError(f"input {item.name!r} has no spectral axis: band applies to cubes")
    axis = len(plane.shape) - 1 - spec
    try:
        spectral = wcs.sub([WCSSUB_SPECTRAL])
        spectral.wcs.sptr("WAVE-???")
        waves = spectral.all_pix2world(np.arange(plane.shape[axis], dtype=np.float64), 0)[0]
    except (ValueError, KeyError, TypeError, MemoryError) as e:
        raise UsageError(f"input {item.name!r}: no wavelengths for its spectral axis: {e}") from e
    with np.errstate(invalid="ignore"):
        inside = np.flatnonzero((waves >= band[0]) & (waves <= band[1]))
    if inside.size == 0:
        low, high = np.nanmin(waves), np.nanmax(waves)
        raise UsageError(
            f"band {band[0]:.6g}..{band[1]:.6g} m holds no plane of input {item.name!r} "
            f"({low:.6g}..{high:.6g} m)"
        )
    return axis, slice(int(inside[0]), int(inside[-1]) + 1)


def _cut(
    source: _Source, stencil: AnyStencil, op: Cutout, suffix: str, ctx: OpContext
) -> OutputFile:
    item = source.item
    try:
        box = sky.pixel_box(stencil, source.grid)
    except UsageError as e:
        raise UsageError(f"input {item.name!r}: {e.message}") from e
    if box is None:
        raise UsageError(f"{stencil.soda()} does not overlap input {item.name!r}")
    key: list[slice] = [slice(None)] * len(source.science.shape)
    for axis, kept in source.fixed.items():
        key[axis] = kept
    key[source.y_axis], key[source.x_axis] = box.slices()
    shape = source.science.shape
    count = math.prod(len(range(*k.indices(n))) for k, n in zip(key, shape, strict=True))
    count *= len(source.planes)
    if count > ctx.limits.max_output_pixels:
        raise UsageError(
            f"the cutout of input {item.name!r} along {stencil.soda()} has {count} pixels, "
            f"over the limit of {ctx.limits.max_output_pixels}"
        )
    outside = None
    if op.mask and not isinstance(stencil, Range):
        outside = ~sky.member_mask(stencil, source.grid, box)
    images = [_image(source, plane, tuple(key), outside) for plane in source.planes]
    images += [_table(cards, data, box) for cards, data in source.tables]
    stem = item.name.replace("/", "_").replace("\\", "_").lstrip(".") or "input"
    path = output_path(ctx.workdir, f"{stem}.{suffix}.fits")
    primary = _primary_cards(source, stencil, box, outside is not None, len(images))
    write_images(path, primary, images)
    # Published as "<name>.<suffix>.fits" (the result name adds the file's suffix).
    return OutputFile(path=path, media_type=FITS, name=f"{item.name}.{suffix}")


def _image(
    source: _Source, plane: ImagePlane, key: tuple[slice, ...], outside: np.ndarray | None
) -> tuple[list[str], np.ndarray]:
    """The cut of one plane (values as stored) and its header cards."""
    try:
        data = np.array(source.arrays[plane.index][key])
    except (OSError, ValueError, IndexError, TypeError) as e:
        raise UsageError(f"input {source.item.name!r}: cannot read HDU {plane.index}: {e}") from e
    blank = None
    if outside is not None:
        # The (rows, columns) mask laid along the data's celestial axes, in their order.
        y_axis, x_axis = source.y_axis, source.x_axis
        shape = [1] * data.ndim
        shape[y_axis], shape[x_axis] = outside.shape
        ordered = outside if y_axis < x_axis else outside.T
        where = np.broadcast_to(ordered.reshape(shape), data.shape)
        if data.dtype.kind == "f":
            data[where] = np.nan
        else:
            blank = plane.hdu.header.get("BLANK")
            if not isinstance(blank, int) or isinstance(blank, bool):
                blank = int(np.iinfo(data.dtype).min)
            data[where] = blank
    # FITS axis j (1-based) is numpy axis ndim - j; the cut starts `start` pixels in.
    starts = {data.ndim - axis: k.start or 0 for axis, k in enumerate(key)}
    cards = _image_cards(source.cards[plane.index], data, starts, blank)
    return cards, data


def _image_cards(
    source: list[str], data: np.ndarray, starts: dict[int, int], blank: int | None
) -> list[str]:
    """The source's cards for an extension holding ``data``: structural cards anew, the
    reference pixels moved by the start of the cut on each axis, sections of the uncut array
    dropped, and BLANK added when masking integers needs one."""
    ndim = data.ndim
    cards = [
        _card("XTENSION", "IMAGE", "image extension"),
        _card("BITPIX", _BITPIX[data.dtype.str[1:]], "array data type"),
        _card("NAXIS", ndim, "number of array dimensions"),
        *(_card(f"NAXIS{j}", data.shape[ndim - j]) for j in range(1, ndim + 1)),
        _card("PCOUNT", 0),
        _card("GCOUNT", 1),
    ]
    names = {card[:8].rstrip() for card in source}
    dss = "CNPIX1" in names and "CTYPE1" not in names
    keep = True
    for card in source:
        name = card[:8].rstrip()
        if name == "CONTINUE":  # the rest of a long string: goes with its card
            if keep:
                cards.append(card)
            continue
        keep = not (_DROP.match(name) or (name == "BLANK" and data.dtype.kind == "f"))
        if keep:
            cards.append(_moved(card, name, starts, dss))
    if blank is not None and "BLANK" not in names:
        cards.append(_card("BLANK", blank, "value of pixels outside the stencil"))
    if not dss and any(n.startswith("CTYPE") for n in names):
        for j, start in starts.items():
            if start and f"CRPIX{j}" not in names:  # absent means 0
                cards.append(_card(f"CRPIX{j}", float(-start), "pixel of the reference point"))
    return cards


def _moved(card: str, name: str, starts: dict[int, int], dss: bool) -> str:
    """``card``, or a card with its pixel coordinate moved if it holds one."""
    match = _PIXEL_CARD.match(name)
    if match is None or card[8:10] != "= ":
        return card
    kind, axis = match[1], int(match[2])
    if (kind == "CNPIX" and not dss) or (kind == "LTV" and match[3]):
        return card
    start = starts.get(axis, 0)
    if not start:
        return card
    parsed = fits.Card.fromstring(card)
    value = parsed.value
    if not isinstance(value, int | float) or isinstance(value, bool):
        return card
    # DSS's CNPIX is the corner of the array on the plate; CRPIX and LTV count from the array.
    moved = value + start if kind == "CNPIX" else value - start
    return _card(name, moved, parsed.comment)


def _lookup_tables(
    hdul: Any, science: ImagePlane, item: InputFile
) -> list[tuple[list[str], np.ndarray]]:
    """The extensions holding the lookup tables of the science plane's distortions (paper
    IV ``CPDISj``/``DPj.EXTVER`` in ``WCSDVARR``, ``D2IMDISj``/``D2IMj.EXTVER`` in
    ``D2IMARR``, as HST files have them): cards and data, to be copied with the cutout.

    Raises:
        UsageError: a table the header names is missing.
    """
    wcs, header = science.wcs, science.hdu.header
    assert wcs is not None
    wanted: list[tuple[str, int]] = []
    for j in (1, 2):
        for attr, record, extname in (("cpdis", "DP", "WCSDVARR"), ("det2im", "D2IM", "D2IMARR")):
            if getattr(wcs, f"{attr}{j}") is None:
                continue
            version = header.get(f"{record}{j}.EXTVER")
            if isinstance(version, int | float) and (extname, int(version)) not in wanted:
                wanted.append((extname, int(version)))
    tables = []
    for extname, version in wanted:
        try:
            hdu = hdul[extname, version]
        except KeyError as e:
            raise UsageError(f"input {item.name!r} has no {extname} {version} extension") from e
        tables.append((header_cards(hdu, item), np.array(hdu.data)))
    return tables


def _table(cards: list[str], data: np.ndarray, box: sky.PixelBox) -> tuple[list[str], np.ndarray]:
    """A lookup table for the cutout: its CRVALj, a pixel of the image, moved like CRPIX."""
    starts = {1: box.xmin, 2: box.ymin}
    moved = []
    for card in _image_cards(cards, data, {}, None):
        name = card[:8].rstrip()
        if name in ("CRVAL1", "CRVAL2") and starts[int(name[-1])]:
            parsed = fits.Card.fromstring(card)
            card = _card(name, parsed.value - starts[int(name[-1])], parsed.comment)
        moved.append(card)
    return moved, data


def _with_wcs(cards: list[str], wcs: Any, science: list[str]) -> list[str]:
    """``cards`` of a plane without a celestial WCS, with the science plane's ``wcs`` written
    in (replacing cards of the same names), its lookup-table distortion cards included."""
    added = [str(card) for card in wcs.to_header(relax=True).cards]
    added += [card for card in science if _LOOKUP_CARD.match(card[:8].rstrip())]
    names = {card[:8] for card in added}
    return [card for card in cards if card[:8] not in names] + added


def _card(name: str, value: Any, comment: str = "") -> str:
    """An 80-character card in the fixed format; astropy's ``Card`` (slow: it reads its
    configuration on every call) only for what the fixed format cannot hold."""
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        text = f"{value:>20d}"
    elif isinstance(value, float) and math.isfinite(value):
        text = f"{_float(value):>20}"
    else:
        value = _printable(str(value))
        text = "'" + value.replace("'", "''").ljust(8) + "'"
        text = text.ljust(20)
    if len(text) > 70 or (len(text) > 20 and not isinstance(value, str)):
        # A long string (CONTINUE cards follow) or a float needing more digits.
        return str(fits.Card(name, value, _printable(comment)).image)
    card = f"{name:<8}= {text}"
    if comment:
        card += f" / {_printable(comment)}"
    return card[:80].ljust(80)


def _float(value: float) -> str:
    text = repr(value).upper()
    return text if "." in text or "E" in text else text + ".0"


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _primary_cards(
    source: _Source, stencil: AnyStencil, box: sky.PixelBox, masked: bool, count: int
) -> list[str]:
    """The provenance, after the source primary's cards when the science plane is elsewhere."""
    item, science = source.item, source.science
    cards = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card("BITPIX", 8, "array data type"),
        _card("NAXIS", 0, "no data: the cutouts follow as image extensions"),
        _card("EXTEND", True),
    ]
    if science.index != 0:
        keep = True
        for card in header_cards(source.hdul[0], item):
            name = card[:8].rstrip()
            if name != "CONTINUE":
                keep = not (_DROP.match(name) or name in _PROVENANCE or name in _NO_DATA)
            if keep:
                cards.append(card)
    cards += [
        _card("ORIGIN", "pixfleet", "software that made this file"),
        _card("CREATOR", f"pixfleet {_version()}", "software and version"),
        _card("DATE", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "UTC file creation"),
        _card("SRCNAME", item.source or item.name, "input cut: upload or dataset id"),
    ]
    cards += [
        _card("SRCHDU", science.index, "HDU of the source cut (0 = primary)"),
        _card("SRCEXT", science.name, "EXTNAME of that HDU"),
        _card("STENCIL", stencil.soda(), "SODA POS of the cutout (ICRS degrees)"),
        _card("XMIN", box.xmin + 1, "first source column (FITS 1-based, inclusive)"),
        _card("XMAX", box.xmax + 1, "last source column (FITS 1-based, inclusive)"),
        _card("YMIN", box.ymin + 1, "first source row (FITS 1-based, inclusive)"),
        _card("YMAX", box.ymax + 1, "last source row (FITS 1-based, inclusive)"),
    ]
    for kept in source.fixed.values():
        cards += [
            _card("ZMIN", kept.start + 1, "first spectral plane kept (1-based, inclusive)"),
            _card("ZMAX", kept.stop, "last spectral plane kept (1-based, inclusive)"),
        ]
    if source.band is not None:
        cards += [
            _card("BANDLO", float(source.band[0]), "[m] SODA BAND asked for, low end"),
            _card("BANDHI", float(source.band[1]), "[m] SODA BAND asked for, high end"),
        ]
    cards += [
        _card("MASKED", masked, "pixels outside the stencil set to NaN or BLANK"),
        _card("NEXTEND", count, "number of image extensions"),
    ]
    return cards


@cache
def _version() -> str:
    try:
        return metadata.version("pixfleet")
    except metadata.PackageNotFoundError:
        return "unknown"
