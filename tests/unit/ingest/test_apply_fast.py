"""The batch view's shortcut for the compiled path's changes ends where ``apply_change`` does.

``BatchView.apply_fast`` takes the fast path's encoded row as the new row after reading only
the head of the stored row (``peek``). Over every kind of stored row (none, live, partial,
filled from older versions, delete markers with and without values, raised delete floors)
and every complete change (newer, equal, older; upsert or delete), with the key already
touched in the batch or not, both must give the same outcome, the same bytes to produce and
store, and the same change to the live-entity count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import _fastpath
from connector.ingest.batch import BatchView
from connector.mapping.change import EntityChange
from connector.mapping.fastpath import FastChange, Peek
from connector.mapping.source_columns import SourceColumns
from connector.source import Position
from connector.source.version import Version
from connector.state.apply import Outcome, apply_change
from connector.state.codec import decode_row, encode_row, state_key
from connector.state.resolve import StateRow, merge

pytestmark = pytest.mark.fastpath

FIELDS = ("EntityId", "FamilyName", "PlanCode", "Status")
KEY = state_key("Family", "FAM-1")


def PEEK(raw: bytes) -> tuple[int, int, int, int, int] | None:  # noqa: N802 (reads as the extension's)
    """The extension's ``peek``, loaded when a test calls it: the module collects without it."""
    peek: Peek = _fastpath.load().peek
    return peek(raw)


class _Store:
    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw

    def get(self, key: bytes) -> bytes | None:
        return self.raw if key == KEY else None


class _Emit:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []

    def __call__(self, key: bytes, value: bytes | None) -> None:
        self.sent.append((key, value))

    def finish(self) -> None:
        pass


def _version(n: int) -> Version:
    return Version(1, n, 0, 0, n)


def _change(n: int, kind: str, missing: tuple[str, ...] = ()) -> EntityChange:
    if kind == "d":
        return EntityChange("Family", "FAM-1", True, _version(n), {})
    values = {f: f"{f}@{n}" for f in FIELDS if f not in missing}
    # The source columns the values came from (the row keeps them, "src"): a field left out as
    # unchanged TOAST is its column left out.
    columns = {f.lower(): f"{f}@{n}" for f in FIELDS if f not in missing}
    source = SourceColumns("public.family", columns)
    unavailable = frozenset(f.lower() for f in missing)
    return EntityChange(
        "Family",
        "FAM-1",
        False,
        _version(n),
        values,
        frozenset(missing),
        source=source,
        unavailable=unavailable,
    )


def _fast(change: EntityChange) -> FastChange:
    """What the compiled path hands over for ``change`` (a complete one)."""
    row = (
        None
        if change.deleted
        else encode_row(StateRow(change.version, False, change.values, source=change.source))
    )
    version = tuple(change.version)
    assert len(version) == 5
    return FastChange(
        change.entity,
        change.entity_id,
        change.deleted,
        version,
        KEY,
        row,
        None,
        Position("t", 0, 1),  # type: ignore[arg-type]
    )


history = st.lists(
    st.tuples(
        st.integers(1, 9),
        st.sampled_from(["u", "u", "d"]),
        st.sampled_from([(), (), ("PlanCode",), ("PlanCode", "Status")]),
    ),
    max_size=6,
)


def _stored(steps: list[tuple[int, str, tuple[str, ...]]]) -> StateRow | None:
    row: StateRow | None = None
    for n, kind, missing in steps:
        row = merge(row, _change(n, kind, missing)) or row
    return row


def _run(raw: bytes | None, before: list[EntityChange | FastChange], change: EntityChange, fast: bool) -> Any:
    emit = _Emit()
    view = BatchView(_Store(raw), emit, stamp_ms=1234)  # type: ignore[arg-type]
    for earlier in before:
        if isinstance(earlier, FastChange):
            view.apply_fast(earlier, PEEK)
        else:
            apply_change(view, earlier)
    outcome = view.apply_fast(_fast(change), PEEK) if fast else apply_change(view, change)
    encoded = {
        key: None if value is None else decode_row("Family", value, typed=False)
        for key, value in view.encoded.items()
    }
    return outcome, emit.sent, encoded, +view.live_changes()


@settings(max_examples=800)
@given(
    steps=history,
    in_batch=st.lists(st.tuples(st.integers(1, 10), st.sampled_from(["u", "d"]), st.booleans()), max_size=2),
    n=st.integers(1, 10),
    kind=st.sampled_from(["u", "d"]),
    stamp=st.sampled_from([None, 99]),
)
def test_the_shortcut_gives_the_same_outcome_bytes_and_live_count(
    steps: list[tuple[int, str, tuple[str, ...]]],
    in_batch: list[tuple[int, str, bool]],
    n: int,
    kind: str,
    stamp: int | None,
) -> None:
    stored = _stored(steps)
    raw = None if stored is None else encode_row(stored, deleted_at_ms=stamp)
    before: list[EntityChange | FastChange] = [
        _fast(_change(m, k)) if via_fast else _change(m, k) for m, k, via_fast in in_batch
    ]
    change = _change(n, kind)
    assert _run(raw, before, change, True) == _run(raw, before, change, False)


@given(steps=history.filter(bool), stamp=st.sampled_from([None, 99]))
def test_peek_reads_what_decode_reads_or_declines(
    steps: list[tuple[int, str, tuple[str, ...]]], stamp: int | None
) -> None:
    row = _stored(steps)
    assert row is not None
    raw = encode_row(row, deleted_at_ms=stamp)
    head = PEEK(raw)
    full = decode_row("Family", raw, typed=False)
    if full.deleted or full.missing or full.field_versions or full.delete_floor is not None:
        assert head is None
    else:
        assert head == tuple(full.version)


def test_the_common_update_produces_the_fast_row_as_is() -> None:
    stored = encode_row(StateRow(_version(3), False, {"EntityId": "FAM-1", "FamilyName": 'x","df":[9]'}))
    assert PEEK(stored) == tuple(_version(3))  # an escaped look-alike in a value is not a key
    fast = _fast(_change(4, "u"))
    emit = _Emit()
    view = BatchView(_Store(stored), emit, stamp_ms=1)  # type: ignore[arg-type]
    assert view.apply_fast(fast, PEEK) is Outcome.APPLIED
    assert emit.sent == [(KEY, fast.row)]
    assert view.rows == {}  # no StateRow was built
    assert view.live_changes() == Counter()
