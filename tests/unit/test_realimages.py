"""Tests of ``tests.realimages``: the pinned files are there and hold what its tables say."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ExifTags, Image, TiffImagePlugin, UnidentifiedImageError

from tests.fetch_images import PINS, sha256_file
from tests.realimages import (
    CAMERA_JPEGS,
    EXIF_TIFF,
    EXIF_TIFF_EXIF,
    METADATA,
    MULTI_FRAME,
    PILLOW_UNIDENTIFIED,
    SYNTHETIC_EXIF_JPEG,
    ZERO_BYTE,
    CameraExif,
    Carriers,
    real_images,
)

PINNED = {f"{pin.package}/{name}": digest for pin in PINS for name, digest in pin.files.items()}


@pytest.fixture(scope="module")
def root() -> Path:
    return real_images()


def _ratio(value: TiffImagePlugin.IFDRational | None) -> tuple[int, int] | None:
    return None if value is None else (int(value.numerator), int(value.denominator))


def _read_exif(path: Path) -> CameraExif:
    with Image.open(path) as im:
        exif = im.getexif()
        # A TIFF may keep the EXIF tags in IFD0 itself rather than behind an Exif pointer.
        tags = exif.get_ifd(ExifTags.IFD.Exif) or exif
        return CameraExif(
            make=exif.get(ExifTags.Base.Make),
            model=exif.get(ExifTags.Base.Model),
            exposure_time=_ratio(tags.get(ExifTags.Base.ExposureTime)),
            f_number=_ratio(tags.get(ExifTags.Base.FNumber)),
            orientation=exif.get(ExifTags.Base.Orientation),
            gps_tags=len(exif.get_ifd(ExifTags.IFD.GPSInfo)),
            size=im.size,
            mode=im.mode,
        )


@pytest.mark.parametrize(("rel", "digest"), sorted(PINNED.items()))
def test_every_pinned_file_is_there_with_its_digest(root: Path, rel: str, digest: str) -> None:
    assert sha256_file(root / rel) == digest


def test_the_catalogue_names_only_pinned_files() -> None:
    named = {*CAMERA_JPEGS, *METADATA, *MULTI_FRAME, *PILLOW_UNIDENTIFIED}
    named |= {EXIF_TIFF, SYNTHETIC_EXIF_JPEG, ZERO_BYTE}
    assert named <= PINNED.keys()


@pytest.mark.parametrize("rel", sorted(CAMERA_JPEGS))
def test_camera_jpegs_hold_the_recorded_exif(root: Path, rel: str) -> None:
    with Image.open(root / rel) as im:
        assert im.format == "JPEG"
    assert _read_exif(root / rel) == CAMERA_JPEGS[rel]


def test_the_exif_tiff_holds_the_recorded_exif(root: Path) -> None:
    with Image.open(root / EXIF_TIFF) as im:
        assert im.format == "TIFF"
    assert _read_exif(root / EXIF_TIFF) == EXIF_TIFF_EXIF


def test_the_synthetic_exif_jpeg_holds_out_of_range_values(root: Path) -> None:
    found = _read_exif(root / SYNTHETIC_EXIF_JPEG)
    assert (found.make, found.model, found.exposure_time) == ("Make", "XXX-XXX", (2**32 - 1, 1))


@pytest.mark.parametrize("rel", sorted(METADATA))
def test_metadata_carriers_are_as_recorded(root: Path, rel: str) -> None:
    with Image.open(root / rel) as im:
        xmp = im.info.get("xmp") or b""
        found = Carriers(
            exif="exif" in im.info,
            xmp=bool(xmp),
            icc=bool(im.info.get("icc_profile")),
            avm=b"xmlns:avm=" in (xmp.encode() if isinstance(xmp, str) else xmp),
        )
    assert found == METADATA[rel]


def test_the_zero_byte_file_is_empty(root: Path) -> None:
    assert (root / ZERO_BYTE).stat().st_size == 0


@pytest.mark.parametrize("rel", PILLOW_UNIDENTIFIED)
def test_pillow_cannot_identify_the_recorded_files(root: Path, rel: str) -> None:
    with pytest.raises(UnidentifiedImageError):
        Image.open(root / rel)


@pytest.mark.parametrize(("rel", "frames"), sorted(MULTI_FRAME.items()))
def test_multi_frame_files_have_the_recorded_frame_count(root: Path, rel: str, frames: int) -> None:
    with Image.open(root / rel) as im:
        assert im.n_frames == frames
