"""Media types: one name for each, used by the sniffer, the operations, the registries and the
API (``image/jpeg`` is ``JPEG`` everywhere, never a repeated string literal).

Imports nothing.
"""

JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"
GIF = "image/gif"
TIFF = "image/tiff"
BMP = "image/bmp"
AVIF = "image/avif"
FITS = "application/fits"

JSON = "application/json"
"""Documents (``metadata``, ``header``, ``catalogue`` outputs; API bodies; wire messages)."""
PROBLEM_JSON = "application/problem+json"
"""RFC 9457 problem documents (every refusal of the edge)."""
ZIP = "application/zip"
"""``archive`` outputs."""
OCTET_STREAM = "application/octet-stream"
"""Bytes of no registered type (ONNX models; objects stored without a type)."""
