"""One batch of the ingest loop in one partition: the rows it touched and where they go.

``BatchView`` is the ``RowStore`` that ``connector.state.apply_change`` merges into: the rows
the batch has written, over the partition's local store. Each changed row is produced to the
state topic at once through an ``Emit``: the ``Emitter`` in the service, a list offline
(``connector.devtools.offline_ingest``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from connector.mapping.change import EntityChange
from connector.mapping.fastpath import FastChange, Peek
from connector.source.version import Version
from connector.state.apply import Outcome, apply_change
from connector.state.carry import CarryOffer
from connector.state.codec import decode_row, encode_row, state_key, stored_values_and_source
from connector.state.exceptions import StateRowTooLargeError
from connector.state.ledger import Ledger, decode_ledger, encode_ledger, ledger_key, single_ledger
from connector.state.resolve import StateRow
from connector.state.store import PartitionStore

__all__ = ["BatchView", "Emit", "Emitter"]


def as_change(change: FastChange) -> EntityChange:
    """The compiled path's change as the Python path's ``EntityChange``, its values in stored
    form, read from the encoded row by the state's codec (the one reader of the row format)."""
    values, source = ({}, None) if change.row is None else stored_values_and_source(change.row)
    return EntityChange(
        change.entity,
        change.entity_id,
        change.deleted,
        Version(*change.version),
        values,
        position=change.position,
        mapping_version=change.mapping_version,
        source=source,
    )


class Emit(Protocol):
    """Where a batch's changed rows go: the state topic in the service, a list offline."""

    def __call__(self, key: bytes, value: bytes | None) -> None: ...

    def finish(self) -> None: ...


class Emitter:
    """Produces one partition's state records for one batch, reporting the offset reached.

    The local store records the state-topic offset it reflects, which is the offset of the
    partition's last record of the batch: records of one partition are delivered in order, so
    only that last record needs a delivery report. Each record is held back until the next
    one comes (then produced without a report), and ``finish`` produces the last with one:
    a Python callback per batch and partition instead of one per record.
    """

    __slots__ = ("_delivered", "_pending", "_producer", "_topic", "partition")

    def __init__(
        self,
        producer: Producer,
        topic: str,
        partition: int,
        delivered: Callable[[KafkaError | None, Message], None],
    ) -> None:
        self._producer, self._topic, self.partition, self._delivered = producer, topic, partition, delivered
        self._pending: tuple[bytes, bytes | None] | None = None

    def __call__(self, key: bytes, value: bytes | None) -> None:
        if self._pending is not None:
            self._producer.produce(self._topic, self._pending[1], self._pending[0], partition=self.partition)
        self._pending = (key, value)

    def finish(self) -> None:
        if self._pending is not None:
            key, value = self._pending
            self._producer.produce(
                self._topic, value, key, partition=self.partition, on_delivery=self._delivered
            )
            self._pending = None


