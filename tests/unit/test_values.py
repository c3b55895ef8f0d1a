"""The typed value codec: every type psycopg returns survives the wire unchanged."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest

from airflow_hoop.wire.values import (
    decode_parameters,
    decode_value,
    encode_parameters,
    encode_value,
)

VALUES = [
    None,
    True,
    0,
    -7,
    2**62,
    1.5,
    "text",
    "it's; DROP TABLE x; --",
    "$$",
    "é\u2603",
    Decimal("12.50"),
    dt.date(2026, 1, 2),
    dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 2, 3, 4, 5),
    dt.time(1, 2, 3),
    dt.timedelta(seconds=90.5),
    uuid.UUID(int=5),
    b"\x00\xffbytes",
    [1, 2, None],
    [Decimal("1.1")],
    float("inf"),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip_through_json(value):
    wire = json.loads(json.dumps(encode_value(value)))
    assert decode_value(wire) == value and type(decode_value(wire)) is type(value)


def test_json_documents_are_tagged_not_confused_with_tags():
    doc = {"$t": "decimal", "v": "1"}
    assert decode_value(json.loads(json.dumps(encode_value(doc)))) == doc


def test_parameters_keep_their_shape():
    assert decode_parameters(encode_parameters({"a": Decimal("1")})) == {"a": Decimal("1")}
    assert decode_parameters(encode_parameters((1, "x"))) == [1, "x"]
    assert encode_parameters(None) is None


def test_unknown_types_and_tags_are_refused():
    with pytest.raises(TypeError):
        encode_value(object())
    with pytest.raises(ValueError):
        decode_value({"$t": "pickle", "v": "..."})
