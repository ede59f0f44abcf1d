"""The transaction ledger: which events of each source transaction the state already holds.

A source transaction (a claim and its EOPs, a family and its members) reaches the state through
several partitions and several ingest batches, so a cut of the state topic can fall inside it.
When Debezium's transaction metadata is on (``provide.transaction.metadata=true``), every data
event carries ``transaction: {id, total_order, data_collection_order}`` and the transaction topic
an END record with the transaction's event count per table. Ingest writes, in the same Kafka
transaction as the rows, one ledger record per (source transaction, state partition) and one
per END, to the state topic under keys that can never be an entity's (``<Entity>/<EntityId>``
starts with a capital letter; these start with ``~``):

- ``~tx/<txid>/<partition>``: ``{"v": [0,0,0,0,n], "t": stamp_ms, "c": {table: [[lo, hi], ...]},
  "k": [state key, ...]}``: the ``data_collection_order`` values of each table that partition
  has applied (as merged ranges, so Debezium's at-least-once duplicates do not overcount) and
  the state keys they touched. Rewritten whole, merged with the previous record, whenever a
  batch adds to it; ``n`` (orders plus keys held) only grows, so "keep the newer record per
  key" keeps the latest, as does "a later record of one partition wins".
- ``~txend/<txid>``: ``{"v": [0,0,0,0,0], "t": stamp_ms, "n": event_count, "c": {table: count}}``.

The cut (``connector.snapshot.transactions``) calls a transaction complete when its END is in
and, for every table the mapping consumes, the orders applied are exactly ``1..count``
(``judge``). Ordering by table, not by ``total_order``: a table the connector does not map
has events in ``total_order`` that never reach the state, and must not keep the rest waiting.

``t`` is when ingest last wrote the record: the purge (``connector.state.purge``) tombstones a
record this long after, and the cut judges only transactions written within half of that
horizon, so a transaction is never judged on a record set the purge has begun to remove.

PostgreSQL's ``transaction.id`` is ``"<txid>:<lsn>"`` and the LSN differs from event to event
and in BEGIN and END (measured, ../shared/FACTS.md), so the ledger groups by the part before the
colon (``group_id``); other sources' ids (a MySQL GTID) are kept whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

__all__ = [
    "END_PREFIX",
    "LEDGER_PREFIX",
    "LEDGER_SCAN",
    "RESERVED",
    "Ledger",
    "TxEnd",
    "TxVerdict",
    "add_order",
    "covers",
    "decode_end",
    "decode_ledger",
    "encode_end",
    "encode_ledger",
    "end_key",
    "expired_records",
    "group_id",
    "is_reserved",
    "judge",
    "ledger_key",
    "merge_ranges",
    "single_ledger",
]

RESERVED = b"~"
"""The first byte of every key that is not an entity's (the ledger's, a pending carry's)."""
LEDGER_PREFIX = b"~tx/"
END_PREFIX = b"~txend/"
LEDGER_SCAN = b"~tx"
"""A prefix scan of the ledger's records, both kinds, and nothing else."""

Ranges = list[tuple[int, int]]
"""Sorted, disjoint, non-adjacent closed ranges of orders (``[(1, 3), (5, 5)]``)."""


def is_reserved(key: bytes) -> bool:
    """Whether a state key is a reserved record's (the ledger's, or another's), not an entity's."""
    return key[:1] == RESERVED


def group_id(raw: str) -> str:
    """The transaction a Debezium ``transaction.id`` belongs to: PostgreSQL's ``txId`` of
    ``"<txId>:<lsn>"`` (the LSN changes within one transaction), any other id as it is."""
    head, colon, tail = raw.partition(":")
    return head if colon and head.isdigit() and tail.isdigit() and head.isascii() and tail.isascii() else raw


def ledger_key(txid: str, partition: int) -> bytes:
    return LEDGER_PREFIX + txid.encode() + b"/" + str(partition).encode()


