"""Dataset records (the SODA ``ID``): what a FITS file holds and where it lies on the sky.

- ``DatasetInfo``: what reading a file finds. The ``catalogue`` operation writes it as
  ``<input>.dataset.json``; ``pixfleet datasets add`` computes it the same way.
- ``DatasetRecord``: a row of ``datasets`` (``migrations/003_datasets.sql``): the info plus
  who sees it and where its bytes are.
- ``Dataset``, ``DatasetPage``, ``SkyQuery``: the bodies and the query of ``GET /v1/datasets``.

Positions are ICRS degrees, wavelengths metres, shapes in numpy order (slowest axis first).
Imports msgspec and the standard library only.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from contracts.astro import DatasetId, Dec, Ra, Radius
from contracts.media import FITS


class Hdu(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One HDU of the file, from its header (data is not read)."""

    index: int
    """0: the primary HDU."""
    name: str
    type: str
    """astropy's class: ``PrimaryHDU``, ``ImageHDU``, ``CompImageHDU`` (tile-compressed),
    ``BinTableHDU``, ``TableHDU``."""
    shape: list[int]
    """numpy order; tables: ``[rows]``; compressed images: the image's shape."""
    bitpix: int | None = None


class Band(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A band the header names: a filter (``FILTER``, ``FILTER1``, ``FILTER2``, ``BAND``), a
    pivot wavelength (``PHOTPLAM``), or the range of a cube's spectral axis."""

    hdu: int
    keyword: str
    """Where it was found: the keyword, or the spectral axis type (``WAVE``, ``FREQ``, ...)."""
    name: str | None = None
    """The filter's name as written (``F814W``, ``K``)."""
    wavelength: float | None = None
    """Metres (``PHOTPLAM``)."""
    low: float | None = None
    """Metres: the spectral axis' shortest wavelength (pixel centres)."""
    high: float | None = None
    """Metres: its longest."""


class CelestialWcs(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The celestial WCS of the science HDU, summarised (header axis order)."""

    hdu: int
    ctype: list[str]
    crval: list[float]
    crpix: list[float]
    pixel_scale: list[float]
    """Arcseconds per pixel, ``[ra, dec]``."""
    rotation: float
    """Position angle of the +y axis at the reference pixel, degrees east of north."""
    sip: bool
    equinox: float | None = None
    radesys: str | None = None


Vertex = tuple[float, float]
"""``[ra, dec]``, degrees."""


class DatasetInfo(msgspec.Struct, kw_only=True, frozen=True):
    """What a FITS file holds and covers.

    A file without a celestial WCS has no ``wcs``, ``footprint``, centre or ``radius``: it is
    never found by a sky query, only by its id.
    """

    id: DatasetId
    media_type: str = FITS
    hdus: list[Hdu]
    shape: list[int]
    """The science plane's shape: the first image HDU with a celestial WCS (else the first
    image HDU)."""
    bands: list[Band] = []
    wcs: CelestialWcs | None = None
    footprint: list[Vertex] | None = None
    """The corner pixels' centres, in order around the image."""
    centre_ra: float | None = None
    centre_dec: float | None = None
    radius: float | None = None
    """Degrees: the smallest circle around the centre that holds the footprint."""


class DatasetRecord(DatasetInfo, kw_only=True, frozen=True):
    """A row of ``datasets``."""

    owner: str | None = None
    """None: a public dataset (registered by an operator); else visible to this owner only."""
    upload_id: UUID | None = None
    """The upload the record describes (the record goes when the upload expires)."""
    object_key: str
    size: int
    sha256: str
    created_at: datetime
    expires_at: datetime | None = None
    """The upload's expiry; None for registered datasets."""


class Dataset(DatasetInfo, kw_only=True, frozen=True):
    """A dataset as the API shows it; use ``id`` in a job's ``datasets`` (the SODA ``ID``)."""

    public: bool
    """Registered by the operator for everyone; false: one of your uploads."""
    upload_id: UUID | None = None
    size: int
    sha256: str
    created_at: datetime
    expires_at: datetime | None = None
    distance: float | None = None
    """Degrees from the query's centre to the dataset's centre (sky queries only)."""


class DatasetPage(msgspec.Struct, kw_only=True):
    """Datasets nearest first (a sky query), or by id."""

    items: list[Dataset]
    next: str | None = None
    """Cursor for the next page (pass it back as ``cursor``), absent on the last page."""


class SkyQuery(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A circle on the sky: the datasets whose footprint overlaps it."""

    ra: Ra
    dec: Dec
    radius: Radius
