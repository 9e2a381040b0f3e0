"""The ``model`` operation over small ONNX graphs built here with onnx's helpers: results
against numpy/OpenCV references, tiling, channel layouts, depths, limits and failures."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from contracts.ops import Model
from contracts.settings import LimitsSettings
from pixfleet.registry.models import LocalModel, resource_key
from worker.errors import UsageError
from worker.ops.api import LocalContext, Picture
from worker.ops.model import run_model, spans

OPSET = 13
rng = np.random.default_rng(7)


# -- model builders -----------------------------------------------------------------------


def _graph(nodes: list[Any], inits: dict[str, np.ndarray], cin: int, cout: int) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, None, None])
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "test", [x], [y], initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def affine(a: float, b: float, channels: int = 3) -> bytes:
    """y = a * x + b."""
    nodes = [helper.make_node("Mul", ["x", "a"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])]
    return _graph(nodes, {"a": a, "b": b}, channels, channels)


def conv3x3(weights: np.ndarray) -> bytes:
    """A 3x3 convolution with zero padding; ``weights`` is (cout, cin, 3, 3)."""
    cout, cin = weights.shape[:2]
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return _graph([node], {"w": weights}, cin, cout)


def resize_nearest(factor: int, channels: int = 3) -> bytes:
    scales = np.array([1, 1, factor, factor], np.float32)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")
    return _graph([node], {"s": scales}, channels, channels)


def conv_depth_to_space(weights: np.ndarray, factor: int) -> bytes:
    """A 3x3 convolution to C * factor**2 channels, then DepthToSpace (CRD): an ESPCN tail."""
    cout = weights.shape[0] // factor**2
    conv = helper.make_node("Conv", ["x", "w"], ["t"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    d2s = helper.make_node("DepthToSpace", ["t"], ["y"], blocksize=factor, mode="CRD")
    return _graph([conv, d2s], {"w": weights}, weights.shape[1], cout)


def box_weights(channels: int = 3) -> np.ndarray:
    w = np.zeros((channels, channels, 3, 3), np.float32)
    for c in range(channels):
        w[c, c] = 1 / 9
    return w


def register(tmp_path: Path, data: bytes, **params: Any) -> LocalModel:
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{digest}.onnx"
    path.write_bytes(data)
    fields: dict[str, Any] = {
        "name": "m",
        "channels": "bgr",
        "input_range": 1,
        "mean": None,
        "output_range": 1,
        "scale": 1,
        "tile": 0,
        "overlap": 0,
        **params,
    }
    return LocalModel(path=path, sha256=digest, **fields)


def run(
    model: LocalModel, pixels: np.ndarray, tmp_path: Path, **limits: int
) -> tuple[np.ndarray, LocalContext]:
    ctx = LocalContext(
        tmp_path, limits=LimitsSettings(**limits), resources={resource_key("m"): model}
    )
    picture = Picture(pixels=pixels, name="in", source_type="image/png")
    out = run_model(Model(name="m"), picture, ctx)
    assert isinstance(out, Picture)
    assert out.name == "in" and out.source_type == "image/png"
    return out.pixels, ctx


def image(h: int, w: int, channels: int | None = 3, dtype: Any = np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    shape = (h, w) if channels is None else (h, w, channels)
    return rng.integers(0, top, shape, endpoint=True).astype(dtype)


def quantize(values: np.ndarray, dtype: Any = np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.rint(np.clip(values, 0, 1) * top).astype(dtype)


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: int = 1) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= tol, f"max difference {diff.max()}"


def box_reference(pixels: np.ndarray) -> np.ndarray:
    """3x3 mean with zero padding, per channel, in 0..1."""
    x = pixels.astype(np.float32) / np.iinfo(pixels.dtype).max
    kernel = np.full((3, 3), 1 / 9, np.float32)
    return cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_CONSTANT)


# -- results against references -----------------------------------------------------------


@pytest.mark.parametrize("channels", ["rgb", "bgr"])
def test_identity_model_returns_the_image(tmp_path: Path, channels: str) -> None:
    pixels = image(40, 60)
    out, _ = run(register(tmp_path, affine(1.0, 0.0), channels=channels), pixels, tmp_path)
    np.testing.assert_array_equal(out, pixels)


def test_brighten_model_matches_the_reference(tmp_path: Path) -> None:
    pixels = image(50, 70)
    out, ctx = run(register(tmp_path, affine(0.5, 0.25)), pixels, tmp_path)
    assert_close(out, quantize(pixels / 255 * 0.5 + 0.25))
    assert ctx.events[-1][0] == 1.0


def test_rgb_model_sees_red_first(tmp_path: Path) -> None:
    # Scales the first input channel only: for an rgb model that is red, BGR index 2.
    w = np.zeros((3, 3, 3, 3), np.float32)
    w[0, 0, 1, 1], w[1, 1, 1, 1], w[2, 2, 1, 1] = 0.5, 1, 1
    pixels = image(20, 30)
    out, _ = run(register(tmp_path, conv3x3(w), channels="rgb"), pixels, tmp_path)
    expected = pixels.copy()
    expected[:, :, 2] = quantize(pixels[:, :, 2] / 255 * 0.5)
    assert_close(out, expected)


def test_ranges_and_mean_round_trip(tmp_path: Path) -> None:
    # 0..255 in, mean subtracted, the model halves what it sees, 0..255 out, mean added back.
    mean = (100.0, 120.0, 140.0)
    model = register(
        tmp_path, affine(0.5, 0.0), channels="rgb", input_range=255, output_range=255, mean=mean
    )
    pixels = image(30, 30)
    out, _ = run(model, pixels, tmp_path)
    bgr_mean = np.array(mean[::-1], np.float32)
    expected = (pixels.astype(np.float32) - bgr_mean) * 0.5 + bgr_mean
    assert_close(out, quantize(expected / 255))


def test_blur_model_matches_opencv(tmp_path: Path) -> None:
    pixels = image(64, 48)
    out, _ = run(register(tmp_path, conv3x3(box_weights())), pixels, tmp_path)
    assert_close(out, quantize(box_reference(pixels)))


@pytest.mark.parametrize("factor", [2, 3])
def test_super_resolution_by_resize(tmp_path: Path, factor: int) -> None:
    pixels = image(21, 34)
    model = register(tmp_path, resize_nearest(factor), scale=factor)
    out, _ = run(model, pixels, tmp_path)
    assert out.shape == (21 * factor, 34 * factor, 3)
    np.testing.assert_array_equal(out, pixels.repeat(factor, 0).repeat(factor, 1))


def test_super_resolution_by_depth_to_space(tmp_path: Path) -> None:
    # The conv copies each channel into its four sub-pixels, blurred: a blurred nearest x2.
    w = np.zeros((12, 3, 3, 3), np.float32)
    for c in range(3):
        w[c * 4 : c * 4 + 4, c] = 1 / 9
    pixels = image(33, 25)
    out, _ = run(register(tmp_path, conv_depth_to_space(w, 2), scale=2), pixels, tmp_path)
    assert out.shape == (66, 50, 3)
    expected = quantize(box_reference(pixels)).repeat(2, 0).repeat(2, 1)
    assert_close(out, expected)


# -- tiles ----------------------------------------------------------------------------------


def test_tiles_give_the_untiled_result(tmp_path: Path) -> None:
    weights = rng.normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32)
    data = conv3x3(weights)
    pixels = image(200, 300)
    whole, _ = run(register(tmp_path, data), pixels, tmp_path)
    tiled, ctx = run(register(tmp_path, data, tile=64, overlap=8), pixels, tmp_path)
    assert_close(tiled, whole)
    # Float sums in another order may round a rare sample the other way, never more.
    assert np.count_nonzero(tiled != whole) <= pixels.size // 1000
    total = len(spans(200, 64, 8)) * len(spans(300, 64, 8))
    assert len(ctx.events) == total > 1
    assert [f for f, _ in ctx.events] == pytest.approx([i / total for i in range(1, total + 1)])


def test_upscaling_tiles_give_the_untiled_result(tmp_path: Path) -> None:
    weights = rng.normal(0, 0.2, (12, 3, 3, 3)).astype(np.float32)
    data = conv_depth_to_space(weights, 2)
    pixels = image(200, 300)
    whole, _ = run(register(tmp_path, data, scale=2), pixels, tmp_path)
    tiled, _ = run(register(tmp_path, data, scale=2, tile=64, overlap=8), pixels, tmp_path)
    assert tiled.shape == (400, 600, 3)
    assert_close(tiled, whole)


@given(
    length=st.integers(1, 2000),
    tile=st.integers(16, 512),
    overlap=st.integers(0, 255),
)
def test_tile_windows_cover_the_axis_with_context(length: int, tile: int, overlap: int) -> None:
    if 2 * overlap >= tile:
        overlap = (tile - 1) // 2
    cut = spans(length, tile, overlap)
    assert cut[0][2] == 0 and cut[-1][3] == length
    for (w0, w1, c0, c1), nxt in zip(cut, [*cut[1:], None], strict=True):
        assert w1 - w0 == min(tile, length) and w0 >= 0 and w1 <= length
        assert w0 <= c0 < c1 <= w1
        assert c0 == 0 or c0 - w0 >= overlap
        assert c1 == length or w1 - c1 >= overlap
        if nxt is not None:
            assert nxt[2] == c1


# -- layouts and depths ---------------------------------------------------------------------


def test_gray_image_through_a_colour_model_stays_gray(tmp_path: Path) -> None:
    pixels = image(40, 50, channels=None)
    out, _ = run(register(tmp_path, affine(0.5, 0.25)), pixels, tmp_path)
    assert_close(out, quantize(pixels / 255 * 0.5 + 0.25))


def test_gray_model_on_a_gray_image(tmp_path: Path) -> None:
    pixels = image(40, 50, channels=None)
    model = register(tmp_path, conv3x3(box_weights(1)), channels="gray")
    out, _ = run(model, pixels, tmp_path)
    assert_close(out, quantize(box_reference(pixels)))


def test_gray_model_on_a_colour_image_runs_on_luma(tmp_path: Path) -> None:
    pixels = image(40, 50)
    model = register(tmp_path, affine(0.5, 0.0, channels=1), channels="gray")
    out, _ = run(model, pixels, tmp_path)
    ycc = cv2.cvtColor(pixels.astype(np.float32) / 255, cv2.COLOR_BGR2YCrCb)
    ycc[:, :, 0] *= 0.5
    assert_close(out, quantize(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)))
    identity = register(tmp_path, affine(1.0, 0.0, channels=1), channels="gray")
    same, _ = run(identity, pixels, tmp_path)
    assert_close(same, pixels)


def test_gray_upscaling_model_on_a_colour_image(tmp_path: Path) -> None:
    pixels = image(30, 40)
    model = register(tmp_path, resize_nearest(2, channels=1), channels="gray", scale=2)
    out, _ = run(model, pixels, tmp_path)
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("scale", [1, 2])
def test_alpha_is_kept_and_resized(tmp_path: Path, scale: int) -> None:
    pixels = image(30, 40, channels=4)
    model = register(tmp_path, resize_nearest(scale) if scale > 1 else affine(0.5, 0.0))
    out, _ = run(register(tmp_path, model.path.read_bytes(), scale=scale), pixels, tmp_path)
    assert out.shape == (30 * scale, 40 * scale, 4)
    alpha = pixels[:, :, 3]
    if scale > 1:
        alpha = cv2.resize(alpha, (40 * scale, 30 * scale), interpolation=cv2.INTER_CUBIC)
        colour = pixels[:, :, :3].repeat(scale, 0).repeat(scale, 1)
    else:
        colour = quantize(pixels[:, :, :3] / 255 * 0.5)
    np.testing.assert_array_equal(out[:, :, 3], alpha)
    assert_close(out[:, :, :3], colour)


def test_sixteen_bit_samples_stay_sixteen_bit(tmp_path: Path) -> None:
    pixels = image(30, 40, dtype=np.uint16)
    out, _ = run(register(tmp_path, affine(0.5, 0.25), tile=16, overlap=2), pixels, tmp_path)
    assert_close(out, quantize(pixels / 65535 * 0.5 + 0.25, np.uint16))


def test_float_samples_stay_float(tmp_path: Path) -> None:
    pixels = rng.random((20, 30, 3), dtype=np.float32)
    out, _ = run(register(tmp_path, affine(2.0, 0.0)), pixels, tmp_path)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip(pixels * 2, 0, 1), atol=1e-6)


# -- refusals -------------------------------------------------------------------------------


def test_output_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    model = register(tmp_path, resize_nearest(4), scale=4)
    with pytest.raises(UsageError, match="more than"):
        run(model, image(100, 100), tmp_path, max_output_pixels=100 * 100 * 16 - 1)
    out, _ = run(model, image(100, 100), tmp_path, max_output_pixels=100 * 100 * 16)
    assert out.shape == (400, 400, 3)


def test_missing_resource_is_a_usage_error(tmp_path: Path) -> None:
    ctx = LocalContext(tmp_path)
    picture = Picture(pixels=image(10, 10), name="in", source_type="image/png")
    with pytest.raises(UsageError, match="not registered"):
        run_model(Model(name="m"), picture, ctx)


def test_garbage_model_file_is_a_usage_error(tmp_path: Path) -> None:
    model = register(tmp_path, b"\x08\x07" + bytes(range(256)) * 4)
    with pytest.raises(UsageError, match="cannot be loaded") as e:
        run(model, image(10, 10), tmp_path)
    assert e.value.detail


def test_wrong_registered_scale_is_a_usage_error(tmp_path: Path) -> None:
    model = register(tmp_path, affine(1.0, 0.0), scale=2)
    with pytest.raises(UsageError, match="should give 3 x 20 x 24"):
        run(model, image(10, 12), tmp_path)


def test_wrong_registered_channels_is_a_usage_error(tmp_path: Path) -> None:
    model = register(tmp_path, conv3x3(box_weights(3)), channels="gray")
    # OpenCV may refuse the input or run it anyway; the output shape check catches the rest.
    with pytest.raises(UsageError, match=r"model 'm' (failed on|turned a 1 x 10 x 12 input)"):
        run(model, image(10, 12), tmp_path)
