"""Delete-marker purge: the pure decision, its schedule, and why the horizon makes it safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.mapping.change import EntityChange
from connector.state.codec import decode_row, encode_row
from connector.state.purge import MarkerPurge, expired_markers, purgeable
from connector.state.resolve import StateRow, merge
from connector.state.store import PartitionStore
from tests.unit.state.test_resolve import change_st, delete, upsert, v

DAY_MS = 24 * 3600 * 1000
LIVE = StateRow(v(1), False, {"EntityId": "FAM-1", "FamilyName": "x"})
MARKER = StateRow(v(2), True, {"EntityId": "FAM-1"}, delete_floor=v(2))


# -- the pure decision -----------------------------------------------------------------------


def test_a_stamped_marker_is_purgeable_from_the_horizon_on_and_not_before() -> None:
    data = encode_row(MARKER, deleted_at_ms=10 * DAY_MS)
    assert not purgeable(data, 10 * DAY_MS + 7 * DAY_MS - 1, 7 * DAY_MS)
    assert purgeable(data, 10 * DAY_MS + 7 * DAY_MS, 7 * DAY_MS)


def test_live_rows_unstamped_markers_and_a_zero_horizon_are_never_purged() -> None:
    assert not purgeable(encode_row(LIVE, deleted_at_ms=0), 100 * DAY_MS, DAY_MS)  # no stamp on live rows
    assert not purgeable(encode_row(MARKER), 100 * DAY_MS, DAY_MS)  # written before stamping
    assert not purgeable(encode_row(MARKER, deleted_at_ms=0), 100 * DAY_MS, 0)  # purge off


def test_the_stamp_is_kept_in_the_bytes_but_not_in_the_row() -> None:
    data = encode_row(MARKER, deleted_at_ms=1234)
    assert orjson.loads(data)["dt"] == 1234
    assert decode_row("Family", data) == MARKER
    assert "dt" not in orjson.loads(encode_row(LIVE, deleted_at_ms=1234))


def test_expired_markers_picks_only_old_markers_and_stops_at_the_limit() -> None:
    rows = [
        (b"Family/FAM-1", encode_row(MARKER, deleted_at_ms=0)),
        (b"Family/FAM-2", encode_row(LIVE)),
        (b"Family/FAM-3", encode_row(MARKER, deleted_at_ms=DAY_MS)),  # too young
        (b"Family/FAM-4", encode_row(MARKER, deleted_at_ms=0)),
    ]
    assert expired_markers(rows, DAY_MS + 1, DAY_MS) == [b"Family/FAM-1", b"Family/FAM-4"]
    assert expired_markers(rows, DAY_MS + 1, DAY_MS, limit=1) == [b"Family/FAM-1"]


# -- the schedule over a real local store ------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_scans_are_spaced_by_a_quarter_of_the_horizon_and_forget_resets(tmp_path: Path) -> None:
    clock = _Clock()
    purge = MarkerPurge(400, clock=clock, monotonic=clock)
    store = PartitionStore(tmp_path / "p0")
    store.write({b"Family/FAM-1": encode_row(MARKER, deleted_at_ms=purge.now_ms())}, 1)
    assert purge.due(0, store) == []  # scanned: too young
    clock.t += 399
    assert purge.due(0, store) == []  # scanned again: still too young
    clock.t += 51
    assert purge.due(0, store) == []  # old enough, but the next scan is 100 s after the last
    clock.t += 49
    assert purge.due(0, store) == [b"Family/FAM-1"]
    purge.forget(0)
    assert purge.due(0, store) == [b"Family/FAM-1"]  # a new owner scans at once
    assert MarkerPurge(0).due(0, store) == []  # off
    store.close()


def test_a_none_value_deletes_the_key_with_the_offset_in_one_write(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.write({b"Family/FAM-1": b"m", b"Family/FAM-2": b"x"}, 5)
    store.write({b"Family/FAM-1": None}, 9)
    assert store.get(b"Family/FAM-1") is None
    assert [k for k, _ in store.items()] == [b"Family/FAM-2"]
    assert store.next_offset == 9
    store.close()


# -- why the horizon makes it safe -------------------------------------------------------------


def _observable(row: StateRow | None) -> tuple[Any, ...]:
    """What a reader sees: a marker and a purged key are both absent."""
    if row is None or row.deleted:
        return ("absent",)
    return ("live", row.version, sorted(row.values.items()), sorted(row.missing))


def _run(delivery: list[EntityChange], purge_at: set[int]) -> tuple[StateRow | None, int]:
    """Apply ``delivery``; after step i in ``purge_at``, purge the row if it is a marker that
    the horizon allows purging: no event at or below its version is still to arrive."""
    row: StateRow | None = None
    purges = 0
    for i, change in enumerate(delivery):
        row = merge(row, change) or row
        later = delivery[i + 1 :]
        if i in purge_at and row is not None and row.deleted and all(c.version > row.version for c in later):
            row, purges = None, purges + 1
    return row, purges


@st.composite
def _histories(draw: st.DrawFn) -> tuple[list[EntityChange], set[int]]:
    by_version = {c.version: c for c in draw(st.lists(change_st, min_size=1, max_size=10))}
    events = list(by_version.values())
    delivery = draw(st.permutations(events + draw(st.lists(st.sampled_from(events), max_size=5))))
    if draw(st.booleans()):  # mostly in order, as a partition delivers: purges get their chance
        delivery.sort(key=lambda c: c.version)
    purge_at = draw(st.sets(st.integers(0, len(delivery) - 1), min_size=1))
    return delivery, purge_at


@settings(max_examples=400, deadline=None)
@given(_histories())
def test_purging_once_no_older_event_can_arrive_changes_nothing_a_reader_sees(
    history: tuple[list[EntityChange], set[int]],
) -> None:
    delivery, purge_at = history
    kept, _ = _run(delivery, set())
    purged, _ = _run(delivery, purge_at)
    assert _observable(purged) == _observable(kept)


def test_purging_while_an_older_event_can_still_arrive_would_resurrect() -> None:
    """Why the horizon exists: the marker is the only thing that makes the late update stale."""
    row = merge(merge(None, upsert(1)), delete(3))
    assert row is not None
    assert merge(row, upsert(2)) is None  # kept: stale
    resurrected = merge(None, upsert(2))  # purged too early: the late update is all there is
    assert _observable(resurrected) == ("live", v(2), sorted(upsert(2).values.items()), [])
