"""Typed SQL values on the wire.

JSON has no date, decimal or bytes, so values that JSON cannot carry exactly travel as
``{"$t": <type>, "v": <text>}``. Both the gateway (encoding rows, decoding parameters) and
the client (the reverse) use this one codec, so a value survives the round trip unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "decimal": Decimal,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(seconds=float(v)),
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
    "float": float,
    "json": lambda v: v,
}


def encode_value(value: Any) -> Any:
    """Python value -> JSON-safe value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$t": "float", "v": str(value)}
    if isinstance(value, Decimal):
        return {"$t": "decimal", "v": str(value)}
    if isinstance(value, dt.datetime):
        return {"$t": "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$t": "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$t": "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$t": "timedelta", "v": str(value.total_seconds())}
    if isinstance(value, uuid.UUID):
        return {"$t": "uuid", "v": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$t": "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {"$t": "json", "v": value}
    raise TypeError(f"cannot send a value of type {type(value).__name__} as a SQL value")


def decode_value(value: Any) -> Any:
    """JSON-safe value -> Python value."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        tag = value.get("$t")
        if tag not in _DECODERS or "v" not in value:
            raise ValueError(f"unknown typed value {sorted(value)!r}")
        return _DECODERS[tag](value["v"])
    return value


def encode_parameters(params: Any) -> Any:
    """Encode DB-API parameters (a sequence or a mapping) for the wire."""
    if params is None:
        return None
    if isinstance(params, dict):
        return {str(k): encode_value(v) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return [encode_value(v) for v in params]
    raise TypeError("parameters must be a sequence or a mapping")


def decode_parameters(params: Any) -> Any:
    if params is None:
        return None
    if isinstance(params, dict):
        return {k: decode_value(v) for k, v in params.items()}
    return [decode_value(v) for v in params]
