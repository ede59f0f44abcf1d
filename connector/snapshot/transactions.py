"""The transaction-aware cut: no source transaction is delivered half-applied.

With transaction tracking on (the mapping's ``transactions.topic``), ingest writes a ledger of
each source transaction into the state topic (``connector.state.ledger``). A cut is one end
offset per state partition, so it can fall inside a transaction whose events went to several
partitions or batches. Two defences, in order:

1. **Wait** (``cut_when_caught_up``, ``connector.snapshot.lag``): after the lag wait, the cut's
   ledger records are read (``read_ledger``: the whole state topic up to the cut, keeping only
   the ``~`` keys) and, while a judged transaction below it is incomplete, the run waits and
   cuts again, bounded by the same ``wait_until`` as the lag wait. The cut that is pinned is
   the last one taken.
2. **Hold out** (``check_transactions``, read by ``plan.make_plan``): a transaction still
   incomplete at the pinned cut has its rows held out of delivery (like incomplete rows), its
   children then held as orphans by the usual cascade, and is reported: counts in the manifest's
   ``checks.transactions``, transaction ids and EntityIds in ``_report.json``. A transaction
   too large for its ledger to list its keys (``overflow``) blocks its entity types instead.
   Rows it deleted cannot be held (they are gone from the state): the report names them.

Judging is deterministic in the cut, so a resumed run of a date holds out the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Message

from connector.model import ENTITY_NAMES
from connector.snapshot.cut_offsets import Cut, consume_to_cut
from connector.state.ledger import RESERVED, TxVerdict, judge

__all__ = ["TxCheck", "check_transactions", "incomplete_below", "read_ledger"]


@dataclass(frozen=True, slots=True)
class TxCheck:
    """The cut's source transactions, judged."""

    tracked: int
    """Transactions with a ledger record below the cut."""
    incomplete: tuple[TxVerdict, ...]
    """Judged and incomplete: their rows are held out (or their entities blocked)."""
    expired: tuple[TxVerdict, ...]
    """Incomplete but older than half the ledger's purge horizon: reported, not held."""

    def held(self) -> dict[str, frozenset[str]]:
        """EntityIds to hold out per entity: every key an incomplete transaction touched."""
        out: dict[str, set[str]] = {entity: set() for entity in ENTITY_NAMES}
        for verdict in self.incomplete:
            for key in verdict.keys:
                entity, _, entity_id = key.partition("/")
                if entity in out:
                    out[entity].add(entity_id)
        return {entity: frozenset(ids) for entity, ids in out.items()}

    def blocked(self) -> frozenset[str]:
        """Entity types of incomplete transactions whose ledger could not list its keys."""
        return frozenset(e for v in self.incomplete if v.overflow for e in v.entities if e in ENTITY_NAMES)

    def counts_json(self) -> dict[str, Any]:
        """For the manifest and metrics: counts only, never an id."""
        held = self.held()
        return {
            "tracked": self.tracked,
            "incomplete": len(self.incomplete),
            "expired": len(self.expired),
            "held_out": {entity: len(ids) for entity, ids in held.items() if ids},
            "blocked": sorted(self.blocked()),
        }

    def report_json(self) -> list[dict[str, Any]]:
        """For the operator's report: each incomplete (or expired) transaction, what it lacks
        and the rows it held out."""
        out = []
        for verdict, status in [(v, "held_out") for v in self.incomplete] + [
            (v, "expired") for v in self.expired
        ]:
            rows: dict[str, list[str]] = {}
            for key in sorted(verdict.keys):
                entity, _, entity_id = key.partition("/")
                rows.setdefault(entity, []).append(entity_id)
            out.append(
                {
                    "transaction": verdict.txid,
                    "status": status,
                    "end_seen": verdict.ended,
                    "missing_events": dict(verdict.missing),
                    "rows": rows,
                    "keys_overflowed": verdict.overflow,
                }
            )
        return out


def check_transactions(
    records: Iterable[tuple[bytes, bytes]], *, tables: Iterable[str], now: datetime, horizon_s: int
) -> TxCheck:
    """Judge the ledger records below a cut (``StateReader.reserved``); ``now``: the cut's time
    (so a resumed run judges the same), ``tables``: the source tables the mapping consumes."""
    verdicts = judge(records, tables=tables, now_ms=int(now.timestamp() * 1000), horizon_ms=horizon_s * 1000)
    return TxCheck(
        len(verdicts),
        tuple(v for v in verdicts if not v.complete and v.judged),
        tuple(v for v in verdicts if not v.complete and not v.judged),
    )


def read_ledger(base: dict[str, Any], cut: Cut) -> list[tuple[bytes, bytes]]:
    """The ledger records below ``cut`` (the later per key), without reading the entities into
    a spill: what the wait before pinning a cut judges. It reads the whole state topic up to the
    cut, in Python: about a microsecond per record."""
    found: dict[bytes, bytes] = {}
    conf = {k: v for k, v in base.items() if k != "error_cb"}

    def absorb(messages: list[Message], ends: Mapping[int, int]) -> list[Message]:
        errors = []
        for msg in messages:
            if msg.error() is not None:
                errors.append(msg)
                continue
            key = msg.key()
            if key is None or key[:1] != RESERVED:
                continue
            end = ends.get(msg.partition() or 0)
            value = msg.value()
            if end is None or (msg.offset() or 0) >= end:
                continue
            if value is None:  # a purged record: absent, whether compaction has run or not
                found.pop(key, None)
            else:
                found[key] = value
        return errors

    consume_to_cut(conf, cut, absorb)
    return sorted(found.items())


def incomplete_below(
    base: dict[str, Any], cut: Cut, *, tables: Iterable[str], horizon_s: int
) -> tuple[int, int]:
    """How many judged source transactions below ``cut`` are incomplete, and how many of those
    have their END below it (``cut_when_caught_up`` stops waiting for those sooner)."""
    check = check_transactions(read_ledger(base, cut), tables=tables, now=cut.taken_at, horizon_s=horizon_s)
    return len(check.incomplete), sum(1 for v in check.incomplete if v.ended)
