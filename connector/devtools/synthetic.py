"""A synthetic Debezium CDC stream for all six entities, with its expected final state.

Used by the demo, tests and benchmarks. The events are what Debezium 3.x (PostgreSQL,
pgoutput, JSON converter with ``schemas.enable=false``) would publish for the six source
tables that examples/mapping.yaml maps: an initial snapshot (``op=r``), then streamed
transactions with ``source.sequence``/``lsn``/``txId`` and transaction metadata, so the
version order is well defined. The stream holds what a connector must get right:

- associations: members of families, care of members and providers, claims of care and
  providers, EOPs (payments) of claims; deletes cascade like ``ON DELETE CASCADE``, so no
  live child ever points at a deleted parent, and no child references a provider that is
  ever deleted (no orphans are generated on purpose);
- creates, updates, deletes (with tombstones; REPLICA IDENTITY DEFAULT or FULL), re-creates
  of a deleted key (claims, families, providers), unchanged-TOAST placeholders (family
  ``address``, care ``diagnosis_code``), long transactions whose events have *lower* LSNs
  than transactions that committed before them, stale re-snapshot reads;
- exact duplicates (replays), and out-of-order deliveries: two changes of one row swapped,
  so the older arrives after the newer (in the same partition) and must lose by version;
- ``malformed`` bad events on the family topic, one per reason in ``MALFORMED_KINDS`` in
  turn (the connector's dead-letter reason codes), each rejected without touching state.

Scale: ``scale`` families (~16 live records each: 1 family, 2.5 members, 3.3 care episodes,
6.8 claims, 2.6 EOPs) and ``max(10, scale // 20)`` providers; ~22 events per family. At
``DEMO_SCALE`` (1000, seed 0) Claim is the one entity over CareCloud's 5000-record file
threshold (6760) and the others go by API (981 families, 47 providers, 2494 members, 3335
care, 2622 EOPs); ``tests/unit/devtools/test_synthetic.py`` pins these counts.

Memory and speed: events are generated in chunks of 256 units (a provider, or a family with
its whole subtree), so ``events()`` runs in bounded memory at any scale, at ~40 000 events/s
on one idle core (scale 100 000 is ~2.2 M events, about a minute). ``expected_state()`` holds
the result in memory (~1 KB per record: fine up to scale ~50 000, i.e. ~800 000 records);
beyond that, consume ``iter_expected()``, which streams. The expected state is read from the
generator's own model of the rows (``_synthetic_rows``, ``_synthetic_render.record``), never
computed by the connector's decode, mapping or merge code.

Command line::

    python -m connector.devtools.synthetic publish --bootstrap HOST:PORT --scale N [--seed S]
        [--partitions P]          # create the source topics if missing, produce, print a summary
    python -m connector.devtools.synthetic expected --scale N --out FILE.json
    python -m connector.devtools.synthetic stats --scale N   # counts and generation speed only
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from connector.devtools._synthetic_history import plan_family, plan_provider
from connector.devtools._synthetic_render import envelope, record, wire
from connector.devtools._synthetic_rows import PK, Change, Plan, Row
from connector.model import ENTITY_NAMES

if TYPE_CHECKING:
    from connector.ingest.replay import RawMessage

__all__ = [
    "DEMO_SCALE",
    "MALFORMED_KINDS",
    "TABLES",
    "SyntheticEvent",
    "SyntheticStream",
    "generate",
    "main",
]

DEMO_SCALE = 1000
TABLES = ("family", "provider", "family_member", "care_episode", "claim", "payment")
"""The source tables (``public.<table>``, topic ``<prefix><table>``) examples/mapping.yaml maps."""
MALFORMED_KINDS = (
    "invalid_json",
    "unknown_op",
    "missing_primary_key",
    "unknown_enum_symbol",
    "unparseable_decimal",
    "key_mismatch",
)
"""The bad events, in the order they are used, named by the dead-letter reason they must get."""
_CHUNK = 256
_SNAPSHOT_LSN = 20_000_000
_STREAM_LSN = 30_000_000
_TX_STEP = 100_000  # LSN bytes per transaction: room for any transaction's events
_SWAP, _DUPLICATE, _LONG_TX = 0.15, 0.03, 0.05


class SyntheticEvent(NamedTuple):
    """One Kafka message: ``value`` None is the tombstone that follows a delete."""

    topic: str
    key: bytes
    value: bytes | None


class _Item(NamedTuple):
    """Messages that travel together (a delete and its tombstone) for one row."""

    row: tuple[str, int]
    messages: tuple[SyntheticEvent, ...]
    streamed: bool


@dataclass(frozen=True, slots=True)
class SyntheticStream:
    """A deterministic stream (per seed) and its expected final state; iterate for events."""

    scale: int
    seed: int = 0
    malformed: int = len(MALFORMED_KINDS)
    topic_prefix: str = "benefits.public."

    @property
    def providers(self) -> int:
        return max(10, self.scale // 20)

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self.topic_prefix + table for table in TABLES)

    @property
    def expected_dead_letters(self) -> int:
        """How many events the connector must dead-letter: the malformed ones, nothing else."""
        return self.malformed

    def dead_letter_reasons(self) -> tuple[str, ...]:
        """The dead letters' reasons in production order (all on the family topic)."""
        return tuple(MALFORMED_KINDS[k % len(MALFORMED_KINDS)] for k in range(self.malformed))

    def __iter__(self) -> Iterator[SyntheticEvent]:
        return self.events()

    def events(self) -> Iterator[SyntheticEvent]:
        """Every message, in production order; regenerated (identically) on every call."""
        for plan in self._plans():
            for change in plan.initial:
                yield from self._render(change, None, _SNAPSHOT_LSN, tx=_SNAPSHOT_LSN // 1000, order=None)
        commit = 0
        families = math.ceil(self.scale / _CHUNK)
        for index, (units, family_chunk) in enumerate(self._chunks()):
            rng = random.Random(f"carecloud-synthetic/{self.seed}/emit/{index}")
            plans = [_plan(self.seed, kind, ident, self.providers) for kind, ident in units]
            items: list[_Item] = []
            last: dict[int, int] = {}  # unit -> the commit LSN of its previous transaction
            for time_key, unit, changes in sorted(
                ((tx[0], u, tx[1]) for u, plan in enumerate(plans) for tx in plan.txs), key=lambda tx: tx[0]
            ):  # commit order: by the units' clocks (stable, so a unit's own order is kept)
                commit += 1
                major = _STREAM_LSN + commit * _TX_STEP
                # A long transaction wrote its events before the unit's previous transaction
                # committed: lower LSNs, yet it commits later; only source.sequence tells.
                first = last[unit] - _TX_STEP // 2 if unit in last and rng.random() < _LONG_TX else major
                last[unit] = major
                per_table: dict[str, int] = {}
                for i, change in enumerate(changes):
                    per_table[change.table] = per_table.get(change.table, 0) + 1
                    order = (i + 1, per_table[change.table])
                    msgs = self._render(
                        change, major, first + 10 * (i + 1), tx=commit, order=order, at=time_key
                    )
                    items.append(_Item((change.table, change.pk), msgs, True))
            reread = _SNAPSHOT_LSN  # a redelivered read of the initial snapshot, not a re-snapshot
            for plan in plans:
                for change in plan.rereads:
                    msgs = self._render(change, None, reread, tx=commit, order=None)
                    items.append(_Item((change.table, change.pk), msgs, False))
            items = _duplicate(_swap(items, rng), rng)
            if family_chunk >= 0:
                kinds = [k for k in range(self.malformed) if k * families // self.malformed == family_chunk]
                items = self._spoil(items, kinds, units, plans, rng)
            for item in items:
                yield from item.messages

    def messages(self) -> Iterator[RawMessage]:
        """The events as ``connector.ingest.replay`` input: partition 0, offsets counted per topic."""
        from connector.ingest.replay import RawMessage
        from connector.source import Position

        offsets: dict[str, int] = {}
        for event in self.events():
            offset = offsets[event.topic] = offsets.get(event.topic, -1) + 1
            yield RawMessage(Position(event.topic, 0, offset), event.key, event.value, None)

    @property
    def transaction_topic(self) -> str:
        """Debezium's ``<topic.prefix>.transaction`` for this stream's prefix."""
        return self.topic_prefix.split(".", 1)[0] + ".transaction"

    def transaction_ends(self) -> Iterator[SyntheticEvent]:
        """The transaction topic's END record of every streamed transaction, as Debezium
        writes them with ``provide.transaction.metadata=true`` (``id`` ``"<txId>:<lsn>"``, the
        event count overall and per table), in commit order; BEGINs are left out (nothing
        reads them). Counted from the events' own transaction blocks, duplicates once."""
        orders: dict[int, dict[str, int]] = {}
        totals: dict[int, int] = {}
        for event in self.events():
            if event.value is None or b'"transaction":{' not in event.value:
                continue
            doc = orjson.loads(event.value)
            tx = doc.get("transaction") if isinstance(doc, dict) else None
            if not isinstance(tx, dict):
                continue
            txid = int(str(tx["id"]).split(":", 1)[0])
            table = f"{doc['source']['schema']}.{doc['source']['table']}"
            per_table = orders.setdefault(txid, {})
            per_table[table] = max(per_table.get(table, 0), int(tx["data_collection_order"]))
            totals[txid] = max(totals.get(txid, 0), int(tx["total_order"]))
        for txid in sorted(orders):
            end = {
                "status": "END",
                "id": f"{txid}:{_STREAM_LSN + txid * _TX_STEP + 99}",
                "event_count": totals[txid],
                "data_collections": [
                    {"data_collection": t, "event_count": n} for t, n in orders[txid].items()
                ],
                "ts_ms": 0,
            }
            yield SyntheticEvent(self.transaction_topic, orjson.dumps({"id": end["id"]}), orjson.dumps(end))

    def iter_expected(self) -> Iterator[tuple[str, str, Row]]:
        """(entity, EntityId, record) of every live record at the end; streams at any scale."""
        for plan in self._plans():
            for (table, _), row in plan.final.items():
                yield record(table, row)

    def expected_state(self) -> dict[str, dict[str, Row]]:
        """``{entity: {EntityId: record}}`` for all six entities, with the state's Python types:
        ``date``, UTC ``datetime`` truncated to milliseconds, ``Decimal`` at scale 2."""
        state: dict[str, dict[str, Row]] = {entity: {} for entity in ENTITY_NAMES}
        for entity, entity_id, values in self.iter_expected():
            state[entity][entity_id] = values
        return state

    def expected_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ENTITY_NAMES, 0)
        for entity, _, _ in self.iter_expected():
            counts[entity] += 1
        return counts

    # -- internals -----------------------------------------------------------------------

    def _chunks(self) -> Iterator[tuple[list[tuple[str, int]], int]]:
        """Groups of units, and the family chunk number (-1 for provider chunks)."""
        for start in range(1, self.providers + 1, _CHUNK):
            yield [("provider", p) for p in range(start, min(start + _CHUNK, self.providers + 1))], -1
        for number, start in enumerate(range(1, self.scale + 1, _CHUNK)):
            yield [("family", f) for f in range(start, min(start + _CHUNK, self.scale + 1))], number

    def _plans(self) -> Iterator[Plan]:
        for units, _ in self._chunks():
            for kind, ident in units:
                yield _plan(self.seed, kind, ident, self.providers)

    def _render(
        self,
        change: Change,
        major: int | None,
        lsn: int,
        *,
        tx: int,
        order: tuple[int, int] | None,
        at: float | None = None,
    ) -> tuple[SyntheticEvent, ...]:
        topic = self.topic_prefix + change.table
        column = PK[change.table]
        key = orjson.dumps({column: change.pk})
        if change.op == "d":
            before, after = {column: change.pk} if change.row is None else wire(change.row, ()), None
        else:
            assert change.row is not None
            before, after = None, wire(change.row, change.toast)
        value = envelope(change.table, change.op, before, after, major, lsn, tx, order, at)
        event = SyntheticEvent(topic, key, value)
        return (event, SyntheticEvent(topic, key, None)) if change.op == "d" else (event,)

    def _spoil(
        self,
        items: list[_Item],
        kinds: list[int],
        units: list[tuple[str, int]],
        plans: list[Plan],
        rng: random.Random,
    ) -> list[_Item]:
        """Insert the malformed events ``kinds`` at random places, in order, each made from a
        family of the chunk (so it goes to that family's partition, among its real events)."""
        spots = sorted(rng.randrange(len(items) + 1) for _ in kinds)
        for k, spot in reversed(list(zip(kinds, spots, strict=True))):
            unit = rng.randrange(len(units))
            fid = units[unit][1]
            row = plans[unit].first[("family", fid)]
            kind = MALFORMED_KINDS[k % len(MALFORMED_KINDS)]
            after: dict[str, Any] = wire(row, ())
            key: dict[str, Any] = {"family_id": fid}
            op = "x" if kind == "unknown_op" else "u"
            if kind == "missing_primary_key":
                after["family_id"] = key["family_id"] = None
            elif kind == "unknown_enum_symbol":
                after["status"] = "Z"
            elif kind == "unparseable_decimal":
                after["deductible"] = "not-base64!"
            elif kind == "key_mismatch":
                after["family_id"] = fid + 10**12
            value = envelope("family", op, None, after, _STREAM_LSN, _STREAM_LSN + 1, 1, None, None)
            if kind == "invalid_json":
                value = value[: len(value) // 2]  # truncated mid-document
            event = SyntheticEvent(self.topic_prefix + "family", orjson.dumps(key), value)
            items.insert(spot, _Item(("family", fid), (event,), False))
        return items


def generate(
    scale: int,
    *,
    seed: int = 0,
    malformed: int = len(MALFORMED_KINDS),
    topic_prefix: str = "benefits.public.",
) -> SyntheticStream:
    """The synthetic stream of ``scale`` families (see the module docstring for the sizes)."""
    if scale < 1:
        raise ValueError("scale must be at least 1")
    if malformed < 0:
        raise ValueError("malformed must not be negative")
    return SyntheticStream(scale, seed, malformed, topic_prefix)


def _plan(seed: int, kind: str, ident: int, providers: int) -> Plan:
    return (plan_provider if kind == "provider" else plan_family)(seed, ident, providers)


def _swap(items: list[_Item], rng: random.Random) -> list[_Item]:
    """Swap some pairs of consecutive changes of one row: the older is delivered after the newer."""
    by_row: dict[tuple[str, int], list[int]] = {}
    for index, item in enumerate(items):
        if item.streamed:
            by_row.setdefault(item.row, []).append(index)
    for places in by_row.values():
        i = 0
        while i + 1 < len(places):
            if rng.random() < _SWAP:
                a, b = places[i], places[i + 1]
                items[a], items[b] = items[b], items[a]
                i += 1
            i += 1
    return items


def _duplicate(items: list[_Item], rng: random.Random) -> list[_Item]:
    """Deliver some items a second time, byte for byte, a few messages later (a replay)."""
    out: list[_Item] = []
    pending: list[tuple[int, _Item]] = []
    for index, item in enumerate(items):
        out.append(item)
        if rng.random() < _DUPLICATE:
            pending.append((index + rng.randrange(9), item))
        out.extend(copy for due, copy in pending if due <= index)
        pending = [(due, copy) for due, copy in pending if due > index]
    out.extend(copy for _, copy in pending)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (module docstring); it lives in ``_synthetic_cli``."""
    from connector.devtools._synthetic_cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
