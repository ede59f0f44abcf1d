"""The merge is order-independent: any delivery order, with duplicates, gives one state."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.mapping.change import EntityChange
from connector.source.version import Version
from connector.state.resolve import StateRow, merge

FIELDS = ("EntityId", "Name", "Notes", "Status")


def v(n: int, phase: int = 1) -> Version:
    return Version(phase, n, 0, 0, n)


def upsert(n: int, *, missing: tuple[str, ...] = ()) -> EntityChange:
    values = {f: f"{f}@{n}" for f in FIELDS if f not in missing}
    return EntityChange("Family", "FAM-1", False, v(n), values, frozenset(missing))


def delete(n: int) -> EntityChange:
    return EntityChange("Family", "FAM-1", True, v(n), {})


def apply(changes: list[EntityChange]) -> StateRow | None:
    row: StateRow | None = None
    for change in changes:
        row = merge(row, change) or row
    return row


def visible(row: StateRow | None) -> tuple[Any, ...]:
    """What a reader of the state can observe: live values, or that the row is gone."""
    if row is None:
        return ("absent",)
    if row.deleted:
        return ("deleted", row.version)
    return ("live", row.version, sorted(row.values.items()), sorted(row.missing))


def oracle(changes: list[EntityChange]) -> tuple[Any, ...]:
    """In-version-order replay with the plain rule: a partial update keeps the previous values."""
    state: dict[str, Any] | None = None
    deleted = False
    top = None
    for c in sorted({c.version: c for c in changes}.values(), key=lambda c: c.version):
        top = c.version
        if c.deleted:
            state, deleted = None, True
            continue
        prev = state or {}
        state = dict(c.values)
        for name in c.missing:
            if name in prev:
                state[name] = prev[name]
        deleted = False
    if top is None:
        return ("absent",)
    if deleted or state is None:
        return ("deleted", top)
    missing = sorted(set(FIELDS) - state.keys())
    return ("live", top, sorted(state.items()), missing)


change_st = st.builds(
    lambda n, kind, missing: delete(n) if kind == "d" else upsert(n, missing=missing),
    st.integers(1, 12),
    st.sampled_from(["u", "u", "u", "d"]),
    st.sampled_from([(), (), ("Notes",), ("Notes", "Status")]),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[EntityChange], list[EntityChange]]:
    """A set of distinct-version changes and one delivery of them: shuffled, with duplicates."""
    by_version = {c.version: c for c in draw(st.lists(change_st, min_size=1, max_size=10))}
    events = list(by_version.values())
    delivery = draw(st.permutations(events + draw(st.lists(st.sampled_from(events), max_size=5))))
    return events, delivery


@settings(max_examples=400, deadline=None)
@given(histories())
def test_any_delivery_order_with_duplicates_gives_the_in_order_state(
    history: tuple[list[EntityChange], list[EntityChange]],
) -> None:
    events, delivery = history
    assert visible(apply(delivery)) == oracle(events)


def test_late_older_update_does_not_resurrect_a_deleted_row() -> None:
    row = apply([upsert(1), delete(3), upsert(2)])
    assert row is not None
    assert row.deleted
    assert row.version == v(3)


def test_delete_then_recreate_is_live_with_the_new_values() -> None:
    row = apply([upsert(1), delete(2), upsert(3)])
    assert visible(row) == ("live", v(3), sorted(upsert(3).values.items()), [])


def test_replay_of_the_same_event_changes_nothing() -> None:
    row = apply([upsert(1)])
    assert merge(row, upsert(1)) is None


def test_snapshot_read_never_outranks_a_streaming_change() -> None:
    streaming = upsert(5)
    resnapshot = EntityChange("Family", "FAM-1", False, Version(0, 99, 0, 0, 99), {"Name": "old"})
    row = apply([streaming, resnapshot])
    assert row is not None
    assert row.values == streaming.values


def test_toast_placeholder_takes_the_previous_value_in_order_and_out_of_order() -> None:
    in_order = apply([upsert(1), upsert(2, missing=("Notes",))])
    out_of_order = apply([upsert(2, missing=("Notes",)), upsert(1)])
    assert in_order is not None
    assert out_of_order is not None
    assert in_order.values["Notes"] == out_of_order.values["Notes"] == "Notes@1"
    assert in_order.complete
    assert out_of_order.complete


def test_toast_placeholder_with_no_earlier_value_leaves_the_row_incomplete() -> None:
    row = apply([upsert(2, missing=("Notes",))])
    assert row is not None
    assert not row.complete
    assert row.missing == {"Notes"}


def test_a_row_is_labelled_only_with_a_mapping_that_made_all_of_its_values() -> None:
    """A newer update under a new mapping that keeps an unchanged-TOAST value mapped by the old
    one keeps the old version: the snapshot must still see the row as not re-mapped."""
    from connector.mapping.change import EntityChange as Change

    old = merge(
        None, Change("Family", "FAM-1", False, Version(1, 1, 0, 0, 0), {"A": 1, "B": 2}, mapping_version="v1")
    )
    assert old is not None
    assert old.mapping_version == "v1"
    whole = merge(
        old, Change("Family", "FAM-1", False, Version(1, 2, 0, 0, 0), {"A": 3, "B": 4}, mapping_version="v2")
    )
    assert whole is not None
    assert whole.mapping_version == "v2"
    partial = merge(
        old,
        Change(
            "Family", "FAM-1", False, Version(1, 2, 0, 0, 0), {"A": 3}, frozenset({"B"}), mapping_version="v2"
        ),
    )
    assert partial is not None
    assert partial.values == {"A": 3, "B": 2}
    assert partial.mapping_version == "v1"
    again = merge(
        whole,
        Change(
            "Family", "FAM-1", False, Version(1, 3, 0, 0, 0), {"A": 5}, frozenset({"B"}), mapping_version="v2"
        ),
    )
    assert again is not None
    assert again.mapping_version == "v2"
    deleted = merge(whole, Change("Family", "FAM-1", True, Version(1, 4, 0, 0, 0), {}, mapping_version="v3"))
    assert deleted is not None
    assert deleted.mapping_version == "v2"
