"""One source message of a batch: applied to the batch's view, or dead-lettered.

The message layer of ``IngestService`` (under the transaction loop, ``connector.ingest.transaction``,
which calls it for each message of a batch). A message's sizes are checked before any parsing;
then the per-message barrier (``connector.ingest.barrier``) surrounds decode -> map -> merge,
so whatever a message holds it ends applied or dead-lettered, and only Kafka and I/O errors
reach the loop. A dead letter carries the message's bytes and its position, or its position
alone when the bytes were the problem or would not fit the dead-letter topic.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Message, Producer

from connector.ingest.barrier import INTERNAL_REASON, Cause, dead_letter_cause
from connector.ingest.batch import BatchView
from connector.ingest.dead_letter import BY_REFERENCE_REASONS, dead_letter_headers
from connector.ingest.partitions import Partitions
from connector.ingest.resnapshot import Resnapshots
from connector.ingest.schema_watch import SchemaWatch
from connector.mapping import Mapper
from connector.mapping.fastpath import FastPath
from connector.source import Decoder, Position
from connector.source.transactions import decode_boundary
from connector.state.apply import Outcome, apply_change
from connector.state.carry import decode_offer, receive
from connector.state.codec import state_key
from connector.state.ledger import TxEnd, encode_end, end_key, group_id

__all__ = ["RECORD_OVERHEAD", "Messages"]

log = logging.getLogger(__name__)

RECORD_OVERHEAD = 1024
"""Room left under a topic's ``max.message.bytes`` for the record batch's framing and headers:
a state row or dead letter this close to the limit is refused before ``produce`` is called."""


class Messages(Partitions, Resnapshots):
    """Each message of a batch through the barrier, into the batch's view or the dead letters."""

    mapper: Mapper
    decoders: dict[str, Decoder]
    fast: dict[str, FastPath]
    _record_limit: int
    carry_topic: str
    """The connector's carry topic (``connector.ingest.carry``), consumed with the sources."""
    transaction_topic: str | None
    """Debezium's transaction topic when the mapping tracks transactions, else None."""
    schema_watch: SchemaWatch
    """Checks each source schema against the mapping when a message first shows it."""

    def _handle(self, msg: Message, position: Position, view: BatchView, producer: Producer) -> None:
        cause = self.handle_message(msg.key(), msg.value(), msg.headers(), position, view)
        if cause is not None:
            by_reference = cause.reason in BY_REFERENCE_REASONS
            self._dead_letter(producer, msg, position, cause.error, cause.reason, by_reference=by_reference)

    def handle_message(
        self, key: bytes | None, value: bytes | None, raw_headers: Any, position: Position, view: BatchView
    ) -> Cause | None:
        """One message into ``view``: None when applied (or stale, or a tombstone), else the
        cause of its dead letter. Sizes are checked first, before any parsing; then the
        per-message barrier surrounds decode -> map -> merge (``connector.ingest.barrier``):
        Kafka and I/O errors pass through to the loop, anything else is this message's.
        Offline tools (the fuzzer, ``bench/poison.py``) call this with a view of their own."""
        refused = self._refused_size(key, value, raw_headers)
        if refused is not None:
            return refused
        self.schema_watch.observe(position.topic, value)  # never raises: it only looks
        try:
            self._apply(key, value, _headers(raw_headers), position, view)
        except BaseException as exc:  # the barrier: PanicException derives from BaseException
            cause = dead_letter_cause(exc)
            if cause is None:
                raise
            if cause.reason == INTERNAL_REASON:
                log.error(
                    "a message met a bug; dead-lettered", extra={**_where(position), "error": cause.error}
                )
            return cause
        return None

    def handle_boundary(
        self, value: bytes | None, raw_headers: Any, position: Position
    ) -> tuple[bytes, bytes] | Cause | None:
        """One record of the transaction topic: an END becomes its ledger record (``(key,
        value)`` for the state topic), a BEGIN or a tombstone nothing (None), anything else the
        cause of its dead letter, through the same size checks and barrier as a row change."""
        refused = self._refused_size(None, value, raw_headers)
        if refused is not None:
            return refused
        try:
            boundary = decode_boundary(value)
        except BaseException as exc:  # the barrier, as in handle_message
            cause = dead_letter_cause(exc)
            if cause is None:
                raise
            return cause
        if boundary is None or boundary.status == "BEGIN" or boundary.event_count is None:
            self.counts["transaction_begins" if boundary is not None else "tombstones"] += 1
            return None
        self.counts["transaction_ends"] += 1
        txid = group_id(boundary.id)
        end = TxEnd(txid, boundary.event_count, boundary.collections, self.purge.now_ms())
        return end_key(txid), encode_end(end)

    def _refused_size(self, key: bytes | None, value: bytes | None, raw: Any) -> Cause | None:
        """Why the message is refused by its size alone, or None."""
        ingest = self.ingest
        if value is not None and len(value) > ingest.max_message_bytes:
            return Cause("OversizedRecord", "oversized_record")
        if key is not None and len(key) > ingest.max_key_bytes:
            return Cause("OversizedKey", "oversized_key")
        if raw and sum(len(k) + len(v or b"") for k, v in raw) > ingest.max_key_bytes:
            return Cause("OversizedHeaders", "oversized_headers")
        return None

    def _apply(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        position: Position,
        view: BatchView,
    ) -> None:
        fast = self.fast.get(position.topic)
        quick = None
        if fast is not None and value is not None:
            quick = fast.map(
                key, value, headers, position, self.generations.get(position.topic, position.partition)
            )
        if fast is not None and quick is not None:
            self.generations.observe(position.topic, position.partition, quick.version[0])
            self.counts["fast_path"] += 1
            self.report.fast_path()
            outcome = view.apply_fast(quick, fast.peek)
            entity, deleted = quick.entity, quick.deleted
            if quick.transaction is not None and self.transaction_topic is not None:
                table, tx_id, order = quick.transaction
                view.note_transaction(group_id(tx_id), table, order, quick.key)
        else:  # no fast path, or it declined: the Python path decides
            event = self.decoders[position.topic].decode(key, value, headers, position)
            if event is None:
                self.counts["tombstones"] += 1
                return
            event.version = self.generations.stamp(position.topic, position.partition, event.version)
            change = self.mapper.map(event)
            outcome = apply_change(view, change)
            if event.snapshot_end is not None:
                self._snapshot_completed(event.snapshot_end, event.version, view, position.partition)
            entity, deleted = change.entity, change.deleted
            tx = event.transaction
            if tx is not None and self.transaction_topic is not None:
                # Applied or stale, the state now holds this event's effect (or a newer one).
                view.note_transaction(
                    group_id(tx.id),
                    event.table,
                    tx.data_collection_order,
                    state_key(entity, change.entity_id),
                )
        self.counts["stale" if outcome is Outcome.STALE else "applied"] += 1
        self.report.event(entity, deleted, outcome is Outcome.STALE)

    def _dead_letter(
        self,
        producer: Producer,
        msg: Message,
        position: Position,
        error: str,
        reason: str,
        *,
        by_reference: bool = False,
    ) -> None:
        self.counts[f"dlq.{reason}"] += 1
        self.report.dead_letter(reason)
        log.warning("dead letter", extra={**_where(position), "reason": reason})
        key, value = msg.key(), msg.value()
        if len(key or b"") + len(value or b"") > self._record_limit - RECORD_OVERHEAD:
            by_reference = True  # the bytes would not fit the dead-letter topic: their position does
        producer.produce(
            self.ingest.dlq_topic,
            None if by_reference else value,
            None if by_reference else key,
            headers=dead_letter_headers(position, error, reason),
        )

    def _receive_carry(self, msg: Message, position: Position, view: BatchView, producer: Producer) -> None:
        """One carry-topic record (``connector.ingest.carry``) into its partition's view: a
        primary-key update's old row fills the new key's row here, or waits for it. Through
        the same barrier as a source message: a record that is not an offer is a dead letter."""
        try:
            received = receive(view, decode_offer(msg.key(), msg.value()))
        except BaseException as exc:
            cause = dead_letter_cause(exc)
            if cause is None:
                raise
            self._dead_letter(producer, msg, position, cause.error, cause.reason)
            return
        self.counts[f"carry_{received.value}"] += 1


def _where(position: Position) -> dict[str, Any]:
    """A message's position as log fields: never its content."""
    return {"topic": position.topic, "partition": position.partition, "offset": position.offset}


def _headers(raw: Any) -> list[tuple[str, bytes | None]] | None:
    """librdkafka hands headers as (str, bytes) pairs; normalise the type for the decoders."""
    if not raw:
        return None
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]
