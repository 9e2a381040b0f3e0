"""Display scaling shared by ``preview``, ``composite`` and ``mosaic``: limits, stretches,
colour maps.

An image becomes display levels in two steps, as ``astropy.visualization`` does it: ``limits``
picks the data values shown as black and white (``minmax``, ``percentile`` or ``zscale``),
then ``apply`` maps ``[vmin, vmax]`` onto [0, 1] (``ManualInterval`` with clipping) and
stretches it (``LinearStretch``, ``SqrtStretch``, ``LogStretch(a)``, ``AsinhStretch(a)``,
``SinhStretch(a)``, ``HistEqStretch``). The results equal astropy's to float32 precision
(``tests/unit/test_preview.py`` checks each), but are computed in float32, in place, in a few
passes (astropy copies to float64 for several of them). NaNs stay NaN through the stretch:
the caller decides what they look like (transparent, a colour, black). ``levels`` and
``colormap`` turn [0, 1] into 8-bit gray or OpenCV colour maps (BGR).

Runs in worker children (numpy, OpenCV, astropy for ``zscale``); never imports litestar.
"""

from __future__ import annotations

import cv2
import numpy as np
from astropy.visualization import ZScaleInterval

from contracts.astro import Colormap, Scaling

DEFAULT_A = {"log": 1000.0, "asinh": 0.1, "sinh": 1.0 / 3.0}
"""astropy's defaults for the stretch parameter ``a``."""

COLORMAPS: dict[str, int] = {
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "inferno": cv2.COLORMAP_INFERNO,
    "plasma": cv2.COLORMAP_PLASMA,
    "cividis": cv2.COLORMAP_CIVIDIS,
    "turbo": cv2.COLORMAP_TURBO,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
    "cool": cv2.COLORMAP_COOL,
    "jet": cv2.COLORMAP_JET,
    "twilight": cv2.COLORMAP_TWILIGHT,
}
_ZSCALE_SAMPLES = 1000  # ZScaleInterval's default n_samples


# -- limits ------------------------------------------------------------------------------


def limits(data: np.ndarray, scaling: Scaling) -> tuple[float, float]:
    """The data values shown as black and white: ``(vmin, vmax)`` by ``scaling.limits``.

    ``minmax`` is the finite range (astropy's ``MinMaxInterval``); ``percentile`` the
    ``low`` and ``high`` percentiles of the finite values (``AsymmetricPercentileInterval``,
    every value used); ``zscale`` equals ``ZScaleInterval().get_limits(data)`` exactly: the
    1000 values astropy would sample are picked here without copying the image, and astropy
    fits them. An image without a finite value gives ``(0.0, 0.0)`` (everything stays NaN).
    """
    flat = data.reshape(-1)
    if scaling.limits == "minmax":
        lo, hi = float(np.fmin.reduce(flat)), float(np.fmax.reduce(flat))
        if np.isfinite(lo) and np.isfinite(hi):
            return lo, hi
        finite = _finite(flat)
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    finite = _finite(flat)
    if not finite.size:
        return 0.0, 0.0
    if scaling.limits == "percentile":
        if finite is flat:
            finite = flat.copy()  # np.percentile may then partition in place
        lo, hi = np.percentile(finite, (scaling.low, scaling.high), overwrite_input=True)
        return float(lo), float(hi)
    return _zscale(finite)


def _finite(flat: np.ndarray) -> np.ndarray:
    """``flat`` itself when every value is finite (the usual case), else a copy of the
    finite values in order."""
    if np.isfinite(np.add.reduce(flat, dtype=np.float64)):
        return flat  # a NaN or an infinity would have made the sum non-finite
    finite: np.ndarray = flat[np.isfinite(flat)]
    return finite


def _zscale(finite: np.ndarray) -> tuple[float, float]:
    # ZScaleInterval samples values[::stride][:n_samples] of the finite values with
    # stride = int(max(1, size / n_samples)); given exactly those samples it takes them all
    # (stride 1), so this equals get_limits(whole image) without its full copy.
    stride = int(max(1.0, finite.size / _ZSCALE_SAMPLES))
    samples = np.array(finite[::stride][:_ZSCALE_SAMPLES])
    lo, hi = ZScaleInterval(n_samples=_ZSCALE_SAMPLES).get_limits(samples)
    return float(lo), float(hi)


# -- stretches ---------------------------------------------------------------------------


