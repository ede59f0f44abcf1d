"""The snapshot's fast path writes the same bytes as the typed path, for any record."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.model import ENTITY_NAMES, raw_schema, samples
from connector.sinks.formats import CSV, JSON_LINES
from connector.source.version import Version
from connector.state.codec import encode_row
from connector.state.resolve import StateRow


def stored(record: dict[str, Any]) -> dict[str, Any]:
    """The values as the state topic holds them: the ingest's own encoding, parsed back."""
    values: dict[str, Any] = orjson.loads(encode_row(StateRow(Version(1, 1, 0, 0, 0), False, record)))["r"]
    return values


def _kinds(entity: str) -> dict[str, Any]:
    out = {}
    for field in raw_schema(entity)["fields"]:
        t = field["type"]
        t = next(b for b in t if b != "null") if isinstance(t, list) else t
        out[field["name"]] = t.get("logicalType", t.get("type")) if isinstance(t, dict) else t
    return out


timestamps = st.datetimes(  # hypothesis takes naive bounds and adds the zone itself
    min_value=dt.datetime(1900, 1, 1),  # noqa: DTZ001
    max_value=dt.datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(dt.UTC),
)
amounts = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("fmt", [CSV, JSON_LINES], ids=["csv", "jsonl"])
@pytest.mark.parametrize("entity", ENTITY_NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_stored_values_give_the_bytes_of_typed_values(entity: str, fmt: Any, data: st.DataObject) -> None:
    record = dict(samples.sample(entity))
    for name, kind in _kinds(entity).items():
        if record.get(name) is None:
            continue
        if kind == "timestamp-millis":
            record[name] = data.draw(timestamps)
        elif kind == "decimal":
            record[name] = data.draw(amounts)
        elif kind == "date":
            record[name] = data.draw(st.dates(min_value=dt.date(1800, 1, 1), max_value=dt.date(2200, 1, 1)))
        elif kind == "string" and data.draw(st.booleans()):
            record[name] = data.draw(st.text(max_size=12).filter(lambda t: "\x00" not in t))
    typed = b"".join(fmt.writer(entity).write_rows([record]))
    fast = b"".join(fmt.writer(entity, stored=True).write_rows([stored(record)]))
    assert fast == typed


def test_values_outside_the_fast_shape_take_the_typed_path() -> None:
    record = dict(samples.sample("Claim"))
    record["BilledAmount"] = Decimal("245")  # fewer places than the scale
    record["PaidAmount"] = Decimal("-0.00")
    record["UpdatedAt"] = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    typed = b"".join(CSV.writer("Claim").write_rows([record]))
    assert b"".join(CSV.writer("Claim", stored=True).write_rows([stored(record)])) == typed
    assert b"245.00" in typed
    assert b"2024-01-01T20:00:00.000Z" in typed
