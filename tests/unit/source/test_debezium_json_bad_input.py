"""Bad Debezium JSON: each class is a DecodeError whose reason names the rule, never the value.

Every case seeds ``CANARY`` into the message where the fault is, and checks that neither the
message, the reason nor the printed traceback carries it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import BadInputError
from connector.source import DebeziumJsonDecoder, DecodeError, Position
from tests.unit.source.source_helpers import CANARY, assert_no_canary, fixture_doc, to_message

POSITION = Position("carecloud.public.families", 0, 7)
GOOD = to_message(fixture_doc("pg_create.json"))
assert GOOD.value is not None


def reject(key: bytes | None, value: bytes | None, headers: Any = None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        DebeziumJsonDecoder().decode(key, value, headers, POSITION)
    assert isinstance(info.value, BadInputError)
    assert_no_canary(info.value)
    return info.value


def edited(
    edit: Callable[[dict[str, Any]], None], name: str = "pg_create.json", *, strip: bool = False
) -> bytes:
    doc = fixture_doc(name)
    value = doc["value"]["payload"] if strip else doc["value"]
    payload = value if strip else value["payload"]
    edit(payload)
    raw = orjson.dumps(value)
    return raw


def with_canary_name(payload: dict[str, Any]) -> None:
    payload["after"]["family_name"] = CANARY


RAW_CASES = {
    "empty": (b"", "invalid_json"),
    "truncated": (GOOD.value[: len(GOOD.value) // 2], "invalid_json"),
    "truncated_by_one": (GOOD.value[:-1], "invalid_json"),
    "nan": (GOOD.value.replace(b'"ts_ms":1730741405873', b'"ts_ms":NaN'), "invalid_json"),
    "infinity": (GOOD.value.replace(b'"ts_ms":1730741405873', b'"ts_ms":Infinity'), "invalid_json"),
    "overflowing_float": (GOOD.value.replace(b'"ts_ms":1730741405873', b'"ts_ms":1e400'), "invalid_json"),
    "raw_control_char": (
        edited(with_canary_name).replace(CANARY.encode(), CANARY.encode() + b"\x01"),
        "invalid_json",
    ),
    "invalid_utf8": (
        edited(with_canary_name).replace(CANARY.encode(), CANARY.encode() + b"\xff\xfe"),
        "invalid_utf8",
    ),
    "lone_surrogate": (
        edited(with_canary_name).replace(CANARY.encode(), CANARY.encode() + b"\xed\xa0\x80"),
        "invalid_utf8",
    ),
    "not_an_object": (orjson.dumps([CANARY]), "invalid_envelope"),
    "a_string": (orjson.dumps(CANARY), "invalid_envelope"),
    "wrapped_not_an_object": (orjson.dumps({"schema": None, "payload": [CANARY]}), "invalid_envelope"),
}


@pytest.mark.parametrize(("value", "reason"), RAW_CASES.values(), ids=RAW_CASES.keys())
def test_unparseable_values(value: bytes, reason: str) -> None:
    assert reject(GOOD.key, value).reason == reason


def _set(path: str, new: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for part in parents:
            node = node[part]
        if new is KeyError:
            del node[last]
        else:
            node[last] = new
        if isinstance(payload.get("after"), dict):
            payload["after"]["family_name"] = CANARY

    return edit


ENVELOPE_CASES = {
    "unknown_op": (_set("op", "x"), "unknown_op"),
    "truncate_op": (_set("op", "t"), "unknown_op"),
    "op_not_a_string": (_set("op", [CANARY]), "unknown_op"),
    "op_missing": (_set("op", KeyError), "unknown_op"),
    "after_missing": (_set("after", KeyError), "missing_row"),
    "after_null_on_create": (_set("after", None), "missing_row"),
    "after_not_object": (_set("after", CANARY), "wrong_type"),
    "source_missing": (_set("source", KeyError), "missing_source"),
    "source_not_object": (_set("source", CANARY), "missing_source"),
    "connector_unsupported": (_set("source.connector", "sqlserver"), "unsupported_connector"),
    "connector_canary": (_set("source.connector", CANARY), "unsupported_connector"),
    "table_missing": (_set("source.table", KeyError), "bad_source"),
    "sequence_garbage": (_set("source.sequence", CANARY), "bad_source_position"),
    # 20 digits fit the text check but not a u64: once an uncaught TypeError when the row was encoded.
    "sequence_beyond_u64": (_set("source.sequence", '["18446744073709551616", "1"]'), "bad_source_position"),
    "transaction_malformed": (_set("transaction", {"id": CANARY}), "bad_transaction"),
    "date_out_of_range": (_set("after.coverage_start", 10**9), "date_out_of_range"),
    "timestamp_out_of_range": (_set("after.enrolled_at", 2**62), "date_out_of_range"),
    "date_wrong_type": (_set("after.coverage_start", CANARY), "wrong_type"),
    "decimal_not_base64": (_set("after.deductible", CANARY + "!"), "invalid_decimal"),
    "decimal_empty": (_set("after.deductible", ""), "invalid_decimal"),
    "variable_scale_without_scale": (_set("after.balance", {"value": "AQ=="}), "invalid_decimal"),
    "zoned_timestamp_garbage": (_set("after.updated_at", CANARY), "invalid_timestamp"),
    "zoned_timestamp_naive": (_set("after.updated_at", "2024-11-04T17:30:05"), "invalid_timestamp"),
}


@pytest.mark.parametrize(("edit", "reason"), ENVELOPE_CASES.values(), ids=ENVELOPE_CASES.keys())
def test_bad_envelopes(edit: Callable[[dict[str, Any]], None], reason: str) -> None:
    assert reject(GOOD.key, edited(edit)).reason == reason


@pytest.mark.parametrize(("edit", "reason"), [ENVELOPE_CASES["unknown_op"], ENVELOPE_CASES["source_missing"]])
def test_bad_envelopes_without_schema(edit: Callable[[dict[str, Any]], None], reason: str) -> None:
    assert reject(b'{"id":1003}', edited(edit, strip=True)).reason == reason


def test_error_names_the_column() -> None:
    error = reject(GOOD.key, edited(_set("after.coverage_start", 10**9)))
    assert "after.coverage_start" in str(error)
    assert "1000000000" not in str(error)


@pytest.mark.parametrize("lsn", [KeyError, None], ids=["lsn-absent", "lsn-null"])
def test_postgres_source_with_neither_sequence_nor_lsn(lsn: object) -> None:
    def edit(payload: dict[str, Any]) -> None:
        _set("source.sequence", KeyError)(payload)
        _set("source.lsn", lsn)(payload)

    error = reject(GOOD.key, edited(edit))
    assert error.reason == "bad_source_position"
    assert "neither sequence nor lsn" in str(error)


@pytest.mark.parametrize("lsn", [CANARY, True, "-1", "1" * 21], ids=["text", "bool", "negative", "over-u64"])
def test_postgres_lsn_fallback_rejects_what_is_not_an_lsn(lsn: object) -> None:
    def edit(payload: dict[str, Any]) -> None:
        _set("source.sequence", KeyError)(payload)
        _set("source.lsn", lsn)(payload)

    assert reject(GOOD.key, edited(edit, strip=True)).reason == "bad_source_position"


KEY_CASES = {
    "null_key": (None, "missing_key"),
    "not_json": (b"{" + CANARY.encode(), "invalid_key"),
    "invalid_utf8": (b'{"id":"' + CANARY.encode() + b'\xff"}', "invalid_key"),
    "array": (orjson.dumps([CANARY]), "invalid_key"),
    "wrapped_null_payload": (b'{"schema":null,"payload":null}', "missing_key"),
    "empty": (b"", "invalid_key"),
}


@pytest.mark.parametrize(("key", "reason"), KEY_CASES.values(), ids=KEY_CASES.keys())
def test_bad_keys(key: bytes | None, reason: str) -> None:
    assert reject(key, GOOD.value).reason == reason


@pytest.mark.parametrize("wrapped", [True, False])
def test_key_disagreeing_with_the_row(wrapped: bool) -> None:
    key = {"id": CANARY}
    value = edited(_set("after.id", CANARY + "-other"))
    raw_key = orjson.dumps({"schema": None, "payload": key} if wrapped else key)
    error = reject(raw_key, value)
    assert error.reason == "key_mismatch"
    assert "id" in str(error)


def test_key_disagreeing_with_a_delete_before() -> None:
    doc = fixture_doc("pg_delete.json")
    doc["value"]["payload"]["before"]["family_name"] = CANARY
    error = reject(b'{"id":999}', orjson.dumps(doc["value"]))
    assert error.reason == "key_mismatch"


def test_unparseable_key_header() -> None:
    headers = [("__debezium.oldkey", b"{" + CANARY.encode())]
    assert reject(GOOD.key, GOOD.value, headers).reason == "invalid_header"


def test_tombstone_with_any_key_is_still_a_tombstone() -> None:
    assert DebeziumJsonDecoder().decode(None, None, None, POSITION) is None
    assert DebeziumJsonDecoder().decode(b"garbage", None, None, POSITION) is None


def test_good_events_around_bad_ones_still_decode() -> None:
    decoder = DebeziumJsonDecoder()
    assert decoder.decode(GOOD.key, GOOD.value, None, POSITION) is not None
    with pytest.raises(DecodeError):
        decoder.decode(GOOD.key, GOOD.value[:-3], None, POSITION)
    with pytest.raises(DecodeError):
        decoder.decode(GOOD.key, edited(_set("op", "x")), None, POSITION)
    assert decoder.decode(GOOD.key, GOOD.value, None, POSITION) is not None


ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["__debezium_unavailable_value", "²", "9" * 30, "AQ==", '[null,"1"]', "postgresql"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
PATHS = [
    "op",
    "source",
    "source.connector",
    "source.sequence",
    "source.lsn",
    "source.schema",
    "source.file",
    "transaction",
    "after",
    "after.id",
    "after.coverage_start",
    "after.deductible",
    "after.balance",
    "after.enrolled_at",
    "after.updated_at",
    "after.tags",
    "before",
]


@given(
    name=st.sampled_from(["pg_create.json", "pg_update_toast.json", "pg_delete.json", "mysql_update.json"]),
    path=st.sampled_from(PATHS),
    new=ANY_JSON,
    key=ANY_JSON,
    strip=st.booleans(),
)
def test_any_json_anywhere_is_an_event_or_a_decode_error(
    name: str, path: str, new: Any, key: Any, strip: bool
) -> None:
    doc = fixture_doc(name)
    node = doc["value"]["payload"]
    *parents, last = path.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node[last] = new
    value = doc["value"]["payload"] if strip else doc["value"]
    for raw_key in (orjson.dumps(doc["key"]), orjson.dumps(key)):
        with contextlib.suppress(DecodeError):  # any other exception fails the test
            DebeziumJsonDecoder().decode(raw_key, orjson.dumps(value), None, POSITION)
