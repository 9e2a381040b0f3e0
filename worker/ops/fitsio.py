"""Reading FITS inputs for the astronomy operations, without reading more than they need.

Files are opened memory-mapped with lazy HDU loading; tile-compressed HDUs (RICE, GZIP,
HCOMPRESS, PLIO) are read through ``.section`` so only the tiles a cutout touches are
decompressed. Every failure of astropy on a user's file becomes a ``UsageError`` naming the
input. Cubes (3-D/4-D with two celestial axes) are reduced to one celestial plane by indexing
the other axes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCS, FITSFixedWarning

from worker.errors import UsageError
from worker.ops.api import InputFile, OpContext

_MAX_HDUS = 1000
_ASTROPY_ERRORS = (OSError, ValueError, VerifyError, KeyError, TypeError, IndexError)


@dataclass(frozen=True)
class ImagePlane:
    """One image HDU of a file, seen as a celestial image (possibly a cube)."""

    index: int
    """HDU number in the file (0 = primary)."""
    name: str
    hdu: Any
    """The astropy HDU (``PrimaryHDU``, ``ImageHDU`` or ``CompImageHDU``)."""
    wcs: WCS | None
    """The full WCS (all axes) when the header has a celestial one, else None."""
    shape: tuple[int, ...]
    """numpy order: ``(..., ny, nx)``."""

    @property
    def celestial(self) -> WCS:
        """The 2-D celestial WCS (SIP kept).

        Raises:
            UsageError: the HDU has no celestial WCS.
        """
        if self.wcs is None:
            raise UsageError(f"HDU {self.index} ({self.name}) has no celestial WCS")
        return self.wcs.celestial

    def section(self) -> Any:
        """Something to slice without reading the rest: ``.section`` (compressed or
        memory-mapped) — slicing it returns a numpy array of just that part."""
        return self.hdu.section


@contextmanager
def open_fits(item: InputFile, ctx: OpContext) -> Iterator[fits.HDUList]:
    """Open ``item`` memory-mapped, lazily; astropy's errors become usage errors.

    Raises:
        UsageError: the file is not a readable FITS file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(
                item.path, memmap=True, lazy_load_hdus=True, do_not_scale_image_data=False
            ) as hdul:
                yield hdul
    except UsageError:
        raise
    except _ASTROPY_ERRORS as e:
        raise UsageError(f"input {item.name!r}: cannot read the FITS file: {e}") from e


def image_planes(hdul: fits.HDUList, item: InputFile) -> list[ImagePlane]:
    """Every image HDU with data (two axes or more), in file order.

    Raises:
        UsageError: a header cannot be read.
    """
    planes = []
    try:
        for index, hdu in enumerate(hdul):
            if index >= _MAX_HDUS:
                break
            if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
                continue
            naxis = int(hdu.header.get("ZNAXIS", hdu.header.get("NAXIS", 0)) or 0)
            shape = tuple(int(n) for n in hdu.shape) if naxis >= 2 else ()
            if len(shape) < 2 or 0 in shape:
                continue
            planes.append(
                ImagePlane(
                    index=index,
                    name=str(hdu.name),
                    hdu=hdu,
                    wcs=_wcs(hdu.header, hdul),
                    shape=shape,
                )
            )
    except _ASTROPY_ERRORS as e:
        raise UsageError(f"input {item.name!r}: cannot read a FITS header: {e}") from e
    return planes


def science_plane(
    hdul: fits.HDUList, item: InputFile, hdu: int | str | None = None
) -> ImagePlane:
    """The HDU an operation works on: ``hdu`` (number or EXTNAME) when given, else the first
    image HDU with a celestial WCS, else the first image HDU.

    Raises:
        UsageError: no such HDU, or the file holds no image.
    """
    planes = image_planes(hdul, item)
    if hdu is not None:
        for plane in planes:
            if plane.index == hdu or (isinstance(hdu, str) and plane.name == hdu.upper()):
                return plane
        raise UsageError(f"input {item.name!r} has no image HDU {hdu!r}")
    if not planes:
        raise UsageError(f"input {item.name!r} holds no image HDU")
    return next((p for p in planes if p.wcs is not None), planes[0])


def plane_data(plane: ImagePlane, index: int = 0) -> np.ndarray:
    """The 2-D image of ``plane`` (for a cube: the ``index``-th plane along the other axes,
    counted in C order), as float32 with BLANK and scaling applied.

    Raises:
        UsageError: ``index`` is past the planes of the cube.
    """
    lead = plane.shape[:-2]
    count = int(np.prod(lead)) if lead else 1
    if not 0 <= index < count:
        raise UsageError(f"HDU {plane.index} has {count} planes; plane {index} does not exist")
    where = np.unravel_index(index, lead) if lead else ()
    data = plane.section()[(*where, slice(None), slice(None))]
    return as_float(data, plane.hdu.header)


def as_float(data: np.ndarray, header: fits.Header) -> np.ndarray:
    """float32 (float64 kept) with integer BLANK values as NaN."""
    blank = header.get("BLANK")
    out = data.astype(np.float64 if data.dtype == np.float64 else np.float32, copy=True)
    if blank is not None and np.issubdtype(data.dtype, np.integer):
        out[data == blank] = np.nan
    return out


def _wcs(header: fits.Header, hdul: fits.HDUList) -> WCS | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, hdul)
    except (ValueError, KeyError, TypeError, MemoryError):
        return None
    return wcs if wcs.has_celestial else None


def fits_output(path: Path) -> Path:
    """``path`` with a ``.fits`` suffix (outputs are written with this suffix)."""
    return path.with_suffix(".fits")
