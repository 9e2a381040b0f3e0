"""Checking cheaply that a file is an ONNX model, without onnx: walk its protobuf framing.

Used by the model registry when a model is registered. Standard library only: onnx is a dev
dependency, and whether OpenCV can run the model is found out by the worker at first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

MAX_MODEL_BYTES = 2**31 - 1
"""Protobuf's limit on one message; models with external weights are not supported."""
MIN_MODEL_BYTES = 16


class NotOnnxError(ValueError):
    """The file is too small or too large, or is not a serialized ONNX ``ModelProto``."""


# Wire types of the ModelProto and GraphProto fields we look at (onnx/onnx.proto3).
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MODEL_FIELDS = {1: _VARINT, 2: _LEN, 3: _LEN, 4: _LEN, 5: _VARINT, 6: _LEN, 7: _LEN, 8: _LEN}
_GRAPH_FIELDS = {1: _LEN, 2: _LEN, 5: _LEN, 10: _LEN, 11: _LEN, 12: _LEN, 13: _LEN}
_MAX_IR_VERSION = 64  # IR 10 is current; a far larger number is not a ModelProto


def _varint(f: IO[bytes]) -> int:
    result = 0
    for shift in range(0, 70, 7):
        b = f.read(1)
        if not b:
            raise NotOnnxError("not an ONNX model: the file ends inside a field")
        result |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return result
    raise NotOnnxError("not an ONNX model: malformed protobuf varint")


def _walk(f: IO[bytes], start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field, wire type, value, payload offset) of the protobuf message in [start, end).

    ``value`` is a varint's value or a length-delimited field's length (0 otherwise). Payloads
    are skipped with a seek, so a 1 GB model is walked with a few hundred small reads.
    """
    pos = start
    while pos < end:
        f.seek(pos)
        key = _varint(f)
        field, wire = key >> 3, key & 7
        value = size = 0
        if field == 0:
            raise NotOnnxError("not an ONNX model: protobuf field number 0")
        if wire == _VARINT:
            value = _varint(f)
        elif wire == _LEN:
            value = size = _varint(f)
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
        else:
            raise NotOnnxError(f"not an ONNX model: protobuf wire type {wire}")
        payload = f.tell()
        pos = payload + size
        if pos > end:
            raise NotOnnxError("not an ONNX model: a field runs past the end of the file")
        yield field, wire, value, payload


def _check_wire(kind: str, fields: dict[int, int], field: int, wire: int) -> None:
    expected = fields.get(field)
    if expected is not None and wire != expected:
        raise NotOnnxError(f"not an ONNX model: field {field} of the {kind} has wire {wire}")


def check_onnx_file(path: Path) -> int:
    """Check cheaply that ``path`` is a serialized ONNX ``ModelProto``; return its size.

    Walks the protobuf framing of the model and of its graph (without reading tensors): an IR
    version, at least one opset import, a graph with inputs and outputs, and fields that end
    exactly at the end of the file. Whether OpenCV can run the model is found at first use.
    Blocking: call it in a thread.

    Raises:
        NotOnnxError: the file is too small or too large, or is not a ModelProto.
        OSError: the file cannot be read.
    """
    size = path.stat().st_size
    if not MIN_MODEL_BYTES <= size <= MAX_MODEL_BYTES:
        raise NotOnnxError(
            f"a model file must be {MIN_MODEL_BYTES} to {MAX_MODEL_BYTES} bytes, not {size}"
        )
    ir_version, opsets, graph = 0, 0, None
    with path.open("rb") as f:
        for field, wire, value, payload in _walk(f, 0, size):
            _check_wire("model", _MODEL_FIELDS, field, wire)
            if field == 1:
                ir_version = value
            elif field == 8:
                opsets += 1
            elif field == 7:
                graph = (payload, payload + value)
        if not 1 <= ir_version <= _MAX_IR_VERSION:
            raise NotOnnxError("not an ONNX model: no valid IR version")
        if graph is None or not opsets:
            raise NotOnnxError("not an ONNX model: no graph or no opset import")
        counts = {1: 0, 11: 0, 12: 0}
        for field, wire, _, _ in _walk(f, *graph):
            _check_wire("graph", _GRAPH_FIELDS, field, wire)
            if field in counts:
                counts[field] += 1
    if not counts[1] or not counts[11] or not counts[12]:
        raise NotOnnxError("the ONNX graph needs nodes, an input and an output")
    return size
