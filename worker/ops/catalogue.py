"""The ``catalogue`` operation, and ``describe``: what a FITS file holds and where it lies.

``describe`` reads headers only (memory-mapped, HDUs loaded lazily, pixel data never touched):
every HDU, the science plane (``fitsio.science_plane``: the first image HDU with a celestial
WCS), the bands the headers name (``FILTER``, ``FILTER1``/``2``/``3``, ``BAND``, ``PHOTPLAM``)
and a cube's spectral range in metres, and the celestial WCS summary with its footprint,
centre and radius (``fitsinfo.summarise``). ``pixfleet datasets add`` calls it in the
operator's process; the operation calls it in a worker child and writes the record as
``<name>.dataset.json``, which the worker parent stores (``pixfleet.registry.datasets``, the
op's ``after`` hook).

A file without a celestial WCS is described without footprint: ``datasets add`` refuses it;
an upload is recorded anyway, found by its id but never by a sky query.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import msgspec
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCSSUB_SPECTRAL

from contracts.astro import Catalogue
from contracts.datasets import Band, CelestialWcs, DatasetInfo, Hdu
from contracts.media import FITS, JSON
from worker.errors import UsageError
from worker.ops.api import InputFile, Item, LocalContext, OpContext, Picture, output_path
from worker.ops.fitsinfo import fits_hdu, summarise
from worker.ops.fitsio import ImagePlane, open_fits, science_plane
from worker.ops.inputs import check_input

_MAX_HDUS = 1000
_FILTER_KEYS = ("FILTER", "FILTER1", "FILTER2", "FILTER3", "BAND")
_NOT_A_BAND = ("CLEAR", "N/A", "NONE", "OPEN", "BLANK")  # empty filter-wheel positions
_ANGSTROM = 1e-10
_HEADER_ERRORS = (VerifyError, ValueError, KeyError, TypeError, IndexError, OSError)


def catalogue(op: Catalogue, item: Item, ctx: OpContext) -> InputFile:
    """Describe the input FITS as a dataset (id: the input's name, the upload id) and write
    ``<name>.dataset.json`` (``DatasetInfo``).

    Raises:
        UsageError: the input is not a readable FITS file or holds no image HDU.
    """
    if isinstance(item, Picture):
        raise UsageError("catalogue describes FITS files, not decoded pixels")
    if check_input(item, ctx.limits).media_type != FITS:
        raise UsageError(f"input {item.name!r} is not a FITS file")
    info = describe(item.path, item.name)
    stem = item.name.replace("/", "_").replace("\\", "_").lstrip(".") or "dataset"
    path = output_path(ctx.workdir, f"{stem}.dataset.json")
    path.write_bytes(msgspec.json.encode(info))
    # Published as "<name>.dataset.json" (the result name adds the suffix to the name).
    return InputFile(path=path, media_type=JSON, name=f"{item.name}.dataset")


def describe(path: Path, dataset_id: str) -> DatasetInfo:
    """Read the headers of the FITS file at ``path`` and describe it as dataset ``dataset_id``.

    Raises:
        UsageError: not a readable FITS file, a broken header, or no image HDU.
    """
    item = InputFile(path=path, media_type=FITS, name=dataset_id)
    issues: list[str] = []
    with warnings.catch_warnings():
        # What astropy and wcslib say about non-standard headers they fixed is not ours to say.
        warnings.simplefilter("ignore")
        with open_fits(item, LocalContext(workdir=path.parent)) as hdul:
            try:
                hdus = [_hdu(i, hdu, issues) for i, hdu in enumerate(hdul) if i < _MAX_HDUS]
            except _HEADER_ERRORS as e:
                raise UsageError(f"input {dataset_id!r}: cannot read a FITS header: {e}") from e
            plane = science_plane(hdul, item)
            bands = _bands(hdul, plane)
            summary = summarise(plane.index, plane.wcs, issues) if plane.wcs is not None else None
    info = DatasetInfo(id=dataset_id, hdus=hdus, shape=list(plane.shape), bands=bands)
    if summary is None:
        return info
    return msgspec.structs.replace(
        info,
        wcs=CelestialWcs(**{f: getattr(summary, f) for f in CelestialWcs.__struct_fields__}),
        footprint=[(_ra(ra), dec) for ra, dec in summary.footprint],
        centre_ra=_ra(summary.centre[0]),
        centre_dec=summary.centre[1],
        radius=summary.radius,
    )


def _ra(value: float) -> float:
    ra = value % 360.0
    return 0.0 if ra >= 360.0 else ra  # -1e-17 % 360 is 360.0


def _hdu(index: int, hdu: Any, issues: list[str]) -> Hdu:
    h = fits_hdu(index, hdu, False, issues)
    return Hdu(index=h.index, name=h.name, type=h.type, shape=h.shape, bitpix=h.bitpix)


def _bands(hdul: Any, plane: ImagePlane) -> list[Band]:
    """The filters and wavelengths named in the primary and the science HDU's headers, then
    the spectral axis' range of a cube."""
    found: list[Band] = []
    seen: set[tuple[str, str | None, float | None]] = set()
    places = [(0, hdul[0].header)]
    if plane.index != 0:
        places.append((plane.index, plane.hdu.header))
    for index, header in places:
        for band in _header_bands(index, header):
            key = (band.keyword, band.name, band.wavelength)
            if key not in seen:
                seen.add(key)
                found.append(band)
    spectral = _spectral_range(plane)
    if spectral is not None:
        found.append(spectral)
    return found


def _header_bands(index: int, header: Any) -> list[Band]:
    bands = []
    for key in _FILTER_KEYS:
        value = _card(header, key)
        if isinstance(value, str) and value.strip():
            name = value.strip()
            if not name.upper().startswith(_NOT_A_BAND):
                bands.append(Band(hdu=index, keyword=key, name=name))
    pivot = _card(header, "PHOTPLAM")  # HST: the pivot wavelength in Angstrom
    if isinstance(pivot, int | float) and not isinstance(pivot, bool) and 0 < pivot < math.inf:
        bands.append(Band(hdu=index, keyword="PHOTPLAM", wavelength=pivot * _ANGSTROM))
    return bands


def _card(header: Any, key: str) -> object:
    try:
        return header.get(key)
    except _HEADER_ERRORS:
        return None


def _spectral_range(plane: ImagePlane) -> Band | None:
    """The wavelengths (metres) of the first and last planes along a spectral axis.

    Frequencies and velocities are converted by wcslib (``sptr``); a velocity axis without a
    rest frequency or wavelength has no range.
    """
    wcs = plane.wcs
    if wcs is None or wcs.wcs.spec < 0:
        return None
    axis = wcs.wcs.spec  # header order
    header_shape = plane.shape[::-1]
    if axis >= len(header_shape):
        return None
    try:
        spectral = wcs.sub([WCSSUB_SPECTRAL])
        kind = str(spectral.wcs.ctype[0]).split("-")[0]
        spectral.wcs.sptr("WAVE-???")
        ends = spectral.all_pix2world([[0.0], [header_shape[axis] - 1.0]], 0)
    except (ValueError, KeyError, TypeError, MemoryError):
        return None
    low, high = sorted(float(v) for v in ends.ravel())
    if not (math.isfinite(low) and math.isfinite(high) and low > 0):
        return None
    return Band(hdu=plane.index, keyword=kind, low=low, high=high)