@dataclass
class BatchView:
    """The rows one batch has touched in one partition, over that partition's local store.

    A row is produced to the state topic as soon as it changes (``emit``), not at the end of
    the batch: the producer then sends while the batch is still being decoded, and the commit
    waits only for the tail. A row changed twice in a batch is produced twice; the later
    record wins on restore and in the snapshot, as it is later in the partition, and
    compaction drops the earlier one.
    """

    store: PartitionStore
    emit: Emit
    stamp_ms: int
    """When this batch wrote its delete markers (``connector.state.purge`` reads their age)."""
    row_limit: int = 1 << 62
    """The largest state record (key and value) the state topic takes; a larger row is refused
    with ``StateRowTooLargeError`` before anything of its event is written."""
    rows: dict[tuple[str, str], StateRow] = field(default_factory=dict)
    """Rows ``apply_change`` wrote in this batch (the fast path's are only in ``encoded``)."""
    complete_after: dict[tuple[str, str], bool] = field(default_factory=dict)
    """Whether each row this batch wrote is a live, complete entity."""
    encoded: dict[bytes, bytes | None] = field(default_factory=dict)
    """What the local store is to hold after the commit: the last bytes produced per key."""
    live_before: dict[tuple[str, str], bool] = field(default_factory=dict)
    """Whether each row read from the store was a live, complete entity (apply_change reads
    every row before it writes it): the batch's change to the live count."""
    offers: list[CarryOffer] = field(default_factory=list)
    """Primary-key updates' carry offers this batch made (``connector.state.carry``), for the
    loop to send to every partition in the batch's transaction."""
    sources_dropped: int = 0
    """Rows this batch wrote without their source columns, which would not have fit."""
    ledger: dict[str, list[tuple[str, int, bytes]]] = field(default_factory=dict)
    """With transaction tracking: per source transaction, ``(table, order, state key)`` of its
    events this batch applied here (``connector.state.ledger``), written by ``emit_ledger``."""

    def note_transaction(self, txid: str, table: str, order: int, key: bytes) -> None:
        """One applied (or stale: the state holds it or newer) event of a source transaction.
        Only noted here (a list append): the ledger record is built once per batch."""
        notes = self.ledger.get(txid)
        if notes is None:
            self.ledger[txid] = [(table, order, key)]
        else:
            notes.append((table, order, key))

    def emit_ledger(self, partition: int) -> int:
        """Step 2's end: each noted transaction's ledger record, merged with the one held, to
        the state topic in this batch's transaction; returns how many were written. A record
        that would add nothing (duplicates only) is not written again."""
        written = 0
        for txid, notes in self.ledger.items():
            key = ledger_key(txid, partition)
            raw = self.encoded[key] if key in self.encoded else self.store.get(key)
            limit = self.row_limit - len(key)
            if raw is None and len(notes) == 1:  # the common one-event transaction, built directly
                value = single_ledger(*notes[0], self.stamp_ms, limit)
            else:
                held = None if raw is None else decode_ledger(raw)
                found = Ledger()
                for table, order, state_key in notes:
                    found.note(table, order, state_key.decode())
                merged = found if held is None else held.merged(found)
                if held is not None and merged.size == held.size:
                    continue
                merged.stamp_ms = self.stamp_ms
                value = encode_ledger(merged, limit)
            self.encoded[key] = value
            self.emit(key, value)
            written += 1
        self.ledger.clear()
        return written

    def apply_fast(self, change: FastChange, peek: Peek) -> Outcome:
        """``apply_change`` for a change the compiled path mapped, without its values in Python.

        Over no stored row, or a plain live one (complete, no older-filled fields, no delete
        floor: ``peek`` reads its version), an upsert's outcome needs only that version:
        newer, the fast path's encoded row is the new row as is; equal or older, nothing
        changes (an older upsert fills only missing or older-filled fields). Deletes, other
        rows and keys this batch already changed take ``apply_change``. A test holds both to
        the same bytes, outcome and live count.
        """
        ident = (change.entity, change.entity_id)
        if change.row is None or ident in self.complete_after:
            return apply_change(self, as_change(change))
        raw = self.store.get(change.key)
        if raw is not None:
            stored = peek(raw)
            if stored is None:
                return apply_change(self, as_change(change))
            if change.version <= stored:
                return Outcome.STALE
        if len(change.key) + len(change.row) > self.row_limit:
            # Too large as it is: ``put`` writes it without its source columns if that fits.
            return apply_change(self, as_change(change))
        self.live_before.setdefault(ident, raw is not None)
        self.encoded[change.key] = change.row
        self.complete_after[ident] = True
        self.emit(change.key, change.row)
        return Outcome.APPLIED

    def get(self, entity: str, entity_id: str) -> StateRow | None:
        row = self.rows.get((entity, entity_id))
        if row is not None:
            return row
        key = state_key(entity, entity_id)
        raw = self.encoded[key] if key in self.encoded else self.store.get(key)
        stored = None if raw is None else decode_row(entity, raw, typed=False)
        self.live_before.setdefault((entity, entity_id), stored is not None and stored.complete)
        return stored

    def live_changes(self) -> Counter[str]:
        changes: Counter[str] = Counter()
        for (entity, entity_id), complete in self.complete_after.items():
            if entity[:1] != "~":  # reserved records (pending carries) are not entities
                changes[entity] += int(complete) - int(self.live_before.get((entity, entity_id), False))
        return changes

    def offer(self, offer: CarryOffer) -> None:
        self.offers.append(offer)

    def drop(self, entity: str, entity_id: str) -> None:
        """A tombstone for the key, in this batch's transaction (a taken pending carry)."""
        key = state_key(entity, entity_id)
        self.rows.pop((entity, entity_id), None)
        self.complete_after.pop((entity, entity_id), None)
        self.encoded[key] = None
        self.emit(key, None)

    def put(self, entity: str, entity_id: str, row: StateRow) -> None:
        """Encode first, then record: an event whose row cannot be encoded or is too large
        leaves the view as it was (the per-message barrier dead-letters it).

        A row that its source columns alone take over the state topic's limit is written
        without them (a near-limit event is still applied, as before rows kept them); the
        re-mapping pass counts it as having none (docs/decisions/0025)."""
        key = state_key(entity, entity_id)
        value = encode_row(row, deleted_at_ms=self.stamp_ms)
        if len(key) + len(value) > self.row_limit and row.source is not None:
            row = replace(row, source=None)
            value = encode_row(row, deleted_at_ms=self.stamp_ms)
            self.sources_dropped += 1
        self._check_size(key, value)
        self.rows[(entity, entity_id)] = row
        self.complete_after[(entity, entity_id)] = row.complete
        self.encoded[key] = value
        self.emit(key, value)

    def _check_size(self, key: bytes, value: bytes) -> None:
        if len(key) + len(value) > self.row_limit:
            raise StateRowTooLargeError(
                f"the state row would be {len(key) + len(value)} bytes, above the state topic's "
                f"limit of {self.row_limit}"
            )
