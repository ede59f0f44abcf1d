"""The transaction ledger's pure decisions: range merging, completeness, purge age (issue 19)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.state.codec import is_complete, is_deleted, stored_version
from connector.state.ledger import (
    END_PREFIX,
    LEDGER_PREFIX,
    Ledger,
    TxEnd,
    add_order,
    covers,
    decode_end,
    decode_ledger,
    encode_end,
    encode_ledger,
    end_key,
    expired_records,
    group_id,
    is_reserved,
    judge,
    ledger_key,
    merge_ranges,
    single_ledger,
)
from connector.state.purge import MarkerPurge, purgeable
from connector.state.store import PartitionStore

DAY_MS = 86_400_000


def _orders(ranges: list[tuple[int, int]]) -> set[int]:
    return {n for lo, hi in ranges for n in range(lo, hi + 1)}


@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 6)), max_size=30))
def test_merged_ranges_hold_exactly_the_orders_given_sorted_disjoint_and_apart(
    pairs: list[tuple[int, int]],
) -> None:
    ranges = [(lo, lo + width) for lo, width in pairs]
    merged = merge_ranges(ranges)
    assert _orders(merged) == _orders(ranges)
    for (_, hi), (lo, _) in itertools.pairwise(merged):
        assert lo > hi + 1  # neither overlapping nor adjacent: one way to write each set
    assert all(lo <= hi for lo, hi in merged)


@given(st.lists(st.integers(1, 40), max_size=60))
def test_orders_added_one_by_one_in_any_order_with_duplicates_are_their_set(orders: list[int]) -> None:
    ranges: list[tuple[int, int]] = []
    for order in orders:
        ranges = add_order(ranges, order)
    assert ranges == merge_ranges((n, n) for n in set(orders))
    count = max(orders, default=0)
    assert covers(ranges, count) == (set(orders) == set(range(1, count + 1)))


def test_covers_is_exactly_one_to_count() -> None:
    assert covers([(1, 3)], 3)
    assert not covers([(1, 2)], 3)  # one missing
    assert not covers([(1, 4)], 3)  # one beyond: the END and the ledger disagree
    assert not covers([(1, 1), (3, 3)], 3)
    assert covers([], 0)
    assert not covers([(1, 1)], 0)


def test_postgres_ids_group_by_their_txid_others_stay_whole() -> None:
    assert group_id("731:26384288") == group_id("731:26384936") == "731"
    assert group_id("3e11fa47-71ca-11e1-9e33-c80aa9429562:23") == "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
    assert group_id("mysql-bin.000003:1234") == "mysql-bin.000003:1234"


def test_keys_are_reserved_and_never_an_entity_key() -> None:
    assert ledger_key("731", 2) == b"~tx/731/2"
    assert end_key("731") == b"~txend/731"
    assert is_reserved(ledger_key("731", 2))
    assert is_reserved(end_key("731"))
    assert not is_reserved(b"Claim/CLM-1")
    assert b"~" > b"Z"
    assert b"~" > b"z"


def test_records_round_trip_and_read_as_live_complete_rows_to_the_generic_readers() -> None:
    ledger = Ledger({"public.claim": [(1, 2)], "public.payment": [(1, 1)]}, {"Claim/CLM-1", "EOP/EOP-9"}, 42)
    ledger.entities = {"Claim", "EOP"}
    data = encode_ledger(ledger)
    back = decode_ledger(data)
    assert (back.orders, back.keys, back.stamp_ms, back.entities) == (
        ledger.orders,
        ledger.keys,
        42,
        {"Claim", "EOP"},
    )
    end = TxEnd("731", 3, {"public.claim": 2, "public.payment": 1}, 43)
    assert decode_end("731", encode_end(end)) == end
    for value in (data, encode_end(end)):  # "keep the newer record per key" can read them
        assert tuple(stored_version(value)) >= (0, 0, 0, 0, 0)
        assert is_complete(value)
        assert not is_deleted(value)
        assert not purgeable(value, 10**15, 1)  # never taken for a delete marker


def test_a_ledger_that_grows_has_a_growing_version_and_duplicates_do_not() -> None:
    first = Ledger()
    first.note("public.claim", 1, "Claim/CLM-1")
    again = Ledger()
    again.note("public.claim", 1, "Claim/CLM-1")  # Debezium's at-least-once duplicate
    assert first.merged(again).size == first.size
    more = Ledger()
    more.note("public.claim", 2, "Claim/CLM-2")
    assert first.merged(more).size > first.size
    assert stored_version(encode_ledger(first.merged(more))) > stored_version(encode_ledger(first))


def test_a_ledger_too_large_for_a_record_drops_its_keys_and_keeps_its_entities() -> None:
    ledger = Ledger()
    for n in range(1, 2001):
        ledger.note("public.claim", n, f"Claim/CLM-{n:08d}")
    data = encode_ledger(ledger, limit=4096)
    assert len(data) <= 4096
    back = decode_ledger(data)
    assert back.overflow
    assert back.keys == set()
    assert back.entities == {"Claim"}
    assert back.orders == {"public.claim": [(1, 2000)]}


def _records(*items: tuple[bytes, Ledger | TxEnd]) -> list[tuple[bytes, bytes]]:
    out = []
    for key, item in items:
        out.append((key, encode_end(item) if isinstance(item, TxEnd) else encode_ledger(item)))
    return out


def _ledger(orders: dict[str, list[tuple[int, int]]], keys: set[str], stamp: int = 0) -> Ledger:
    return Ledger(orders, keys, stamp, {k.partition("/")[0] for k in keys})


TABLES = ("public.claim", "public.payment")


def test_a_transaction_split_over_partitions_is_complete_when_they_hold_every_order() -> None:
    records = _records(
        (ledger_key("7", 0), _ledger({"public.claim": [(1, 1)]}, {"Claim/CLM-1"})),
        (ledger_key("7", 2), _ledger({"public.payment": [(1, 2)]}, {"EOP/EOP-1", "EOP/EOP-2"})),
        (end_key("7"), TxEnd("7", 3, {"public.claim": 1, "public.payment": 2})),
    )
    (verdict,) = judge(records, tables=TABLES, now_ms=0, horizon_ms=0)
    assert verdict.complete
    assert verdict.ended
    assert verdict.missing == {}
    assert verdict.keys == {"Claim/CLM-1", "EOP/EOP-1", "EOP/EOP-2"}


def test_a_partition_behind_the_cut_makes_it_incomplete_and_says_what_is_missing() -> None:
    records = _records(
        (ledger_key("7", 0), _ledger({"public.claim": [(1, 1)]}, {"Claim/CLM-1"})),
        (ledger_key("7", 2), _ledger({"public.payment": [(1, 1)]}, {"EOP/EOP-1"})),
        (end_key("7"), TxEnd("7", 3, {"public.claim": 1, "public.payment": 2})),
    )
    (verdict,) = judge(records, tables=TABLES, now_ms=0, horizon_ms=0)
    assert not verdict.complete
    assert verdict.missing == {"public.payment": 1}


def test_no_end_below_the_cut_is_incomplete_even_with_every_event_in() -> None:
    records = _records((ledger_key("7", 0), _ledger({"public.claim": [(1, 1)]}, {"Claim/CLM-1"})))
    (verdict,) = judge(records, tables=TABLES, now_ms=0, horizon_ms=0)
    assert not verdict.complete
    assert not verdict.ended


def test_tables_the_mapping_does_not_consume_are_not_waited_for() -> None:
    records = _records(
        (ledger_key("7", 1), _ledger({"public.claim": [(1, 2)]}, {"Claim/CLM-1"})),
        (end_key("7"), TxEnd("7", 5, {"public.claim": 2, "public.audit_log": 3})),
    )
    (verdict,) = judge(records, tables=TABLES, now_ms=0, horizon_ms=0)
    assert verdict.complete


def test_an_end_alone_is_not_a_transaction_below_the_cut() -> None:
    records = _records((end_key("7"), TxEnd("7", 1, {"public.claim": 1})))
    assert judge(records, tables=TABLES, now_ms=0, horizon_ms=0) == []


def test_only_transactions_younger_than_half_the_horizon_are_judged() -> None:
    horizon = 7 * DAY_MS
    now = 100 * DAY_MS
    old = _ledger({"public.claim": [(1, 1)]}, {"Claim/CLM-1"}, stamp=now - 4 * DAY_MS)
    young = _ledger({"public.claim": [(1, 1)]}, {"Claim/CLM-2"}, stamp=now - 3 * DAY_MS)
    records = _records((ledger_key("1", 0), old), (ledger_key("2", 0), young))
    verdicts = {v.txid: v for v in judge(records, tables=TABLES, now_ms=now, horizon_ms=horizon)}
    assert not verdicts["1"].judged
    assert verdicts["2"].judged
    assert not verdicts["1"].complete
    assert not verdicts["2"].complete


def test_expired_records_are_the_ledgers_older_than_the_horizon_only() -> None:
    now = 10 * DAY_MS
    rows = [
        (b"Claim/CLM-1", b'{"v":[1,0,0,0,0],"r":{}}'),
        (ledger_key("1", 0), encode_ledger(_ledger({"t": [(1, 1)]}, set(), stamp=now - 8 * DAY_MS))),
        (ledger_key("2", 0), encode_ledger(_ledger({"t": [(1, 1)]}, set(), stamp=now - DAY_MS))),
        (end_key("1"), encode_end(TxEnd("1", 1, {"t": 1}, now - 8 * DAY_MS))),
        (b"~carry/other", b"not the ledger's: never parsed"),
    ]
    assert expired_records(rows, now, 7 * DAY_MS, limit=100) == [ledger_key("1", 0), end_key("1")]
    assert expired_records(rows, now, 0, limit=100) == []
    assert expired_records(rows, now, 7 * DAY_MS, limit=1) == [ledger_key("1", 0)]


def test_the_two_prefixes_never_hold_each_others_keys() -> None:
    assert not END_PREFIX.startswith(LEDGER_PREFIX)
    assert not LEDGER_PREFIX.startswith(END_PREFIX)


def test_a_one_event_ledger_is_built_directly_as_the_ledger_encodes_it() -> None:
    ledger = Ledger(stamp_ms=42)
    ledger.note("public.claim", 3, "Claim/CLM-1")
    assert single_ledger("public.claim", 3, b"Claim/CLM-1", 42) == encode_ledger(ledger)
    assert decode_ledger(single_ledger("public.claim", 3, b"Claim/CLM-" + b"9" * 500, 42, limit=200)).overflow


@pytest.mark.parametrize("raw", ["731:", ":26384288", "73a:1", "731:2:3", "\u0661:2"])
def test_an_id_not_of_postgres_shape_is_kept_whole(raw: str) -> None:
    assert group_id(raw) == raw


class _Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_the_purge_drops_ledger_records_past_their_horizon_and_no_other_row(tmp_path: Path) -> None:
    clock = _Clock()
    purge = MarkerPurge(0, ledger_horizon_s=400, clock=clock, monotonic=clock)
    store = PartitionStore(tmp_path / "p0")
    now = purge.now_ms()
    store.write(
        {
            b"Claim/CLM-1": b'{"v":[1,0,0,0,0],"r":{}}',
            ledger_key("7", 0): encode_ledger(_ledger({"public.claim": [(1, 1)]}, {"Claim/CLM-1"}, now)),
            end_key("7"): encode_end(TxEnd("7", 1, {"public.claim": 1}, now)),
            b"~carry/x": b"another reserved record: not the ledger's",
        },
        1,
    )
    assert purge.due(0, store) == []  # too young
    clock.t += 500  # past the horizon and past the next scan (a quarter of it)
    assert purge.due(0, store) == [ledger_key("7", 0), end_key("7")]
    assert MarkerPurge(0).due(0, store) == []  # tracking off: nothing
    store.close()
