"""EXIF read by a small bounded TIFF reader: every offset and count checked, IFDs of at most
1,000 entries, loops cut; a bad tag or IFD is skipped and reported in ``issues``, never raised.

Used by the ``metadata`` operation (``worker.ops.metadata``); imports no pixel library.
"""

from __future__ import annotations

import math
import mmap
import struct
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from PIL import ExifTags

TagValue = str | int | float | list[str | int | float]


class Doc(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Output Structs: fields left at their default (None) are not written."""


class GpsInfo(Doc):
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    timestamp: str | None = None


class ExifInfo(Doc):
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    lens_make: str | None = None
    exposure_time: float | None = None
    exposure_time_text: str | None = None
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None
    datetime: str | None = None
    datetime_original: str | None = None
    datetime_digitized: str | None = None
    offset_time: str | None = None
    offset_time_original: str | None = None
    offset_time_digitized: str | None = None
    software: str | None = None
    orientation: int | None = None
    gps: GpsInfo | None = None
    tags: dict[str, TagValue] | None = None
    omitted: dict[str, int] | None = None


# -- EXIF ------------------------------------------------------------------------------------

_TIFF_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1),
    7: ("s", 1), 8: ("h", 2), 9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8),
    13: ("I", 4),
}  # fmt: skip
_ASCII, _UNDEFINED, _RATIONAL, _SRATIONAL = 2, 7, 5, 10
_MAX_ENTRIES = 1000  # per IFD; cameras write a few dozen
_MAX_TEXT = 4096  # longer strings are listed in "omitted" with their size
_MAX_ITEMS = 16  # longer arrays too
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_ORIENTATION = 0x0112
_NAMED = {  # text tags reported as fields of their own
    0x010F: "make", 0x0110: "model", 0xA434: "lens", 0xA433: "lens_make",
    0x0132: "datetime", 0x9003: "datetime_original", 0x9004: "datetime_digitized",
    0x9010: "offset_time", 0x9011: "offset_time_original", 0x9012: "offset_time_digitized",
    0x0131: "software",
}  # fmt: skip
# Left out of "tags": reported as fields, pointers, or a TIFF file's layout (not the photo's).
_NOT_TAGS = {
    *_NAMED, _ORIENTATION, _EXIF_IFD, _GPS_IFD, _INTEROP_IFD, 0x829A, 0x829D, 0x8827,
    0x920A, 0x02BC, 0x8773, 256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 320,
    322, 323, 324, 325, 338, 339, 347, 513, 514, 530, 531, 532,
}  # fmt: skip
_GPS_USED = {1, 2, 3, 4, 5, 6, 7, 29}
_EXIF_PREFIX = b"Exif\0\0"


class _BadExifError(ValueError):
    """The EXIF block has no usable TIFF header."""


class _Entry(NamedTuple):
    kind: int
    items: int
    at: int
    """Where the value starts in the stream (in the entry itself when it fits in 4 bytes)."""
    size: int


class _TiffStream:
    """A bounded reader of classic TIFF structures over bytes or a memory map.

    Every problem met is appended to ``issues`` and the offending entry or IFD skipped.
    """

    def __init__(self, data: bytes | mmap.mmap, issues: list[str]) -> None:
        self.data, self.issues, self.seen = data, issues, set[int]()
        head = data[:8]
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise _BadExifError("no TIFF header (II or MM)")
        self.order = "<" if head[:2] == b"II" else ">"
        magic, self.first = struct.unpack(self.order + "HI", head[2:8])
        if magic != 42:
            raise _BadExifError(f"TIFF magic number {magic}, not 42 (BigTIFF is not read)")

    def ifd(self, offset: int, where: str) -> dict[int, _Entry]:
        """Return the entries of the IFD at ``offset`` (empty if it cannot be read)."""
        size = len(self.data)
        if offset in self.seen:
            self.issues.append(f"EXIF: the {where} IFD at byte {offset} was already read")
            return {}
        self.seen.add(offset)
        if not 8 <= offset <= size - 2:
            self.issues.append(f"EXIF: the {where} IFD offset {offset} is outside the {size} bytes")
            return {}
        (count,) = struct.unpack(self.order + "H", self.data[offset : offset + 2])
        fits_in = (size - offset - 2) // 12
        if count > fits_in:
            self.issues.append(
                f"EXIF: the {where} IFD claims {count} entries, {fits_in} are read (truncated)"
            )
            count = fits_in
        if count > _MAX_ENTRIES:
            self.issues.append(f"EXIF: the {where} IFD has {count} entries: {_MAX_ENTRIES} read")
            count = _MAX_ENTRIES
        entries: dict[int, _Entry] = {}
        for at in range(offset + 2, offset + 2 + 12 * count, 12):
            tag, kind, n = struct.unpack(self.order + "HHI", self.data[at : at + 8])
            if kind not in _TIFF_TYPES or tag in entries:
                continue
            length = n * _TIFF_TYPES[kind][1]
            value_at = at + 8
            if length > 4:
                (value_at,) = struct.unpack(self.order + "I", self.data[at + 8 : at + 12])
            if value_at + length > size:
                self.issues.append(
                    f"EXIF: {where} tag {_tag_name(tag, where == 'GPS')} claims {length} bytes"
                    f" at byte {value_at}, past the end of the {size} bytes: skipped"
                )
                continue
            entries[tag] = _Entry(kind, n, value_at, length)
        return entries

    def pointer(self, entries: dict[int, _Entry], tag: int, where: str) -> dict[int, _Entry]:
        """Follow a sub-IFD pointer tag (Exif, GPS) of ``entries``, if there is one."""
        if tag not in entries:
            return {}
        values = self.numbers(entries[tag])
        if not values or not isinstance(values[0], int) or len(values) != 1:
            self.issues.append(f"EXIF: the {where} IFD pointer is not an offset")
            return {}
        return self.ifd(values[0], where)

    def text(self, e: _Entry) -> str | None:
        """An ASCII value (or printable UNDEFINED bytes) as text; None if it is not text."""
        if e.kind not in (_ASCII, _UNDEFINED) or e.size > _MAX_TEXT:
            return None
        raw = bytes(self.data[e.at : e.at + e.size])
        if e.kind == _UNDEFINED:
            raw = raw.removeprefix(b"ASCII\0\0\0")  # UserComment's character code
            if not raw.rstrip(b"\0").isascii() or not raw.rstrip(b"\0").decode().isprintable():
                return None
        raw = raw.split(b"\0")[0]
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        return text.strip()

    def numbers(self, e: _Entry) -> list[int | float] | None:
        """A numeric value as a list (rationals as floats); None if not numeric or too long."""
        if e.kind in (_ASCII, _UNDEFINED) or e.items > _MAX_ITEMS or e.items == 0:
            return None
        fmt = _TIFF_TYPES[e.kind][0]
        values = struct.unpack(self.order + fmt * e.items, self.data[e.at : e.at + e.size])
        if e.kind in (_RATIONAL, _SRATIONAL):
            pairs = zip(values[::2], values[1::2], strict=True)
            return [n / d if d else math.nan for n, d in pairs]
        return list(values)

    def rational(self, e: _Entry | None) -> Fraction | None:
        if e is None or e.kind not in (_RATIONAL, _SRATIONAL) or e.items < 1:
            return None
        fmt = _TIFF_TYPES[e.kind][0]
        n, d = struct.unpack(self.order + fmt, self.data[e.at : e.at + 8])
        return Fraction(n, d) if d else None


def _tag_name(tag: int, gps: bool = False) -> str:
    name = (ExifTags.GPSTAGS if gps else ExifTags.TAGS).get(tag)
    return name or f"0x{tag:04X}"


def read_exif(block: bytes, issues: list[str]) -> ExifInfo | None:
    """Read an EXIF block (TIFF bytes, with or without the ``Exif\\0\\0`` prefix)."""
    return _exif_from(block.removeprefix(_EXIF_PREFIX), issues)


def read_tiff_file_exif(path: Path, issues: list[str]) -> ExifInfo | None:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _exif_from(data, issues)


def _exif_from(data: bytes | mmap.mmap, issues: list[str]) -> ExifInfo | None:
    try:
        stream = _TiffStream(data, issues)
    except _BadExifError as e:
        issues.append(f"EXIF: {e}: not read")
        return None
    ifd0 = stream.ifd(stream.first, "IFD0")
    exif_ifd = stream.pointer(ifd0, _EXIF_IFD, "Exif")
    gps_ifd = stream.pointer(ifd0, _GPS_IFD, "GPS")
    tags = exif_ifd | ifd0  # IFD0 wins a tag both hold
    fields: dict[str, Any] = {}
    for tag, name in _NAMED.items():
        if tag in tags:
            fields[name] = stream.text(tags[tag]) or None
    exposure = stream.rational(tags.get(0x829A))
    if exposure is not None and exposure >= 0:
        fields["exposure_time"] = float(exposure)
        fields["exposure_time_text"] = _exposure_text(exposure)
    for name, tag in (("f_number", 0x829D), ("focal_length", 0x920A)):
        value = stream.rational(tags.get(tag))
        fields[name] = float(value) if value is not None else None
    fields["iso"] = _first_int(stream, tags.get(0x8827) or tags.get(0x8833))
    orientation = _first_int(stream, tags.get(_ORIENTATION))
    if orientation is not None and not 1 <= orientation <= 8:
        issues.append(f"EXIF: Orientation {orientation} is not 1-8: readers ignore it")
    rest, omitted = _other_tags(stream, tags, gps_ifd)
    return ExifInfo(
        **fields,
        orientation=orientation,
        gps=_gps(stream, gps_ifd, issues),
        tags=rest or None,
        omitted=omitted or None,
    )


def _first_int(stream: _TiffStream, e: _Entry | None) -> int | None:
    values = stream.numbers(e) if e is not None else None
    return values[0] if values and isinstance(values[0], int) else None


def _exposure_text(seconds: Fraction) -> str:
    if seconds >= 1 or seconds == 0:
        return f"{float(seconds):g}"
    inverse = 1 / seconds
    if abs(inverse - round(inverse)) <= inverse / 100:  # 1/125 rather than 0.008
        return f"1/{round(inverse)}"
    return f"{float(seconds):g}"


def _other_tags(
    stream: _TiffStream, tags: dict[int, _Entry], gps: dict[int, _Entry]
) -> tuple[dict[str, TagValue], dict[str, int]]:
    """Name and read the tags not reported elsewhere; binary or long values by size only."""
    rest: dict[str, TagValue] = {}
    omitted: dict[str, int] = {}
    pending = [(_tag_name(t), e) for t, e in sorted(tags.items()) if t not in _NOT_TAGS]
    pending += [(_tag_name(t, True), e) for t, e in sorted(gps.items()) if t not in _GPS_USED]
    for name, e in pending:
        value: TagValue | None = stream.text(e)
        if value == "":
            continue
        if value is None:
            numbers = stream.numbers(e)
            if numbers and all(math.isfinite(v) for v in numbers):
                value = numbers[0] if len(numbers) == 1 else list(numbers)
        if value is None:
            omitted[name] = e.size
        else:
            rest.setdefault(name, value)
    return rest, omitted


def _gps(stream: _TiffStream, gps: dict[int, _Entry], issues: list[str]) -> GpsInfo | None:
    if not gps:
        return None
    info = GpsInfo()
    for axis, ref_tag, tag, negative, limit in (
        ("latitude", 1, 2, "S", 90), ("longitude", 3, 4, "W", 180),
    ):  # fmt: skip
        degrees = _degrees(stream, gps.get(tag))
        if degrees is None:
            continue
        ref = stream.text(gps[ref_tag]) if ref_tag in gps else None
        value = -degrees if (ref or "").upper().startswith(negative) else degrees
        if abs(value) > limit:
            issues.append(f"EXIF: GPS {axis} {value} is out of range: ignored")
        else:
            setattr(info, axis, value)
    altitude = stream.rational(gps.get(6))
    if altitude is not None:
        below = _first_int(stream, gps.get(5)) == 1
        info.altitude = -float(altitude) if below else float(altitude)
    info.timestamp = _gps_time(stream, gps, issues)
    return None if info == GpsInfo() else info


def _degrees(stream: _TiffStream, e: _Entry | None) -> float | None:
    """Degrees from a GPS (degrees, minutes, seconds) rational triple."""
    if e is None or e.kind != _RATIONAL:
        return None
    parts = stream.numbers(e)
    if not parts or not all(math.isfinite(p) for p in parts):
        return None
    parts = [*parts[:3], 0.0, 0.0][:3]
    return float(parts[0] + parts[1] / 60 + parts[2] / 3600)


def _gps_time(stream: _TiffStream, gps: dict[int, _Entry], issues: list[str]) -> str | None:
    """GPSDateStamp and GPSTimeStamp as ISO 8601 UTC (the date or the time alone if only one
    is there); a value that is not a date or a time of day is ignored."""
    date = stream.text(gps[29]) if 29 in gps else None
    if date:
        try:
            date = datetime.strptime(date, "%Y:%m:%d").date().isoformat()
        except ValueError:
            issues.append(f"EXIF: GPSDateStamp {date!r} is not a date: ignored")
            date = None
    time = None
    if 7 in gps:
        hms = stream.numbers(gps[7]) if gps[7].kind == _RATIONAL else None
        if hms and len(hms) == 3 and 0 <= hms[0] < 24 and 0 <= hms[1] < 60 and 0 <= hms[2] < 61:
            h, m, s = hms
            time = f"{int(h):02d}:{int(m):02d}:{s:06.3f}".removesuffix(".000")
        else:
            issues.append(f"EXIF: GPSTimeStamp {hms} is not a time of day: ignored")
    if date and time:
        return f"{date}T{time}Z"
    return time or date