def end_key(txid: str) -> bytes:
    return END_PREFIX + txid.encode()


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, overlapping or adjacent ranges joined: ``[(1,2),(3,3),(5,6),(6,7)]`` -> ``[(1,3),(5,7)]``."""
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def add_order(ranges: Ranges, order: int) -> Ranges:
    """``ranges`` with one more order (a duplicate changes nothing)."""
    return merge_ranges([*ranges, (order, order)])


def covers(ranges: Ranges, count: int) -> bool:
    """Whether merged ``ranges`` are exactly ``1..count`` (nothing missing, nothing beyond)."""
    if count <= 0:
        return not ranges
    return ranges == [(1, count)]


@dataclass(slots=True)
class Ledger:
    """One (source transaction, state partition) record: orders applied per table, keys touched."""

    orders: dict[str, Ranges] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    stamp_ms: int = 0
    entities: set[str] = field(default_factory=set)
    """The entity types of ``keys``; kept when the keys are not (``overflow``)."""
    overflow: bool = False
    """Too many keys for one state record (a bulk transaction): they were dropped, and an
    incomplete transaction then blocks its entity types instead of holding rows out."""

    @property
    def size(self) -> int:
        """Orders plus keys held: the record's version, which only grows."""
        orders = sum(hi - lo + 1 for ranges in self.orders.values() for lo, hi in ranges)
        return orders + len(self.keys) + len(self.entities) + int(self.overflow)

    def note(self, table: str, order: int, key: str) -> None:
        self.orders[table] = add_order(self.orders.get(table, []), order)
        self.entities.add(key.partition("/")[0])
        if not self.overflow:
            self.keys.add(key)

    def merged(self, other: Ledger) -> Ledger:
        tables = self.orders.keys() | other.orders.keys()
        overflow = self.overflow or other.overflow
        return Ledger(
            {t: merge_ranges([*self.orders.get(t, []), *other.orders.get(t, [])]) for t in sorted(tables)},
            set() if overflow else self.keys | other.keys,
            max(self.stamp_ms, other.stamp_ms),
            self.entities | other.entities,
            overflow,
        )


@dataclass(frozen=True, slots=True)
class TxEnd:
    """Debezium's END record: the transaction's event count, overall and per table."""

    txid: str
    event_count: int
    collections: Mapping[str, int]
    stamp_ms: int = 0


def encode_ledger(ledger: Ledger, limit: int = 1 << 62) -> bytes:
    """The record's value; over ``limit`` bytes its keys are dropped (``Ledger.overflow``)."""
    doc = {
        "v": [0, 0, 0, 0, ledger.size],
        "t": ledger.stamp_ms,
        "c": {t: [list(r) for r in ranges] for t, ranges in sorted(ledger.orders.items())},
        "k": sorted(ledger.keys),
        "e": sorted(ledger.entities),
    }
    if ledger.overflow:
        doc["x"] = 1
    data = orjson.dumps(doc)
    if len(data) > limit and ledger.keys:
        ledger.keys, ledger.overflow = set(), True
        return encode_ledger(ledger, limit)
    return data


def single_ledger(table: str, order: int, key: bytes, stamp_ms: int, limit: int = 1 << 62) -> bytes:
    """``encode_ledger`` of a ledger of one event (the common one-row transaction), built
    without the ``Ledger``: the same bytes (a unit test holds them equal)."""
    entity = key.partition(b"/")[0].decode()
    doc = {
        "v": [0, 0, 0, 0, 3],
        "t": stamp_ms,
        "c": {table: [[order, order]]},
        "k": [key.decode()],
        "e": [entity],
    }
    data = orjson.dumps(doc)
    if len(data) > limit:
        ledger = Ledger({table: [(order, order)]}, {key.decode()}, stamp_ms, {entity})
        return encode_ledger(ledger, limit)
    return data


def decode_ledger(data: bytes) -> Ledger:
    doc = orjson.loads(data)
    return Ledger(
        {str(t): [(int(lo), int(hi)) for lo, hi in ranges] for t, ranges in doc["c"].items()},
        {str(k) for k in doc["k"]},
        int(doc["t"]),
        {str(e) for e in doc.get("e", ())},
        bool(doc.get("x")),
    )


def encode_end(end: TxEnd) -> bytes:
    return orjson.dumps(
        {
            "v": [0, 0, 0, 0, 0],
            "t": end.stamp_ms,
            "n": end.event_count,
            "c": dict(sorted(end.collections.items())),
        }
    )


