"""The ``model`` operation: run a registered image-to-image ONNX model with OpenCV's dnn module.

Runs in a worker child and imports OpenCV and numpy. The runtime fetched the model file and
put a ``pixfleet.registry.models.LocalModel`` in ``ctx.resources``; nothing is downloaded here.

The image is processed in square tiles of the model's registered ``tile`` side, each reading
``overlap`` pixels of context beyond the part of the output it writes, so only the tile
centres reach the output: with an overlap at least the model's receptive-field radius the
result equals a single run over the whole image, and memory stays at a few tile-sized float
buffers plus the output (kept in the input's sample type). Every tile has the same shape
(windows at the right and bottom edges are shifted inwards), so OpenCV sets the net up once.

Colour handling: an ``rgb``/``bgr`` model gets three channels (a gray image is replicated and
its result turned back to gray); a ``gray`` model gets the luma (YCrCb) of a colour image,
whose chroma is resized to match. Alpha is not given to the model: it is resized (cubic)
when the model upscales. Loaded nets are kept per SHA-256 (a child serves many jobs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import cv2
import numpy as np
from cv2.typing import MatLike

from contracts.ops import Model
from pixfleet.registry.models import LocalModel, resource_key
from worker.errors import UsageError
from worker.ops.api import Item, OpContext, Picture
from worker.ops.imaging import check_output, load, max_sample

_MAX_NETS = 4
"""Nets kept loaded per child; the least recently used is dropped beyond this."""
_NETS: OrderedDict[str, cv2.dnn.Net] = OrderedDict()

Span = tuple[int, int, int, int]
"""Along one axis: window start and end (what the model reads), centre start and end (what
it writes)."""


def run_model(op: Model, item: Item, ctx: OpContext) -> Picture:
    """Run model ``op.name`` over the image, tile by tile; return the result at the model's scale.

    Raises:
        UsageError: the model is not registered (no resource), OpenCV cannot load or run it,
            its output is not the input times its scale, the result would exceed
            ``max_output_pixels``, or the input cannot be decoded.
    """
    model = _local_model(op, ctx)
    picture = load(item, ctx)
    pixels = picture.pixels
    if pixels.ndim == 3 and pixels.shape[2] not in (3, 4):
        raise UsageError(f"the model cannot take an image of {pixels.shape[2]} channels")
    height, width = pixels.shape[:2]
    s = model.scale
    check_output(width * s, height * s, ctx, f"the output of model {model.name!r}")
    net = _net(model)
    colour = pixels[:, :, :3] if pixels.ndim == 3 else pixels
    out = np.empty((height * s, width * s, *pixels.shape[2:]), pixels.dtype)
    ys = spans(height, model.tile, model.overlap)
    xs = spans(width, model.tile, model.overlap)
    total = len(ys) * len(xs)
    for done, (y, x) in enumerate(_tiles(ys, xs), 1):
        result = _forward(net, model, colour[y[0] : y[1], x[0] : x[1]])
        dy, dx = (y[2] - y[0]) * s, (x[2] - x[0]) * s
        part = result[dy : dy + (y[3] - y[2]) * s, dx : dx + (x[3] - x[2]) * s]
        target = out[y[2] * s : y[3] * s, x[2] * s : x[3] * s]
        if out.ndim == 3:
            target[:, :, :3] = part
        else:
            target[:] = part
        ctx.progress(done / total, f"tile {done} of {total}")
    if out.ndim == 3 and out.shape[2] == 4:
        alpha = pixels[:, :, 3]
        if s > 1:
            alpha = cv2.resize(alpha, (width * s, height * s), interpolation=cv2.INTER_CUBIC)
            if alpha.dtype == np.float32:  # integer types saturate; floats overshoot
                np.clip(alpha, 0.0, 1.0, out=alpha)
        out[:, :, 3] = alpha
    return picture.with_pixels(out)


def spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Cut ``[0, length)`` into tile windows whose centres partition it.

    Each window is ``tile`` long (the whole axis when it is no longer than a tile, or when
    ``tile`` is 0) and its centre keeps ``overlap`` pixels of context on each side that is not
    the image border. The last window is shifted inwards to stay inside the image.
    """
    if tile == 0 or length <= tile:
        return [(0, length, 0, length)]
    if 2 * overlap >= tile:
        raise ValueError("overlap must be less than half the tile")
    out: list[Span] = []
    start = 0
    while start < length:
        w0 = min(max(start - overlap, 0), length - tile)
        w1 = w0 + tile
        end = length if w1 == length else w1 - overlap
        out.append((w0, w1, start, end))
        start = end
    return out


