"""The transaction-aware cut's readers and plan (issue 19): the ledger's reserved records never
become entities, and a source transaction incomplete at the cut is held out whole, its children
with it, by both readers alike."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from connector.model import ENTITY_NAMES
from connector.snapshot.plan import Plan, make_plan
from connector.snapshot.transactions import TxCheck, check_transactions
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.ledger import Ledger, TxEnd, encode_end, encode_ledger, end_key, ledger_key
from connector.state.resolve import StateRow
from tests.integration.snapshot_helpers import tree
from tests.unit.snapshot.test_compiled_cut import Msg, _load

pytestmark = pytest.mark.fastpath

NOW = dt.datetime(2026, 11, 25, 8, 30, tzinfo=dt.UTC)
TABLES = frozenset({"public.claim", "public.payment"})


def _ledger(orders: dict[str, list[tuple[int, int]]], keys: set[str]) -> bytes:
    stamp = int(NOW.timestamp() * 1000)
    return encode_ledger(Ledger(orders, keys, stamp, {k.partition("/")[0] for k in keys}))


def _batches(extra: list[tuple[int, bytes, bytes | None]]) -> tuple[list[list[Msg]], dict[int, int]]:
    """A consistent two-family state in partitions 0 and 1, then ``extra`` records."""
    state = tree(2)
    offsets = {0: 0, 1: 0}
    out: list[Msg] = []
    n = 0
    for entity in ENTITY_NAMES:
        for entity_id, values in state[entity].items():
            row = encode_row(StateRow(Version(1, 1, 0, 0, 0), False, values))
            p = n % 2
            out.append(Msg(p, offsets[p], state_key(entity, entity_id), row))
            offsets[p] += 1
            n += 1
    for p, key, value in extra:
        out.append(Msg(p, offsets[p], key, value))
        offsets[p] += 1
    return [out[i : i + 5] for i in range(0, len(out), 5)], offsets


CLAIM, EOP = "Claim/CLM-0000001", "EOP/EOP-0000001"
OTHER_EOP = "EOP/EOP-0000002"  # of claim 2: untouched by the transaction


def test_the_ledger_is_kept_apart_the_later_record_wins_and_a_tombstone_removes_it(tmp_path: Path) -> None:
    first = _ledger({"public.claim": [(1, 1)]}, {CLAIM})
    later = _ledger({"public.claim": [(1, 2)]}, {CLAIM})
    extra = [
        (0, ledger_key("7", 0), first),
        (0, ledger_key("7", 0), later),
        (1, ledger_key("8", 1), first),
        (1, ledger_key("8", 1), None),  # purged
        (1, end_key("7"), encode_end(TxEnd("7", 2, {"public.claim": 2}))),
    ]
    batches, offsets = _batches(extra)
    ref, fast = _load(batches, offsets, tmp_path)
    with ref, fast:
        assert (
            ref.reserved()
            == fast.reserved()
            == sorted(
                [(ledger_key("7", 0), later), (end_key("7"), encode_end(TxEnd("7", 2, {"public.claim": 2})))]
            )
        )
        assert ref.records_read == fast.records_read
        for entity in ENTITY_NAMES:  # the same entities as without the ledger
            assert fast.count(entity) == ref.count(entity) == len(tree(2)[entity])
        assert make_plan(fast) == make_plan(ref)


def _incomplete(tmp_path: Path, *, overflow: bool = False) -> tuple[TxCheck, list[Plan]]:
    """A claim and its EOP in one transaction; the END counts a second EOP not in the state."""
    keys = set() if overflow else {CLAIM, EOP}
    tx = Ledger({"public.claim": [(1, 1)], "public.payment": [(1, 1)]}, keys, int(NOW.timestamp() * 1000))
    tx.entities, tx.overflow = {"Claim", "EOP"}, overflow
    extra = [
        (0, ledger_key("9", 0), encode_ledger(tx)),
        (1, end_key("9"), encode_end(TxEnd("9", 3, {"public.claim": 1, "public.payment": 2}))),
    ]
    batches, offsets = _batches(extra)
    ref, fast = _load(batches, offsets, tmp_path)
    plans = []
    with ref, fast:
        check = check_transactions(ref.reserved(), tables=TABLES, now=NOW, horizon_s=7 * 86400)
        assert check == check_transactions(fast.reserved(), tables=TABLES, now=NOW, horizon_s=7 * 86400)
        for reader in (ref, fast):
            plans.append(make_plan(reader, transactions=check))
    assert plans[0] == plans[1]
    return check, plans


def test_an_incomplete_transaction_is_held_out_whole_and_its_children_with_it(tmp_path: Path) -> None:
    check, (plan, _) = _incomplete(tmp_path)
    assert [v.txid for v in check.incomplete] == ["9"]
    assert check.tracked == 1
    by_entity = {p.entity: p for p in plan.entities}
    state = tree(2)
    assert by_entity["Claim"].held_out == {"CLM-0000001"}
    assert by_entity["EOP"].held_out == {"EOP-0000001"}
    assert by_entity["Claim"].records == len(state["Claim"]) - 1
    assert by_entity["EOP"].records == len(state["EOP"]) - 1
    assert all(p.blocked_because is None for p in plan.entities)
    checks = plan.checks_json()
    assert checks["transactions"] == {
        "tracked": 1,
        "incomplete": 1,
        "expired": 0,
        "held_out": {"Claim": 1, "EOP": 1},
        "blocked": [],
    }
    assert "CLM-0000001" not in str(checks)  # counts only in the manifest
    (reported,) = plan.report_json()["transactions"]
    assert reported["transaction"] == "9"
    assert reported["missing_events"] == {"public.payment": 1}
    assert reported["rows"] == {"Claim": ["CLM-0000001"], "EOP": ["EOP-0000001"]}


def test_a_parent_held_by_a_transaction_holds_a_child_outside_it(tmp_path: Path) -> None:
    """EOP 2 belongs to claim 2; hold claim 1's care instead and its claim and EOP follow."""
    care = "Care/CAR-0000001"
    tx = Ledger({"public.care_episode": [(1, 1)]}, {care}, int(NOW.timestamp() * 1000), {"Care"})
    extra = [(0, ledger_key("5", 0), encode_ledger(tx))]  # no END: incomplete
    batches, offsets = _batches(extra)
    ref, fast = _load(batches, offsets, tmp_path)
    with ref, fast:
        tables = TABLES | {"public.care_episode"}
        check = check_transactions(ref.reserved(), tables=tables, now=NOW, horizon_s=0)
        plans = [make_plan(reader, transactions=check) for reader in (ref, fast)]
    assert plans[0] == plans[1]
    held = {p.entity: p.held_out for p in plans[0].entities}
    assert held["Care"] == {"CAR-0000001"}
    assert held["Claim"] == {"CLM-0000001"}
    assert held["EOP"] == {"EOP-0000001"}


def test_a_transaction_whose_keys_overflowed_blocks_its_entities(tmp_path: Path) -> None:
    _, (plan, _) = _incomplete(tmp_path, overflow=True)
    because = {p.entity: p.blocked_because for p in plan.entities}
    assert (
        because["Claim"]
        == because["EOP"]
        == "an incomplete source transaction too large to hold out row by row"
    )


def test_a_complete_transaction_holds_nothing(tmp_path: Path) -> None:
    extra = [
        (0, ledger_key("9", 0), _ledger({"public.claim": [(1, 1)]}, {CLAIM})),
        (1, ledger_key("9", 1), _ledger({"public.payment": [(1, 2)]}, {EOP, OTHER_EOP})),
        (1, end_key("9"), encode_end(TxEnd("9", 3, {"public.claim": 1, "public.payment": 2}))),
    ]
    batches, offsets = _batches(extra)
    ref, fast = _load(batches, offsets, tmp_path)
    with ref, fast:
        check = check_transactions(fast.reserved(), tables=TABLES, now=NOW, horizon_s=0)
        plan = make_plan(fast, transactions=check)
        assert check.incomplete == ()
        assert check.tracked == 1
        assert plan.entities == make_plan(fast).entities
