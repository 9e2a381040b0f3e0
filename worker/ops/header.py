"""The ``header`` operation: a FITS file's header cards and celestial WCS summaries as JSON.

Headers only: HDUs are loaded lazily from a memory-mapped file and data is never read. The
HDU and WCS descriptions are ``worker.ops.fitsinfo``'s, as the ``metadata`` operation writes
them. Runs in a worker child; never imports litestar or OpenCV.
"""

from __future__ import annotations

import warnings
from typing import Any

import msgspec
from astropy.wcs import FITSFixedWarning

from contracts.astro import Header
from contracts.media import FITS, JSON
from worker.errors import UsageError
from worker.ops.api import InputFile, OpContext, output_path
from worker.ops.exif import Doc
from worker.ops.fitsinfo import FitsHdu, WcsSummary, fits_hdu, wcs_summary
from worker.ops.fitsio import open_fits
from worker.ops.inputs import check_input

_MAX_HDUS = 1000
_MAX_ISSUES = 50
_MAX_ISSUE = 500  # characters


class HeaderDocument(Doc):
    """What ``header`` writes (see ``header``)."""

    hdus: list[FitsHdu]
    wcs: list[WcsSummary] | None = None
    issues: list[str] | None = None


def header(op: Header, item: InputFile, ctx: OpContext) -> InputFile:
    """Write ``<name>.header.json`` (``application/json``) describing every HDU, or ``op.hdu``
    (a number, or an EXTNAME in any case).

    The document (fields without a value are left out)::

        hdus    [{index, name, type (astropy HDU class), shape (numpy order; tables: [rows]),
                bitpix, columns (tables), cards [[keyword, value, comment], ...]}]
        wcs     [{hdu, ctype, crval, crpix (header axis order), pixel_scale (arcsec/px,
                [ra, dec]), rotation (position angle of +y, degrees east of north),
                footprint (corner pixel centres as [ra, dec]), centre [ra, dec], radius
                (degrees), equinox, radesys, sip (SIP distortion present)}], one per image
                HDU with a celestial WCS
        issues  what could not be read (the rest still holds)

    Card values are JSON booleans, numbers and strings; undefined values are null, complex
    values and non-finite floats strings. These are the ``fits`` and ``wcs`` entries of the
    ``metadata`` operation's document.

    Raises:
        UsageError: the input is not FITS, its headers cannot be read, or it has no HDU
            ``op.hdu``.
    """
    info = check_input(item, ctx.limits, complete=False)
    if info.media_type != FITS:
        raise UsageError(f"input {item.name!r} is {info.media_type}, not FITS: header reads FITS")
    issues: list[str] = []
    hdus: list[FitsHdu] = []
    summaries: list[WcsSummary] = []
    with open_fits(item, ctx) as hdul, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", FITSFixedWarning)  # wcslib's fixes are not news
        for index, hdu in _selected(hdul, op.hdu, item, issues):
            hdus.append(fits_hdu(index, hdu, True, issues))
            summary = wcs_summary(index, hdu, issues, hdul)
            if summary is not None:
                summaries.append(summary)
    issues += [f"FITS: {w.message}" for w in caught]
    issues = list(dict.fromkeys(i.strip()[:_MAX_ISSUE] for i in issues))[:_MAX_ISSUES]
    doc = HeaderDocument(hdus=hdus, wcs=summaries or None, issues=issues or None)
    stem = item.name.replace("/", "_").replace("\\", "_").lstrip(".") or "header"
    path = output_path(ctx.workdir, f"{stem}.header.json")
    path.write_bytes(msgspec.json.encode(doc, order="deterministic"))
    return InputFile(path=path, media_type=JSON, name=item.name)


def _selected(
    hdul: Any, wanted: int | str | None, item: InputFile, issues: list[str]
) -> list[tuple[int, Any]]:
    """``(index, hdu)`` of every HDU, or of the one ``wanted`` names."""
    chosen = []
    for index, hdu in enumerate(hdul):
        if index == _MAX_HDUS:
            if wanted is None:
                issues.append(f"FITS: only the first {_MAX_HDUS} HDUs are described")
            break
        if wanted is None:
            chosen.append((index, hdu))
        elif index == wanted or (isinstance(wanted, str) and hdu.name == wanted.upper()):
            return [(index, hdu)]
    if wanted is not None:
        raise UsageError(f"input {item.name!r} has no HDU {wanted!r}")
    return chosen
