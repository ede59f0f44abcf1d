"""Mapped records are valid by construction: the property behind skipping per-event validation.

The mapper does not call ``connector.model.validate`` per event (see the docstring of
``connector/mapping/mapper.py``): its converters are planned from the entity schema. Here any
row of the right source types for any table of examples/mapping.yaml maps to a record that
``validate`` accepts, and a value of the wrong type is a ``MappingError`` that keeps the value
to itself. The rows are drawn from the mapping and the schemas, not written out per table.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import MappingError
from connector.mapping import Mapper, load_mapping
from connector.mapping.spec import FieldSpec, TableSpec
from connector.model import raw_schema, validate
from connector.source.events import ChangeEvent, Op, Position
from connector.source.version import Version

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"
SPEC = load_mapping(EXAMPLE)
MAPPER = Mapper(SPEC)
TABLES = sorted(SPEC.tables)
CANARY = "Quimby-Flux-5519"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST, _LAST = date(1800, 1, 1), date(2200, 12, 31)  # the converters' year range
_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))])
TEXT = st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\t\n\r")
STRINGS = (
    st.text(TEXT, max_size=30)
    | st.builds(lambda c, n: c * n, TEXT, st.integers(1_000, 20_000))  # long text columns
    | st.integers(-(2**63), 2**63 - 1)  # numeric codes stored as numbers
)
IDS = st.integers(-(2**63), 2**63 - 1)  # bigint keys, past 2**53


def _branch(avro_type: Any) -> tuple[Any, bool]:
    """The non-null type of a field and whether it is nullable."""
    if isinstance(avro_type, list):
        (inner,) = [t for t in avro_type if t != "null"]
        return inner, True
    return avro_type, False


def _decimals(precision: int, scale: int) -> st.SearchStrategy[Any]:
    """Every form Debezium hands a numeric(p, s) column in: Decimal, or base64 (precise mode)."""
    unscaled = st.integers(-(10**precision) + 1, 10**precision - 1)

    def b64(n: int) -> str:
        return base64.b64encode(n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)).decode()

    return (
        unscaled.map(lambda n: Decimal(n).scaleb(-scale))
        | unscaled.map(b64)
        | st.integers(-(10 ** (precision - scale)) + 1, 10 ** (precision - scale) - 1)
    )


def _dates() -> st.SearchStrategy[Any]:
    days = st.integers((_FIRST - date(1970, 1, 1)).days, (_LAST - date(1970, 1, 1)).days)
    return days | st.dates(_FIRST, _LAST)  # io.debezium.time.Date raw, or typed


def _timestamps() -> st.SearchStrategy[Any]:
    lo = datetime(1800, 1, 1, tzinfo=UTC) - _EPOCH
    hi = datetime(2200, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH
    us = timedelta(microseconds=1)
    micros = st.integers(lo // us, hi // us)
    inner = st.integers((lo + timedelta(days=1)) // us, (hi - timedelta(days=1)) // us)
    typed = st.builds(lambda n, tz: (_EPOCH + n * us).astimezone(tz), inner, _ZONES)
    return micros | typed  # MicroTimestamp raw (the topic's micros unit), or typed and aware


def _values(field: FieldSpec, avro_type: Any) -> st.SearchStrategy[Any]:
    """Source values of the right type for one column-read field."""
    if field.enum:
        return st.sampled_from(sorted(field.enum))
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "decimal":
            return _decimals(avro_type["precision"], avro_type["scale"])
        if logical == "date":
            return _dates()
        if logical in ("timestamp-millis", "timestamp-micros"):
            return _timestamps()
        if avro_type["type"] == "enum":
            return st.sampled_from(avro_type["symbols"])
        avro_type = avro_type["type"]
    if avro_type == "string":
        return STRINGS
    if avro_type == "boolean":
        return st.booleans() | st.sampled_from([0, 1])
    raise AssertionError(f"no source values for {avro_type!r}: extend this test")


def _types(table: TableSpec) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in raw_schema(table.entity)["fields"]}


def _column_values(table: TableSpec) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy for every source column the table's mapping reads."""
    types = _types(table)
    columns: dict[str, st.SearchStrategy[Any]] = dict.fromkeys(table.id_columns, IDS)
    json_keys: dict[str, dict[str, st.SearchStrategy[Any]]] = {}
    for field in table.fields:
        avro_type, nullable = _branch(types[field.name])
        if field.is_const:
            continue
        if field.template is not None:
            columns.update(dict.fromkeys(field.template_columns, IDS))
            continue
        assert field.column is not None
        values = _values(field, avro_type)
        if field.path:
            assert len(field.path) == 1, "nested JSON paths: extend this test"
            json_keys.setdefault(field.column, {})[field.path[0]] = values | st.none() if nullable else values
            continue
        assert field.column not in columns, "a column read by two fields: extend this test"
        columns[field.column] = values | st.none() if nullable else values
    for column, keys in json_keys.items():  # json/jsonb columns arrive as text
        text = st.fixed_dictionaries({}, optional=keys).map(lambda d: orjson.dumps(d, default=str).decode())
        columns[column] = text | st.none()
    return columns


