"""Reading FITS inputs for the astronomy operations, without reading more than they need.

Files are opened with lazy HDU loading, memory-mapped where astropy can; tile-compressed
HDUs (RICE, GZIP, HCOMPRESS, PLIO) are read through ``.section`` so only the tiles a cutout
touches are decompressed. Every failure of astropy on a user's file becomes a
``UsageError`` naming the input. Cubes (3-D/4-D with two celestial axes) are reduced to one
celestial plane by indexing the other axes. ``stored`` gives the values as the file holds
them (no BSCALE/BZERO, BLANK kept) and ``header_cards`` the header's cards as written, for
operations that write FITS again (``cutout``, with ``write_images``).
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
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from worker.errors import UsageError
from worker.ops.api import InputFile, OpContext

_MAX_HDUS = 1000
_FITS_MAGIC = b"SIMPLE  ="
_STORED_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_ASTROPY_ERRORS = (OSError, ValueError, VerifyError, KeyError, TypeError, IndexError)
# astropy warns when a file is shorter than its headers say; reading the missing part fails
# then (a usage error here), and a warning turned into an error by a test's filter would
# leave the file open.
_TRUNCATED = "File may have been truncated"


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
def open_fits(item: InputFile, ctx: OpContext, *, raw: bool = False) -> Iterator[fits.HDUList]:
    """Open ``item`` lazily, memory-mapped where astropy can (its default: scaled integer data,
    BSCALE/BZERO/BLANK, is read into memory rather than refused); astropy's errors become
    usage errors.

    With ``raw``, image data (``.data``, ``.section``) comes as stored: integers without
    BSCALE/BZERO applied and BLANK values left in place, the header's scaling cards untouched.

    Raises:
        UsageError: the file is not a readable FITS file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            warnings.filterwarnings("ignore", _TRUNCATED, AstropyUserWarning)
            with fits.open(item.path, lazy_load_hdus=True, do_not_scale_image_data=raw) as hdul:
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
    return list(_planes(hdul, item))


def _planes(hdul: fits.HDUList, item: InputFile) -> Iterator[ImagePlane]:
    """The planes of ``image_planes`` one at a time: a caller that stops early does not pay
    for the WCS of the HDUs after (a few milliseconds each for an HST header)."""
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
            yield ImagePlane(
                index=index,
                name=str(hdu.name),
                hdu=hdu,
                wcs=_wcs(hdu.header, hdul),
                shape=shape,
            )
    except _ASTROPY_ERRORS as e:
        raise UsageError(f"input {item.name!r}: cannot read a FITS header: {e}") from e


def science_plane(hdul: fits.HDUList, item: InputFile, hdu: int | str | None = None) -> ImagePlane:
    """The HDU an operation works on: ``hdu`` (number or EXTNAME) when given, else the first
    image HDU with a celestial WCS, else the first image HDU.

    Raises:
        UsageError: no such HDU, or the file holds no image.
    """
    first = None
    for plane in _planes(hdul, item):
        if hdu is None:
            if plane.wcs is not None:
                return plane
        elif plane.index == hdu or (isinstance(hdu, str) and plane.name == hdu.upper()):
            return plane
        first = first or plane
    if hdu is not None:
        raise UsageError(f"input {item.name!r} has no image HDU {hdu!r}")
    if first is None:
        raise UsageError(f"input {item.name!r} holds no image HDU")
    return first


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


def stored(plane: ImagePlane, item: InputFile) -> Any:
    """Something to slice for the values as the file stores them (no BSCALE/BZERO applied,
    BLANK kept, big-endian): a read-only memory map of a plain HDU's data, or the ``.section``
    of a compressed HDU (which decompresses only the tiles a slice touches) or of a file
    astropy decompresses whole (gzip). A section gives stored values only when the file was
    opened with ``open_fits(..., raw=True)``.

    Raises:
        UsageError: the file is shorter than its headers say, or the BITPIX is not valid.
    """
    hdu = plane.hdu
    if isinstance(hdu, fits.CompImageHDU):
        return hdu.section
    bitpix = hdu.header.get("BITPIX")
    if bitpix not in _STORED_DTYPES:
        raise UsageError(f"input {item.name!r}: HDU {plane.index} has BITPIX {bitpix!r}")
    if not _plain(item):  # a gzip'd file astropy decompresses: no memory map
        return hdu.section
    try:
        return np.memmap(
            item.path,
            dtype=np.dtype(_STORED_DTYPES[bitpix]),
            mode="r",
            offset=int(hdu.fileinfo()["datLoc"]),
            shape=plane.shape,
        )
    except (OSError, ValueError) as e:
        raise UsageError(f"input {item.name!r}: HDU {plane.index} is truncated: {e}") from e


def header_cards(hdu: Any, item: InputFile) -> list[str]:
    """The 80-character cards of ``hdu``'s header without END, as the file holds them (read
    from the file for a plain HDU, so nothing is parsed; a compressed HDU's image header is
    formatted by astropy). Copying cards this way keeps every value exactly as written.

    Raises:
        UsageError: the header cannot be read.
    """
    try:
        text = None
        if not isinstance(hdu, fits.CompImageHDU) and _plain(item):
            info = hdu.fileinfo()
            with open(item.path, "rb") as f:
                f.seek(int(info["hdrLoc"]))
                raw = f.read(int(info["datLoc"]) - int(info["hdrLoc"]))
            if raw.isascii():
                text = raw.decode("ascii")
        if text is None:
            text = hdu.header.tostring(endcard=False, padding=False)
    except (OSError, ValueError, VerifyError) as e:
        raise UsageError(f"input {item.name!r}: cannot read a FITS header: {e}") from e
    cards = []
    for start in range(0, len(text), 80):
        card = text[start : start + 80]
        if card[:8] == "END     ":
            break
        cards.append(card.ljust(80))
    while cards and not cards[-1].strip():
        cards.pop()  # the blank cards that pad a header to its last block
    return cards


def write_images(
    path: Path, primary: list[str], images: list[tuple[list[str], np.ndarray]]
) -> None:
    """Write a FITS file: a primary HDU of ``primary`` cards (no data), then one image
    extension per ``(cards, data)``. The cards are written as given, after END and padding
    are added (the caller puts the structural cards first); data is written big-endian."""
    with path.open("wb") as f:
        for cards, data in [(primary, None), *images]:
            text = "".join(cards) + "END".ljust(80)
            f.write(text.ljust(-(-len(text) // 2880) * 2880).encode("ascii"))
            if data is not None:
                raw = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">"))
                f.write(raw.tobytes())
                f.write(b"\0" * (-raw.nbytes % 2880))


def _plain(item: InputFile) -> bool:
    """Whether the file is FITS as is (not gzip'd or otherwise wrapped): offsets astropy
    reports are offsets in the file."""
    with open(item.path, "rb") as f:
        return f.read(len(_FITS_MAGIC)) == _FITS_MAGIC


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
