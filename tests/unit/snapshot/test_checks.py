"""Orphan and count-change checks: the rules, the cascade, and reports an operator can read."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.model import ENTITY_NAMES, REFERENCES
from connector.snapshot.checks import (
    MissingParent,
    Orphan,
    OrphanPolicy,
    OrphanReport,
    count_change,
    orphans,
)
from connector.snapshot.exceptions import SnapshotArgumentError, SnapshotConfigError

Rows = dict[str, list[tuple[str, ...]]]


def graph() -> Rows:
    """A consistent snapshot: two of everything, each child pointing at existing parents."""
    return {
        "Family": [("F1",), ("F2",)],
        "Provider": [("P1",), ("P2",)],
        "FamilyMember": [("M1", "F1"), ("M2", "F2")],
        "Care": [("C1", "M1", "P1"), ("C2", "M2", "P2")],
        "Claim": [("L1", "C1", "P1"), ("L2", "C2", "P2")],
        "EOP": [("E1", "L1"), ("E2", "L2")],
    }


def check(
    rows: Rows, policy: OrphanPolicy = OrphanPolicy.HOLD_OUT, blocked: Sequence[str] = ()
) -> OrphanReport:
    present = {entity: {row[0] for row in entity_rows} for entity, entity_rows in rows.items()}
    return orphans(rows, present, policy=policy, blocked=blocked)


def test_a_consistent_snapshot_has_no_orphans() -> None:
    report = check(graph())
    assert report.blocked == ()
    assert [result.entity for result in report.entities] == list(ENTITY_NAMES)
    assert all(result.orphans == () for result in report.entities)
    assert report.counts()["Claim"] == {"checked": 2, "orphans": 0, "blocked": False}
    assert report.counts()["Family"] == {"checked": 0, "orphans": 0, "blocked": False}


def test_a_claim_without_its_care_is_held_out_and_so_is_its_eop() -> None:
    rows = graph()
    rows["Care"].remove(("C1", "M1", "P1"))
    report = check(rows)
    assert report.held_out("Claim") == {"L1"}
    assert report.held_out("EOP") == {"E1"}
    claim = report.entities[ENTITY_NAMES.index("Claim")]
    assert claim.orphans == (Orphan("L1", (MissingParent("CareId", "Care", "C1", "absent"),)),)
    eop = report.entities[ENTITY_NAMES.index("EOP")]
    assert eop.orphans == (Orphan("E1", (MissingParent("ClaimId", "Claim", "L1", "held_out"),)),)
    assert report.blocked == ()


def test_a_missing_family_cascades_to_the_bottom() -> None:
    rows = graph()
    rows["Family"].remove(("F2",))
    report = check(rows)
    assert [sorted(report.held_out(entity)) for entity in ENTITY_NAMES] == [
        [],
        [],
        ["M2"],
        ["C2"],
        ["L2"],
        ["E2"],
    ]


def test_every_missing_parent_of_an_orphan_is_listed() -> None:
    rows = graph()
    rows["Care"].append(("C3", "M9", "P9"))
    (orphan,) = check(rows).entities[ENTITY_NAMES.index("Care")].orphans
    assert orphan == Orphan(
        "C3",
        (
            MissingParent("FamilyMemberId", "FamilyMember", "M9", "absent"),
            MissingParent("ProviderId", "Provider", "P9", "absent"),
        ),
    )


def test_block_policy_blocks_the_entity_and_everything_below() -> None:
    rows = graph()
    rows["Care"].remove(("C1", "M1", "P1"))
    report = check(rows, OrphanPolicy.BLOCK)
    assert report.blocked == ("Claim", "EOP")
    assert report.held_out("Claim") == frozenset()
    results = {result.entity: result for result in report.entities}
    assert results["Claim"].blocked_because == "orphans"
    assert results["EOP"].blocked_because == "parent Claim blocked"
    assert results["EOP"].orphans == ()  # its claims exist: nothing is held out under BLOCK


def test_an_entity_blocked_by_another_check_blocks_its_descendants() -> None:
    report = check(graph(), blocked=["Provider"])
    assert report.blocked == ("Provider", "Care", "Claim", "EOP")
    assert report.entities[1].blocked_because == "blocked by an earlier check"
    assert check(graph(), blocked=["Family"]).blocked == ("Family", "FamilyMember", "Care", "Claim", "EOP")


def test_orphans_are_sorted_whatever_the_input_order() -> None:
    rows = graph()
    rows["EOP"] = [(f"E{i}", "L9") for i in range(50)]
    shuffled = dict(rows, EOP=random.Random(3).sample(rows["EOP"], 50))
    assert check(rows) == check(shuffled)
    ids = [orphan.entity_id for orphan in check(rows).entities[-1].orphans]
    assert ids == sorted(ids)


class OnlyContains:
    """A parent lookup that supports nothing but ``in``, like a view over the state store."""

    def __init__(self, ids: set[str]) -> None:
        self._ids = ids

    def __contains__(self, item: object) -> bool:
        return item in self._ids


def test_rows_stream_once_and_parents_need_only_membership() -> None:
    rows = graph()

    def once(entity: str) -> Iterator[tuple[str, ...]]:
        yield from rows[entity]

    present = {entity: OnlyContains({row[0] for row in rows[entity]}) for entity in ENTITY_NAMES}
    streamed = {entity: once(entity) for entity in ENTITY_NAMES if REFERENCES[entity]}
    report = orphans(streamed, present)
    assert report.counts()["EOP"]["checked"] == 2


def test_report_is_json_and_counts_carry_no_entity_ids() -> None:
    rows = graph()
    rows["Family"].remove(("F2",))
    report = check(rows)
    document = json.loads(json.dumps(dataclasses.asdict(report)))
    assert document["policy"] == "hold_out"
    assert document["entities"][2]["orphans"][0]["entity_id"] == "M2"
    assert "M2" not in json.dumps(report.counts())
    assert "F2" not in json.dumps(report.counts())


def test_bad_inputs_name_the_problem() -> None:
    rows = graph()
    with pytest.raises(SnapshotArgumentError, match="no rows given for EOP"):
        orphans({k: v for k, v in rows.items() if k != "EOP"}, {e: set() for e in ENTITY_NAMES})
    with pytest.raises(SnapshotArgumentError, match="no EntityIds given for Family"):
        orphans(rows, {e: set() for e in ENTITY_NAMES if e != "Family"})
    with pytest.raises(SnapshotArgumentError, match="row 1 holds 2 values"):
        orphans(dict(rows, Care=[("C1", "M1")]), {e: set() for e in ENTITY_NAMES})
    with pytest.raises(SnapshotArgumentError, match="unknown entities: Patient"):
        check(rows, blocked=["Patient"])
    with pytest.raises(SnapshotArgumentError, match="unknown entity"):
        check(rows).held_out("Patient")


@st.composite
def snapshots(draw: st.DrawFn) -> Rows:
    """A random snapshot: up to six ids per entity, each association pointing at an id that may not exist."""
    rows: Rows = {}
    for entity in ENTITY_NAMES:
        ids = draw(st.lists(st.sampled_from([f"{entity[0]}{i}" for i in range(6)]), unique=True, max_size=6))
        rows[entity] = [
            (
                entity_id,
                *(
                    draw(st.sampled_from([f"{ref.parent[0]}{i}" for i in range(7)]))
                    for ref in REFERENCES[entity]
                ),
            )
            for entity_id in ids
        ]
    return rows


@settings(max_examples=300)
@given(snapshots())
def test_hold_out_leaves_no_delivered_record_pointing_at_an_undelivered_one(rows: Rows) -> None:
    report = check(rows)
    delivered = {
        entity: {row[0] for row in rows[entity]} - report.held_out(entity) for entity in ENTITY_NAMES
    }
    for entity in ENTITY_NAMES:
        for entity_id, *parent_ids in rows[entity]:
            if entity_id in delivered[entity]:
                for ref, parent_id in zip(REFERENCES[entity], parent_ids, strict=True):
                    assert parent_id in delivered[ref.parent]
    # and it holds out no more than needed: the fixpoint of "remove what points at nothing"
    kept = {entity: {row[0] for row in rows[entity]} for entity in ENTITY_NAMES}
    changed = True
    while changed:
        changed = False
        for entity in ENTITY_NAMES:
            for entity_id, *parent_ids in rows[entity]:
                refs = zip(REFERENCES[entity], parent_ids, strict=True)
                if entity_id in kept[entity] and any(pid not in kept[ref.parent] for ref, pid in refs):
                    kept[entity].discard(entity_id)
                    changed = True
    assert delivered == kept
    assert report.blocked == ()


@settings(max_examples=200)
@given(snapshots())
def test_block_delivers_only_entities_whose_records_all_have_their_parents(rows: Rows) -> None:
    report = check(rows, OrphanPolicy.BLOCK)
    for entity in ENTITY_NAMES:
        if entity in report.blocked:
            continue
        assert all(parent not in report.blocked for parent in (ref.parent for ref in REFERENCES[entity]))
        for _, *parent_ids in rows[entity]:
            for ref, parent_id in zip(REFERENCES[entity], parent_ids, strict=True):
                assert parent_id in {row[0] for row in rows[ref.parent]}


# --- count change --------------------------------------------------------------------------------


def test_shrinking_by_more_than_half_blocks() -> None:
    check_ = count_change("Claim", 1000, 499)
    assert (check_.exceeded, check_.blocked, check_.overridden) == (True, True, False)
    assert check_.drop_ratio == pytest.approx(0.501)


def test_shrinking_by_exactly_the_ratio_passes() -> None:
    assert not count_change("Claim", 1000, 500).blocked
    assert not count_change("Claim", 100, 71, max_drop_ratio=0.29).blocked  # 0.29 is not exact in binary
    assert count_change("Claim", 100, 70, max_drop_ratio=0.29).blocked


def test_an_override_lets_it_through_and_says_so() -> None:
    check_ = count_change("Claim", 1000, 10, override=True)
    assert (check_.exceeded, check_.overridden, check_.blocked) == (True, True, False)
    assert not count_change("Claim", 1000, 900, override=True).overridden


def test_growth_no_history_and_an_empty_history_never_block() -> None:
    assert count_change("Family", 10, 1000).drop_ratio == -99.0
    assert not count_change("Family", 10, 1000).blocked
    assert count_change("Family", None, 0).drop_ratio is None
    assert not count_change("Family", None, 0).blocked
    assert not count_change("Family", 0, 0).blocked


def test_count_change_is_json() -> None:
    document = json.loads(json.dumps(dataclasses.asdict(count_change("EOP", 4, 1))))
    assert document == {
        "entity": "EOP",
        "previous": 4,
        "current": 1,
        "drop_ratio": 0.75,
        "max_drop_ratio": 0.5,
        "exceeded": True,
        "overridden": False,
        "blocked": True,
    }


@pytest.mark.parametrize("ratio", [-0.1, 1.1, float("nan"), float("inf")])
def test_ratio_outside_zero_to_one_is_a_config_error(ratio: float) -> None:
    with pytest.raises(SnapshotConfigError):
        count_change("Claim", 10, 5, max_drop_ratio=ratio)


def test_negative_counts_and_unknown_entities_are_refused() -> None:
    with pytest.raises(SnapshotArgumentError):
        count_change("Claim", 10, -1)
    with pytest.raises(SnapshotArgumentError):
        count_change("Claim", -1, 1)
    with pytest.raises(SnapshotArgumentError):
        count_change("Patient", 1, 1)


@given(
    st.one_of(st.none(), st.integers(0, 10**9)),
    st.integers(0, 10**9),
    st.integers(0, 100),
    st.booleans(),
)
def test_count_rule(previous: int | None, current: int, percent: int, override: bool) -> None:
    result = count_change("Care", previous, current, max_drop_ratio=percent / 100, override=override)
    exceeded = (
        previous is not None
        and previous > 0
        and Fraction(previous - current, previous) > Fraction(percent, 100)
    )
    assert result.exceeded == exceeded
    assert result.blocked == (exceeded and not override)
    assert result.overridden == (exceeded and override)