def _event(table: TableSpec, row: dict[str, Any], op: Op = Op.UPDATE) -> ChangeEvent:
    topic = next(t for t in SPEC.topics if t.endswith("." + table.table))
    key = {c: row[c] for c in table.id_columns}
    return ChangeEvent(Position(topic, 0, 7), table.table, op, key, row, Version(1, 10, 1, 0, 7))


ROWS = {name: st.fixed_dictionaries(_column_values(SPEC.tables[name])) for name in TABLES}


@pytest.mark.parametrize("name", TABLES)
def test_every_mapped_record_passes_schema_validation(name: str) -> None:
    table = SPEC.tables[name]
    fields = set(_types(table))

    @settings(max_examples=120, deadline=None)
    @given(row=ROWS[name], op=st.sampled_from([Op.READ, Op.CREATE, Op.UPDATE]))
    def check(row: dict[str, Any], op: Op) -> None:
        change = MAPPER.map(_event(table, row, op))
        assert not change.missing
        assert set(change.values) == fields  # every field, none left to a schema default
        validate(table.entity, change.values)

    check()


def _wrong_values(field: FieldSpec, avro_type: Any) -> st.SearchStrategy[Any]:
    """Values no converter for the field may accept, each carrying the canary."""
    containers = st.sampled_from([[CANARY], {CANARY: CANARY}])
    if field.path:
        return containers  # inside the JSON column: anything JSON can hold but text
    wrong = containers | st.just(CANARY.encode())
    if field.template is None and avro_type != "string":
        wrong |= st.just(CANARY)  # text where a number, date, symbol or flag belongs
    return wrong


@st.composite
def _wrong_rows(draw: Callable[..., Any]) -> tuple[TableSpec, FieldSpec, dict[str, Any]]:
    table = SPEC.tables[draw(st.sampled_from(TABLES))]
    row: dict[str, Any] = draw(ROWS[table.table])
    field = draw(st.sampled_from([f for f in table.fields if not f.is_const]))
    avro_type, _ = _branch(_types(table)[field.name])
    wrong = draw(_wrong_values(field, avro_type))
    if field.template is not None:
        row[draw(st.sampled_from(field.template_columns))] = wrong
    elif field.path:
        assert field.column is not None
        row[field.column] = orjson.dumps({field.path[0]: wrong}).decode()
    else:
        assert field.column is not None
        row[field.column] = wrong
    return table, field, row


@settings(max_examples=150, deadline=None)
@given(_wrong_rows())
def test_a_wrong_typed_value_is_a_mapping_error_without_the_value(
    case: tuple[TableSpec, FieldSpec, dict[str, Any]],
) -> None:
    table, field, row = case
    with pytest.raises(MappingError) as info:
        MAPPER.map(_event(table, row))
    message = str(info.value)
    assert info.value.reason in {
        "wrong_type",
        "unknown_enum_symbol",
        "unparseable_decimal",
        "unparseable_date",
        "unparseable_timestamp",
    }
    assert message.startswith(f"{table.entity}")
    assert f".{field.name}:" in message or any(c in message for c in field.template_columns)
    assert CANARY not in message
    assert CANARY not in repr(info.value)
