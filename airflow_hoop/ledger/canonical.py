"""Canonical JSON: the exact bytes that are hashed.

Sorted keys, no insignificant whitespace, UTF-8, no NaN/Infinity. Two encoders that follow
these rules produce identical bytes, so a verifier in another language can recompute hashes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(value: Any) -> bytes:
    """Encode a JSON-compatible value canonically."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes | str) -> str:
    """Hex SHA-256 of bytes (or of a string's UTF-8 encoding)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()
