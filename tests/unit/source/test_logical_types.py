"""Kafka Connect / Debezium logical types, converted once per schema plan."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.source import DecodeError
from connector.source._logical import apply_plan, avro_plan, connect_plan

UTC = dt.UTC


def field(name: str | None, type_: str = "int64", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "optional": True, "field": "c", **extra}
    if name:
        out["name"] = name
    return out


def convert(schema_field: dict[str, Any], value: Any) -> Any:
    plan = connect_plan({"type": "struct", "fields": [schema_field]})
    assert plan is not None
    row = {"c": value}
    apply_plan(row, plan, "after")
    return row["c"]


def decimal_field(scale: int) -> dict[str, Any]:
    return field(
        "org.apache.kafka.connect.data.Decimal", "bytes", parameters={"scale": str(scale)}, version=1
    )


def b64(unscaled: int) -> str:
    return base64.b64encode(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)).decode()


@given(st.integers(min_value=-(10**40), max_value=10**40), st.integers(min_value=0, max_value=20))
def test_decimal_is_exact_at_any_precision(unscaled: int, scale: int) -> None:
    assert convert(decimal_field(scale), b64(unscaled)) == Decimal(
        f"{unscaled}e{-scale}"
    )  # no 28-digit rounding
    assert convert(decimal_field(scale), b64(unscaled)).as_tuple().exponent == -scale


def test_decimal_numeric_json_format_and_other_modes() -> None:
    assert convert(decimal_field(2), 12.5) == Decimal("12.50")
    assert convert(decimal_field(2), 7) == Decimal("7.00")
    assert convert(field(None, "string"), "12.50") == "12.50"  # decimal.handling.mode=string
    assert convert(field(None, "double"), 12.5) == 12.5  # decimal.handling.mode=double


def test_variable_scale_decimal() -> None:
    vsd = field("io.debezium.data.VariableScaleDecimal", "struct")
    assert convert(vsd, {"scale": 4, "value": b64(-12345)}) == Decimal("-1.2345")


@pytest.mark.parametrize(
    ("name", "type_", "raw", "expected"),
    [
        ("io.debezium.time.Date", "int32", 0, dt.date(1970, 1, 1)),
        ("io.debezium.time.Date", "int32", -1, dt.date(1969, 12, 31)),
        ("org.apache.kafka.connect.data.Date", "int32", 19723, dt.date(2024, 1, 1)),
        ("io.debezium.time.Timestamp", "int64", 1, dt.datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)),
        (
            "org.apache.kafka.connect.data.Timestamp",
            "int64",
            -1,
            dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        ),
        (
            "io.debezium.time.MicroTimestamp",
            "int64",
            1_500_000,
            dt.datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC),
        ),
        ("io.debezium.time.NanoTimestamp", "int64", 1_999, dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
        (
            "io.debezium.time.ZonedTimestamp",
            "string",
            "2024-03-01T12:00:00+02:00",
            dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
        ),
        ("io.debezium.time.MicroTime", "int64", 3_600_000_000, 3_600_000_000),  # left for the mapper
        ("io.debezium.data.Json", "string", '{"a":1}', '{"a":1}'),
    ],
)
def test_time_types(name: str, type_: str, raw: Any, expected: Any) -> None:
    result = convert(field(name, type_), raw)
    assert result == expected
    if isinstance(result, dt.datetime):
        assert result.tzinfo is not None


@pytest.mark.parametrize(
    ("name", "type_", "raw", "reason"),
    [
        ("io.debezium.time.Date", "int32", 10**9, "date_out_of_range"),
        ("io.debezium.time.Date", "int32", -(10**9), "date_out_of_range"),
        ("io.debezium.time.Date", "int32", True, "wrong_type"),
        ("io.debezium.time.Date", "int32", 1.5, "wrong_type"),
        ("io.debezium.time.Timestamp", "int64", 2**62, "date_out_of_range"),
        ("io.debezium.time.NanoTimestamp", "int64", "1", "wrong_type"),
        ("io.debezium.time.ZonedTimestamp", "string", 5, "wrong_type"),
        ("io.debezium.data.VariableScaleDecimal", "struct", "AQ==", "wrong_type"),
    ],
)
def test_bad_values_name_column_and_rule(name: str, type_: str, raw: Any, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        convert(field(name, type_), raw)
    assert info.value.reason == reason
    assert str(info.value).startswith("after.c:")


def test_nulls_are_left_alone() -> None:
    assert convert(field("io.debezium.time.Date", "int32"), None) is None


def test_avro_plan_reads_connect_names_then_logical_types() -> None:
    record = {
        "fields": [
            {"name": "d", "type": ["null", {"type": "int", "connect.name": "io.debezium.time.Date"}]},
            {"name": "m", "type": {"type": "bytes", "x.logical": "decimal", "scale": 2}},
            {"name": "t", "type": {"type": "long", "x.logical": "timestamp-micros"}},
            {"name": "v", "type": ["null", "io.debezium.data.VariableScaleDecimal"]},
            {"name": "s", "type": "string"},
            {"name": "u", "type": ["null", "string", "long"]},
        ]
    }
    named = {
        "io.debezium.data.VariableScaleDecimal": {
            "type": "record",
            "connect.name": "io.debezium.data.VariableScaleDecimal",
        }
    }
    plan = avro_plan(record, named, logical_key="x.logical")
    assert set(plan) == {"d", "m", "t", "v"}
    row = {"d": 1, "m": b"\x01\x00", "t": 1, "v": {"scale": 0, "value": b"\x05"}, "s": "x"}
    apply_plan(row, plan, "after")
    assert row == {
        "d": dt.date(1970, 1, 2),
        "m": Decimal("2.56"),
        "t": dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "v": Decimal(5),
        "s": "x",
    }


def test_plans_ignore_malformed_schemas() -> None:
    assert connect_plan(None) is None
    assert connect_plan({"type": "struct"}) is None
    plan = connect_plan({"type": "struct", "fields": ["x", {"field": 1}, {"field": "a", "name": {"x": 1}}]})
    assert plan == {}