def _local_model(op: Model, ctx: OpContext) -> LocalModel:
    model = ctx.resources.get(resource_key(op.name))
    if not isinstance(model, LocalModel):
        raise UsageError(
            f"model {op.name!r} is not registered",
            f"no LocalModel in ctx.resources[{resource_key(op.name)!r}]",
        )
    return model


def _net(model: LocalModel) -> cv2.dnn.Net:
    net = _NETS.get(model.sha256)
    if net is not None:
        _NETS.move_to_end(model.sha256)
        return net
    try:
        net = cv2.dnn.readNetFromONNX(str(model.path))
    except cv2.error as e:
        raise UsageError(
            f"model {model.name!r} cannot be loaded by OpenCV's dnn module",
            f"{model.path}: {e}",
        ) from e
    if net.empty():
        raise UsageError(f"model {model.name!r} cannot be loaded by OpenCV's dnn module")
    _NETS[model.sha256] = net
    while len(_NETS) > _MAX_NETS:
        _NETS.popitem(last=False)
    return net


def _forward(net: cv2.dnn.Net, model: LocalModel, tile: MatLike) -> MatLike:
    """Run the model on one tile of colour pixels; return the result in the tile's type."""
    top = max_sample(tile)
    x: MatLike = tile.astype(np.float32)
    x *= 1.0 / top
    chroma = None
    if model.channels == "gray":
        if x.ndim == 3:
            ycc = cv2.cvtColor(x, cv2.COLOR_BGR2YCrCb)
            x, chroma = ycc[:, :, 0], ycc[:, :, 1:]
        planes = x[None]
    else:
        if x.ndim == 2:
            x = cv2.cvtColor(x, cv2.COLOR_GRAY2BGR)
        if model.channels == "rgb":
            x = x[:, :, ::-1]
        planes = x.transpose(2, 0, 1)
    blob = np.ascontiguousarray(planes[None], dtype=np.float32)
    mean = _mean(model)
    if model.input_range != 1:
        blob *= model.input_range
    if mean is not None:
        blob -= mean
    y = _run(net, model, blob)
    if mean is not None:
        y += mean * (model.output_range / model.input_range)
    if model.output_range != 1:
        y *= 1.0 / model.output_range
    return _to_pixels(y, model, tile, chroma, top)


def _run(net: cv2.dnn.Net, model: LocalModel, blob: np.ndarray) -> np.ndarray:
    _, c, h, w = blob.shape
    try:
        net.setInput(blob)
        y = net.forward()
    except cv2.error as e:
        raise UsageError(
            f"model {model.name!r} failed on a {w} x {h} tile of {c} channels", str(e)
        ) from e
    s = model.scale
    expected = (1, c, h * s, w * s)
    if tuple(y.shape) != expected:
        raise UsageError(
            f"model {model.name!r} turned a {c} x {h} x {w} input into"
            f" {' x '.join(map(str, y.shape[1:]))}; registered with channels"
            f" {model.channels!r} and scale {s}, it should give {c} x {h * s} x {w * s}"
        )
    return np.asarray(y, dtype=np.float32)


def _mean(model: LocalModel) -> np.ndarray | None:
    if model.mean is None:
        return None
    return np.asarray(model.mean, np.float32).reshape(1, -1, 1, 1)


def _to_pixels(
    y: np.ndarray, model: LocalModel, tile: MatLike, chroma: MatLike | None, top: float
) -> MatLike:
    """The model's output (1, C, h', w') in 0..1 back to the tile's layout and sample type."""
    out: MatLike
    if model.channels == "gray":
        out = y[0, 0]
        if chroma is not None:
            if model.scale > 1:
                size = (out.shape[1], out.shape[0])
                chroma = cv2.resize(chroma, size, interpolation=cv2.INTER_CUBIC)
            out = cv2.cvtColor(cv2.merge([out, *cv2.split(chroma)]), cv2.COLOR_YCrCb2BGR)
    else:
        out = y[0].transpose(1, 2, 0)
        if model.channels == "rgb":
            out = out[:, :, ::-1]
        out = np.ascontiguousarray(out)
        if tile.ndim == 2:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    np.clip(out, 0.0, 1.0, out=out)
    if tile.dtype != np.float32:
        out *= top
        np.rint(out, out=out)
        out = out.astype(tile.dtype)
    return out


def _tiles(ys: list[Span], xs: list[Span]) -> Iterator[tuple[Span, Span]]:
    for y in ys:
        for x in xs:
            yield y, x
