"""Debezium's transaction topic records decoded (issue 19): BEGIN, END, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from connector.errors import DecodeError
from connector.source.transactions import BAD_RECORD, Boundary, decode_boundary

# As Debezium 3.7 writes them for PostgreSQL (measured: ../shared/FACTS.md).
BEGIN = {"status": "BEGIN", "id": "732:26384936", "event_count": None, "data_collections": None, "ts_ms": 1}
END = {
    "status": "END",
    "id": "731:26384936",
    "event_count": 4,
    "data_collections": [
        {"data_collection": "s.claim", "event_count": 2},
        {"data_collection": "s.payment", "event_count": 2},
    ],
    "ts_ms": 1,
}


def test_begin_and_end_as_debezium_writes_them() -> None:
    assert decode_boundary(orjson.dumps(BEGIN)) == Boundary("BEGIN", "732:26384936", None, {})
    assert decode_boundary(orjson.dumps(END)) == Boundary(
        "END", "731:26384936", 4, {"s.claim": 2, "s.payment": 2}
    )


def test_the_schema_wrapper_is_unwrapped_and_a_tombstone_is_nothing() -> None:
    wrapped = {"schema": {"type": "struct", "fields": []}, "payload": END}
    assert decode_boundary(orjson.dumps(wrapped)) == decode_boundary(orjson.dumps(END))
    assert decode_boundary(None) is None


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        orjson.dumps({**END, "status": "COMMIT"}),
        orjson.dumps({**END, "id": 7}),
        orjson.dumps({**END, "event_count": "4"}),
        orjson.dumps({**END, "event_count": -1}),
        orjson.dumps({**END, "data_collections": None}),
        orjson.dumps({**END, "data_collections": [{"data_collection": "s.claim"}]}),
        orjson.dumps({"op": "c", "after": {"id": 1}}),  # a row change is not a boundary
    ],
)
def test_anything_else_is_bad_input_named_without_its_value(value: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_boundary(value)
    assert caught.value.reason == BAD_RECORD
    assert "731" not in str(caught.value)
    assert "s.claim" not in str(caught.value)
