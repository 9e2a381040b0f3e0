"""FITS headers and WCS summaries for the ``metadata`` operation, read with astropy.

HDUs are described from their headers (``fits.open`` memory-maps and loads HDUs lazily; data
is never read); a celestial WCS is summarised by its reference, scale, rotation and footprint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.card import Undefined
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from contracts.datasets import CelestialWcs
from worker.ops.exif import Doc

CardValue = bool | int | float | str | None
_MAX_CARDS = 10_000


class FitsHdu(Doc):
    index: int
    name: str
    type: str
    shape: list[int]
    bitpix: int | None = None
    columns: int | None = None
    cards: list[tuple[str, CardValue, str]] | None = None


class WcsSummary(CelestialWcs, frozen=True):
    """A dataset record's celestial WCS and where the image lies on the sky."""

    footprint: list[list[float]]
    centre: list[float]
    radius: float


def fits_hdu(index: int, hdu: Any, with_cards: bool, issues: list[str]) -> FitsHdu:
    header = hdu.header
    naxes = _header_int(header, "NAXIS") or 0
    axes = [_header_int(header, f"NAXIS{i}") or 0 for i in range(1, min(naxes, 999) + 1)]
    table = isinstance(hdu, fits.BinTableHDU | fits.TableHDU)
    return FitsHdu(
        index=index,
        name=str(hdu.name),
        type=type(hdu).__name__,
        shape=[axes[1]] if table and len(axes) == 2 else axes[::-1],
        bitpix=_header_int(header, "BITPIX"),
        columns=_header_int(header, "TFIELDS") if table else None,
        cards=_cards(index, header, issues) if with_cards else None,
    )


def _header_int(header: Any, key: str) -> int | None:
    try:
        value = header.get(key)
    except (VerifyError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cards(index: int, header: Any, issues: list[str]) -> list[tuple[str, CardValue, str]]:
    cards: list[tuple[str, CardValue, str]] = []
    for n, card in enumerate(header.cards):
        if n == _MAX_CARDS:
            issues.append(f"FITS: HDU {index}: only the first {_MAX_CARDS} cards are listed")
            break
        try:
            value, comment = card.value, card.comment
        except (VerifyError, ValueError) as e:
            issues.append(f"FITS: HDU {index}: card {card.keyword!r} is malformed: {e}")
            value, comment = card.image[10:].strip(), ""
        cards.append((str(card.keyword), _card_value(value), str(comment or "")))
    return cards


def _card_value(value: object) -> CardValue:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, Undefined):
        return None
    return str(value)  # complex values


def wcs_summary(index: int, hdu: Any, issues: list[str], hdul: Any = None) -> WcsSummary | None:
    """Summarise the celestial WCS of an image HDU; None if it has none. ``hdul``, the file's
    HDU list, lets the WCS read distortion tables kept in other extensions."""
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):  # CompImageHDU is an ImageHDU
        return None
    if (_header_int(hdu.header, "NAXIS") or 0) < 2:
        return None
    try:
        full = WCS(hdu.header, hdul)
    except (ValueError, KeyError, TypeError, MemoryError) as e:
        issues.append(f"FITS: HDU {index}: cannot read the WCS: {e}")
        return None
    return summarise(index, full, issues) if full.has_celestial else None


def summarise(index: int, full: WCS, issues: list[str]) -> WcsSummary | None:
    """Summarise an HDU's (full) WCS that has celestial axes; None, with an issue, if its
    footprint cannot be computed."""
    try:
        return _celestial_summary(index, full)
    except (ValueError, KeyError, TypeError, MemoryError) as e:
        issues.append(f"FITS: HDU {index}: cannot read the WCS: {e}")
        return None


def _celestial_summary(index: int, full: WCS) -> WcsSummary:
    wcs = full.celestial
    lng, lat = wcs.wcs.lng, wcs.wcs.lat
    nx, ny = wcs.pixel_shape
    corners = wcs.calc_footprint(axes=(nx, ny))[:, [lng, lat]]
    centre = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0][[lng, lat]]
    matrix = wcs.pixel_scale_matrix
    scales = proj_plane_pixel_scales(wcs)[[lng, lat]] * 3600
    if not (np.isfinite(corners).all() and np.isfinite(centre).all()):
        raise ValueError("the footprint is not finite")
    equinox = float(wcs.wcs.equinox)
    return WcsSummary(
        hdu=index,
        ctype=[str(c) for c in wcs.wcs.ctype],
        crval=[float(v) for v in wcs.wcs.crval],
        crpix=[float(v) for v in wcs.wcs.crpix],
        pixel_scale=[float(s) for s in scales],
        # The +y pixel step in intermediate coordinates: lng grows east, lat north.
        rotation=math.degrees(math.atan2(matrix[lng, 1], matrix[lat, 1])),
        footprint=corners.tolist(),
        centre=centre.tolist(),
        radius=max(_separation(centre, corner) for corner in corners),
        sip=full.sip is not None,
        equinox=equinox if math.isfinite(equinox) else None,
        radesys=str(wcs.wcs.radesys) or None,
    )


def _separation(a: Any, b: Any) -> float:
    """Angular distance in degrees between two (ra, dec) points in degrees (Vincenty)."""
    ra1, dec1, ra2, dec2 = (math.radians(float(v)) for v in (a[0], a[1], b[0], b[1]))
    d = ra2 - ra1
    num = math.hypot(
        math.cos(dec2) * math.sin(d),
        math.cos(dec1) * math.sin(dec2) - math.sin(dec1) * math.cos(dec2) * math.cos(d),
    )
    den = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(d)
    return math.degrees(math.atan2(num, den))