def apply(
    data: np.ndarray,
    scaling: Scaling,
    vmin: float,
    vmax: float,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``data`` mapped to [0, 1] by ``[vmin, vmax]`` (clipped), then stretched: float32.

    Equals astropy's ``stretch(ManualInterval(vmin, vmax)(data))`` with the stretch named by
    ``scaling.stretch`` and parameter ``scaling.a`` (astropy's default when None);
    ``histeq`` is ``HistEqStretch(x)(x)`` of the normalised image ``x`` (the equalisation
    of the pixels within the limits). NaNs stay NaN. ``out`` (float32, the shape of
    ``data``, may be ``data`` itself) receives the result; a float32 array is allocated
    otherwise.
    """
    if out is None:
        out = np.empty(data.shape, np.float32)
    a = scaling.a if scaling.a is not None else DEFAULT_A.get(scaling.stretch, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, huge values: clipped
        np.subtract(data, vmin, out=out, casting="same_kind")
        if vmax != vmin:
            np.true_divide(out, vmax - vmin, out=out)
        np.clip(out, 0.0, 1.0, out=out)
        match scaling.stretch:
            case "sqrt":
                np.sqrt(out, out=out)
            case "log":
                np.multiply(out, a, out=out)
                np.add(out, 1.0, out=out)
                np.log(out, out=out)
                np.true_divide(out, float(np.log(a + 1.0)), out=out)
            case "asinh":
                np.true_divide(out, a, out=out)
                np.arcsinh(out, out=out)
                np.true_divide(out, float(np.arcsinh(1.0 / a)), out=out)
            case "sinh":
                np.true_divide(out, a, out=out)
                np.sinh(out, out=out)
                np.true_divide(out, float(np.sinh(1.0 / a)), out=out)
            case "histeq":
                _equalise(out)
        if scaling.stretch in ("log", "asinh", "sinh"):
            # float32 rounding of the transcendental functions can land an ulp outside [0, 1]
            np.clip(out, 0.0, 1.0, out=out)
    return out


def _equalise(x: np.ndarray) -> None:
    """``HistEqStretch(x)(x)`` in place, for ``x`` already in [0, 1] (NaN allowed).

    astropy interpolates each pixel in the sorted values (``np.interp``): a binary search per
    pixel in random order, about 30 s for a 4096^2 image. Here the values are sorted once
    with their positions (value bits and index packed in one uint64: a vectorised sort), and
    a value present in the table gets what ``np.interp`` gives it: the table position of the
    last copy of itself over ``n - 1`` (0.3 s).
    """
    flat = x.reshape(-1)  # a view, unless x is not contiguous
    _equalise_flat(flat)
    if not np.shares_memory(flat, x):
        x[...] = flat.reshape(x.shape)


def _equalise_flat(flat: np.ndarray) -> None:
    finite = ~np.isnan(flat)
    values = np.add(flat[finite], 0.0, dtype=np.float32)  # -0.0 -> 0.0: bits sort as values
    n = values.size
    if n == 0:
        return
    keys = values.view(np.uint32).astype(np.uint64)
    keys <<= 32
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    table = (keys >> 32).astype(np.uint32).view(np.float32)
    where = (keys & 0xFFFFFFFF).astype(np.intp)
    del keys
    lo, hi = float(table[0]), float(table[-1])
    if lo == hi:  # one value: astropy divides by zero; show it black
        flat[finite] = 0.0
        return
    ranks = np.empty(n, np.float32)
    if lo == 0.0 and hi == 1.0:  # the limits clip both ends: the table is the values
        ends = np.flatnonzero(table[1:] != table[:-1])
        run = np.zeros(n, np.intp)
        run[ends + 1] = 1
        np.cumsum(run, out=run)
        last = np.append(ends, n - 1)[run]
        ranks[where] = last / (n - 1)
    else:  # astropy rescales its table to [0, 1]; the values are then not in it
        xp = (table - table[0]) / (table[-1] - table[0])
        ranks[where] = np.interp(table, xp, np.linspace(0.0, 1.0, n))
    flat[finite] = ranks


def scale(data: np.ndarray, scaling: Scaling, *, out: np.ndarray | None = None) -> np.ndarray:
    """``apply(data, scaling, *limits(data, scaling))``."""
    return apply(data, scaling, *limits(data, scaling), out=out)


# -- levels and colours ------------------------------------------------------------------


def levels(values: np.ndarray, nan: np.ndarray | None = None) -> np.ndarray:
    """[0, 1] as 8-bit levels (rounded); NaN (or ``nan``, their mask) becomes 0."""
    if nan is None:
        nan = np.isnan(values)
    scaled: np.ndarray = np.multiply(values, 255.0, dtype=np.float32)
    scaled[nan] = 0.0
    scaled += 0.5
    return scaled.astype(np.uint8)


def colormap(levels8: np.ndarray, name: Colormap) -> np.ndarray:
    """8-bit levels through a colour map: BGR, or the levels themselves for ``gray``."""
    if name == "gray":
        return levels8
    return np.asarray(cv2.applyColorMap(levels8, COLORMAPS[name]))


def rgba(value: str) -> tuple[int, int, int, int]:
    """``#rrggbb[aa]`` as 0-255 integers ``(r, g, b, a)`` (alpha 255 when absent)."""
    r, g, b = (int(value[i : i + 2], 16) for i in (1, 3, 5))
    return r, g, b, int(value[7:9], 16) if len(value) == 9 else 255