def decode_end(txid: str, data: bytes) -> TxEnd:
    doc = orjson.loads(data)
    return TxEnd(txid, int(doc["n"]), {str(t): int(n) for t, n in doc["c"].items()}, int(doc["t"]))


def expired_records(
    rows: Iterable[tuple[bytes, bytes]], now_ms: int, horizon_ms: int, limit: int
) -> list[bytes]:
    """Keys of ledger and END records written at least ``horizon_ms`` ago, at most ``limit``."""
    keys: list[bytes] = []
    if horizon_ms <= 0:
        return keys
    for key, value in rows:
        if not key.startswith((LEDGER_PREFIX, END_PREFIX)):
            continue  # an entity's row, or another reserved record (not the ledger's)
        written = orjson.loads(value).get("t")
        if isinstance(written, int) and now_ms - written >= horizon_ms:
            keys.append(key)
            if len(keys) >= limit:
                break
    return keys


@dataclass(frozen=True, slots=True)
class TxVerdict:
    """One source transaction as seen below a cut."""

    txid: str
    complete: bool
    ended: bool
    """Its END record is below the cut."""
    missing: Mapping[str, int]
    """Per table: events the END counts that the state does not hold yet (or holds beyond it)."""
    keys: frozenset[str]
    """State keys its applied events touched (``<Entity>/<EntityId>``)."""
    entities: frozenset[str]
    """The entity types of those keys."""
    overflow: bool
    """Its keys were too many to keep (``Ledger.overflow``): ``keys`` is not all of them."""
    judged: bool
    """Written within half the purge horizon: an older incomplete transaction is reported as
    expired, not held (its records may be partly purged)."""


def judge(
    records: Iterable[tuple[bytes, bytes]],
    *,
    tables: Iterable[str],
    now_ms: int,
    horizon_ms: int,
) -> list[TxVerdict]:
    """Every source transaction with a ledger record among ``records`` (the reserved records
    below a cut, the newer per key), judged complete or not; sorted by transaction id.

    ``tables``: the source tables the mapping consumes; END counts of other tables are ignored.
    A transaction is complete when its END is in and, for each consumed table it counts, the
    orders the partitions applied together are ``1..count``; orders of a table it does not
    count make it incomplete too (the ledger and the END disagree). With ``horizon_ms`` (the
    purge horizon, 0 = never purged), only transactions whose newest record is younger than
    half of it are ``judged``.
    """
    consumed = set(tables)
    ledgers: dict[str, Ledger] = {}
    ends: dict[str, TxEnd] = {}
    for key, value in records:
        if key.startswith(END_PREFIX):
            txid = key[len(END_PREFIX) :].decode()
            ends[txid] = decode_end(txid, value)
        elif key.startswith(LEDGER_PREFIX):
            txid = key[len(LEDGER_PREFIX) :].rpartition(b"/")[0].decode()
            found = decode_ledger(value)
            ledgers[txid] = ledgers[txid].merged(found) if txid in ledgers else found
    verdicts = []
    for txid in sorted(ledgers):
        ledger, end = ledgers[txid], ends.get(txid)
        missing: dict[str, int] = {}
        if end is not None:
            newest = max(ledger.stamp_ms, end.stamp_ms)
            counted = {t: n for t, n in end.collections.items() if t in consumed}
            for table in sorted(counted.keys() | (ledger.orders.keys() & consumed)):
                ranges, count = ledger.orders.get(table, []), counted.get(table, 0)
                if not covers(ranges, count):
                    held = sum(hi - lo + 1 for lo, hi in ranges if lo <= count)
                    beyond = sum(max(0, hi - max(lo, count + 1) + 1) for lo, hi in ranges)
                    missing[table] = count - min(held, count) + beyond
        else:
            newest = ledger.stamp_ms
        judged = horizon_ms <= 0 or now_ms - newest < horizon_ms // 2
        verdicts.append(
            TxVerdict(
                txid,
                end is not None and not missing,
                end is not None,
                missing,
                frozenset(ledger.keys),
                frozenset(ledger.entities),
                ledger.overflow,
                judged,
            )
        )
    return verdicts
