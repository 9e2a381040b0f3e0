"""Pixel operations: one synchronous function per op, run in a worker child process.

May import numpy/cv2; never imported by the worker parent or the edge. This package module
itself imports nothing, so importing ``worker.ops.api`` does not pull in the numeric stack.
"""
