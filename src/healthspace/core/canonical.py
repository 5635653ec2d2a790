"""Canonical JSON bytes and digests, so signatures and hashes are reproducible everywhere."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8; NaN and infinities are rejected."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest(obj: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()
