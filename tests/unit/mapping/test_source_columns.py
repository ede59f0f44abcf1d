"""A row's source columns: encoded safely, and merged through the state like its fields.

The merge's property for fields (any delivery order gives the in-order state) must hold for
the source columns too, and a complete row's source columns must be what its values were
mapped from: re-mapping them with the same mapping gives the same values. Here each field is
mapped from the column of its lower-case name, one to one, so the check is direct.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.mapping.change import EntityChange
from connector.mapping.source_columns import SourceColumns, decode_source, encode_source
from connector.source.version import Version
from connector.state.codec import (
    decode_row,
    encode_row,
    is_complete,
    is_deleted,
    row_mapping_version,
    without_source,
)
from connector.state.resolve import StateRow, merge, source_of

FIELDS = ("EntityId", "Name", "Notes", "Status")
TABLE = "public.family"


def v(n: int) -> Version:
    return Version(1, n, 0, 0, n)


def upsert(n: int, *, missing: tuple[str, ...] = (), extra_toast: bool = False) -> EntityChange:
    """An update at version ``n``; ``missing`` fields' columns carried the unchanged-TOAST
    placeholder, and ``extra_toast`` an unmapped column (``blob``) did too."""
    values = {f: f"{f}@{n}" for f in FIELDS if f not in missing}
    columns = {f.lower(): f"{f}@{n}" for f in FIELDS if f not in missing}
    unavailable = {f.lower() for f in missing}
    if extra_toast:
        unavailable.add("blob")
    else:
        columns["blob"] = f"blob@{n}"
    return EntityChange(
        "Family",
        "FAM-1",
        False,
        v(n),
        values,
        frozenset(missing),
        source=SourceColumns(TABLE, columns),
        unavailable=frozenset(unavailable),
    )


def delete(n: int) -> EntityChange:
    return EntityChange("Family", "FAM-1", True, v(n), {})


def apply(changes: list[EntityChange]) -> StateRow | None:
    row: StateRow | None = None
    for change in changes:
        merged = merge(row, change)
        if merged is not None:  # through the codec, as the store keeps it: "src" stays text
            merged = decode_row("Family", encode_row(merged), typed=False)
        row = merged or row
    return row


def columns_seen(row: StateRow | None) -> tuple[Any, ...]:
    """What a re-mapping of the row would read: its complete source columns, or why not."""
    if row is None or row.deleted:
        return ("none",)
    source = source_of(row)
    assert source is not None
    return (sorted(source.columns.items()), sorted(source.missing))


change_st = st.builds(
    lambda n, kind, missing, blob: delete(n) if kind == "d" else upsert(n, missing=missing, extra_toast=blob),
    st.integers(1, 12),
    st.sampled_from(["u", "u", "u", "d"]),
    st.sampled_from([(), (), ("Notes",), ("Notes", "Status")]),
    st.booleans(),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[EntityChange], list[EntityChange]]:
    by_version = {c.version: c for c in draw(st.lists(change_st, min_size=1, max_size=10))}
    events = list(by_version.values())
    delivery = draw(st.permutations(events + draw(st.lists(st.sampled_from(events), max_size=5))))
    return events, delivery


@settings(max_examples=400, deadline=None)
@given(histories())
def test_source_columns_merge_in_any_order_to_the_in_order_columns_and_match_the_values(
    history: tuple[list[EntityChange], list[EntityChange]],
) -> None:
    events, delivery = history
    in_order = apply(sorted(events, key=lambda c: c.version))
    row = apply(delivery)
    assert columns_seen(row) == columns_seen(in_order)
    source = source_of(row)
    if row is not None and not row.deleted and source is not None:
        for name, value in row.values.items():  # the columns are what the values came from
            assert source.columns.get(name.lower()) == value
        assert {f.lower() for f in row.missing} <= source.missing


def test_an_unchanged_toast_column_keeps_the_stored_column_and_an_older_event_fills_a_missing_one() -> None:
    row = apply([upsert(1), upsert(2, missing=("Notes",), extra_toast=True)])
    source = source_of(row)
    assert source is not None
    assert source.complete
    assert (source.columns["notes"], source.columns["blob"], source.columns["name"]) == (
        "Notes@1",
        "blob@1",
        "Name@2",
    )
    late = apply([upsert(5, missing=("Notes",), extra_toast=True), upsert(3)])
    assert source_of(late) == SourceColumns(
        TABLE,
        {**{f.lower(): f"{f}@5" for f in FIELDS if f != "Notes"}, "notes": "Notes@3", "blob": "blob@3"},
        frozenset(),
        {"notes": v(3), "blob": v(3)},
    )


def test_a_row_without_source_columns_keeps_none_and_a_delete_marker_keeps_its_own() -> None:
    plain = EntityChange("Family", "FAM-1", False, v(1), {"EntityId": "FAM-1"})
    assert apply([plain]) is not None
    assert source_of(apply([plain])) is None
    marker = apply([upsert(1), delete(2)])
    assert marker is not None
    assert marker.deleted
    assert source_of(marker) == source_of(apply([upsert(1)]))


def test_typed_values_round_trip_and_the_encoding_is_a_string_the_unparsed_readers_see_through() -> None:
    columns = {
        "d": "x",
        "m": ["y"],
        "mv": "0123456789ab",
        "amount": Decimal("1.50"),
        "born": dt.date(1990, 1, 2),
        "at": dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC),
        "time": dt.time(1, 2, 3),
        "raw": b"\x00\xff",
        "doc": {"nested": [1, "two", None]},
        "quote": 'a"b\\c',
    }
    source = SourceColumns(TABLE, columns, frozenset({"late"}), {"m": v(1)})
    assert decode_source(encode_source(source)) == source
    row = StateRow(v(3), False, {"EntityId": "FAM-1"}, mapping_version="abcdefabcdef", source=source)
    raw = encode_row(row)
    assert is_complete(raw)
    assert not is_deleted(raw)
    assert row_mapping_version(raw) == "abcdefabcdef"  # nor one named mv
    assert source_of(decode_row("Family", raw)) == source


def test_the_python_cut_reader_keeps_a_row_without_its_source_columns() -> None:
    # The compiled reader's spill does the same (tests/unit/snapshot/test_compiled_cut.py).
    source = SourceColumns(TABLE, {"d": 1, "q": 'a"b\\\\', "src": '","src":"'})
    row = StateRow(v(3), False, {"EntityId": "FAM-1"}, mapping_version="abcdefabcdef", source=source)
    plain = StateRow(v(3), False, {"EntityId": "FAM-1"}, mapping_version="abcdefabcdef")
    assert without_source(encode_row(row)) == encode_row(plain)
    assert without_source(encode_row(plain)) == encode_row(plain)
