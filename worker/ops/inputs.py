"""Header checks every operation runs on an input file before reading it (no pixel library).

The bytes decide the type (``pixfleet.sniff``), and the limits refuse bombs, strips and
over-long animations before anything is allocated; the sniffer's errors become usage errors
that name the input.
"""

from __future__ import annotations

from contracts.settings import LimitsSettings
from pixfleet.sniff import (
    CorruptImageError,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    check_complete,
    inspect_image,
)
from worker.errors import UsageError
from worker.ops.api import InputFile


def check_input(item: InputFile, limits: LimitsSettings, *, complete: bool = True) -> ImageInfo:
    """Read an input's headers within ``limits``; with ``complete``, also refuse truncation.

    Raises:
        UsageError: not a supported image, a corrupt header, truncated, or over a limit.
    """
    try:
        info = inspect_image(
            item.path,
            max_pixels=limits.max_pixels,
            max_side=limits.max_side,
            max_frames=limits.max_frames,
        )
    except NotAnImageError as e:
        raise UsageError(f"input {item.name!r} is not a supported image: {e}") from e
    except CorruptImageError as e:
        raise UsageError(f"input {item.name!r} has a corrupt header: {e}") from e
    except ImageTooLargeError as e:
        raise UsageError(f"input {item.name!r} is too large: {e}") from e
    if complete:
        try:
            check_complete(item.path, info.media_type)
        except CorruptImageError as e:
            raise UsageError(f"input {item.name!r} is corrupt or truncated: {e}") from e
    return info
