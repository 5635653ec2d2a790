"""Exact binary encoding of numeric arrays for JSON payloads (never pickle)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

_ALLOWED = {"<f8", "<f4", "<i8", "<i4", "<u8", "<u4", "|u1", "|b1"}


def encode_array(values: Any) -> dict[str, Any]:
    """Encode an array as ``{"dtype", "shape", "data"}`` with little-endian base64 data."""
    arr = np.asarray(values)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if arr.dtype.str not in _ALLOWED:
        raise ValueError(f"unsupported dtype for wire encoding: {arr.dtype}")
    return {
        "dtype": arr.dtype.str,
        "shape": list(arr.shape),
        "data": base64.b64encode(arr.tobytes()).decode("ascii"),
    }


def decode_array(obj: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`; rejects unknown dtypes and size mismatches."""
    dtype = str(obj["dtype"])
    if dtype not in _ALLOWED:
        raise ValueError(f"unsupported dtype for wire encoding: {dtype}")
    shape = tuple(int(n) for n in obj["shape"])
    raw = base64.b64decode(obj["data"], validate=True)
    arr = np.frombuffer(raw, dtype=np.dtype(dtype))
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError("array data does not match its shape")
    return arr.reshape(shape).copy()
