"""The ingest's transaction: one batch of source messages, committed whole or not at all.

A part of ``IngestService`` (``connector.ingest.service``). One Kafka transaction per batch
carries the batch's state rows (to the compacted state topic, partition p for source partition
p), its dead letters and its consumed offsets, so a crash at any point leaves either all of a
batch or none of it. The local store is written only after the commit; it is a cache that
catches up from the state topic. Each message passes the per-message barrier
(``connector.ingest.message``, ``connector.ingest.barrier``): it ends applied or dead-lettered,
whatever it holds.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import AbstractContextManager

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from connector.errors import TerminalError, TransientError
from connector.ingest.barrier import Cause
from connector.ingest.batch import BatchView, Emitter
from connector.ingest.carry import send_offers
from connector.ingest.dead_letter import BY_REFERENCE_REASONS
from connector.ingest.message import RECORD_OVERHEAD, Messages
from connector.ingest.remap import RemapPass
from connector.ingest.watchdog import Watchdog
from connector.source import Position
from connector.state.exceptions import StoreCorruptedError

__all__ = ["CALL_TIMEOUT_S", "RECORD_OVERHEAD", "Transactions"]

log = logging.getLogger(__name__)

_COMMIT_ATTEMPTS = 3
CALL_TIMEOUT_S = 30.0
"""librdkafka's own timeout for each transactional call."""
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)  # noqa: SLF001 (librdkafka's local codes)
"""Delivery errors of records our own abort purged: the abort's cause is logged, not these."""
_WATCHDOG_GRACE_S = 15.0
"""How far past its own timeout a call may run before the watchdog ends the process."""
_CHUNK_MAX = 1000
"""Messages per ``consume`` call at most (1000 measured best for the loop's per-record cost)."""
_BEAT_EVERY = 128
"""Messages between heartbeats inside a batch: a long batch of large events is progress."""


class Transactions(Messages):
    """The transaction loop over the clients ``IngestService.start`` made; each message of a
    batch goes through ``Messages`` (``connector.ingest.message``)."""

    watchdog: Watchdog
    _delivered: dict[int, int]
    _fatal: KafkaError | None
    _consumer: Consumer | None
    _producer: Producer | None
    _batch_budget_s: float
    _state_partitions: int
    remap: RemapPass | None
    """The re-mapping pass (``connector.ingest.remap``), made at start-up."""

    def run_batch(self) -> int:
        """Consume one batch and commit it in one transaction; returns the events consumed.

        1. consume up to ``batch_max_events`` within ``batch_max_ms`` (rebalance callbacks run
           here, between transactions, never inside one);
        2. begin the transaction; decode -> map -> merge each event against the batch's view
           of its partition, producing each changed row to state partition p at once (delete
           markers stamped with the batch's time); dead-letter bad input;
        3. produce a tombstone for each expired marker of p (``connector.state.purge``);
        4. send the consumed offsets with the group metadata (KIP-447 fencing);
        5. commit (a retriable failure is retried; an abortable one aborts, rewinds the
           consumer to the batch's first offsets and drops the batch's rows; anything else is
           fatal: the process exits and the orchestrator restarts it);
        6. after the commit, write the rows (deleting purged keys) and the state offset
           reached to the local store.
        """
        consumer, producer = self._clients()
        msgs = self._consume(consumer)
        if self._callback_error is not None:
            raise self._callback_error
        self._check_fatal()
        msgs = [m for m in msgs if not self._skip_error(m)]
        due = self.remap.due(self.stores) if self.remap is not None else []
        self._remap_report({})  # the progress the stores hold (a restarted process reports it too)
        if not msgs and not due:
            self.report.lag(consumer)
            return 0
        self.report.batch.clear()
        producer.begin_transaction()
        self._delivered.clear()
        now_ms = self.purge.now_ms()
        views: dict[int, BatchView] = {}
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        purged: dict[int, int] = {}
        row_limit = self._record_limit - RECORD_OVERHEAD
        over_budget = time.monotonic() + self._batch_budget_s
        carried = 0
        try:
            for index, msg in enumerate(msgs):
                if index % _BEAT_EVERY == 0 and index:
                    self.heartbeat.beat()  # a long batch is progress, not a stall (/healthz)
                    if time.monotonic() > over_budget:
                        msgs = self._put_back(consumer, msgs, index)
                        break
                topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                first.setdefault((topic, partition), offset)
                last[(topic, partition)] = offset
                if topic == self.transaction_topic:
                    self._boundary(
                        msg, Position(topic, partition, offset), views, producer, now_ms, row_limit
                    )
                    continue
                view = views.get(partition)
                if view is None:
                    view = views[partition] = BatchView(
                        self._store(partition), self._emitter(producer, partition), now_ms, row_limit
                    )
                if topic == self.carry_topic:
                    self._receive_carry(msg, Position(topic, partition, offset), view, producer)
                    carried += 1
                    continue
                self._handle(msg, Position(topic, partition, offset), view, producer)
            remapped = self._remap_step(due, views, producer, now_ms, row_limit)
            self.emit_positions(views, last)  # the sweep's guard (connector.state.sweep)
            for partition, view in views.items():
                if view.offers:
                    self.counts["carry_offers"] += send_offers(
                        producer, self.carry_topic, self._state_partitions, view.offers, row_limit
                    )
                self.counts["ledger_records"] += view.emit_ledger(partition)
                for key in self.purge.due(partition, view.store):
                    if key not in view.encoded:  # a row this batch writes wins over the purge
                        view.encoded[key] = None
                        view.emit(key, None)
                        purged[partition] = purged.get(partition, 0) + 1
                view.emit.finish()
            # Each partition's snapshot generation goes as its offset's metadata.
            offsets = self.generations.offsets((t, p, o + 1) for (t, p), o in last.items())
            if not offsets:  # a pass-only transaction: the owned positions fence it (KIP-447)
                offsets = self._positions(consumer)
            committed = self._commit(producer, consumer, offsets)
        except (TransientError, StoreCorruptedError) as exc:
            # Nothing of this batch may become visible: abort, rewind, and let the caller back
            # off (registry or broker away) or rebuild the corrupt store and go again.
            self._abort(producer, 2 * CALL_TIMEOUT_S)
            self._rewind(consumer, first)
            self._remap_aborted()
            if isinstance(exc, StoreCorruptedError):
                self._rebuild({p for _, p in first})
                return 0
            raise
        if not committed:
            self._rewind(consumer, first)
            self._remap_aborted()
            return 0
        self.generations.commit()
        if due or any(remapped.values()):
            self._remap_report(remapped)
            self.counts.update({f"remap_{k}": v for k, v in remapped.items()})
        for partition, view in views.items():
            if view.encoded:
                view.store.write(view.encoded, self._delivered[partition] + 1)
            if view.sources_dropped:
                self.counts["source_columns_dropped"] += view.sources_dropped
                log.info(
                    "rows written without their source columns: with them they exceed the topic's limit",
                    extra={"partition": partition, "count": view.sources_dropped},
                )
        for partition, count in purged.items():
            self.counts["purged_markers"] += count
            log.info("delete markers purged", extra={"partition": partition, "count": count})
        self.counts["events"] += len(msgs) - carried  # source events; carries are counted as carry_*
        self.report.committed(consumer, {p: view.live_changes() for p, view in views.items()})
        return len(msgs)

    def _remap_step(
        self, due: list[int], views: dict[int, BatchView], producer: Producer, now_ms: int, row_limit: int
    ) -> dict[str, int]:
        """Step 2's end: the re-mapping pass's share of this transaction (``connector.ingest.
        remap``), through each partition's view: a step in each partition whose sweep is due,
        and in every other owned partition this batch wrote to, the rows it wrote under another
        mapping version than the current one (``RemapPass.written``: a primary-key carry from a
        donor under another version lands in any partition, its sweep done or never started)."""
        totals: Counter[str] = Counter()
        if self.remap is None:
            return totals
        for partition in due:
            if partition not in self.stores:
                continue  # revoked in this batch's consume
            view = views.get(partition)
            if view is None:
                view = views[partition] = BatchView(
                    self.stores[partition], self._emitter(producer, partition), now_ms, row_limit
                )
            totals.update(self.remap.step(partition, view, producer))
        for partition, view in views.items():
            if partition not in due and partition in self.stores:
                totals.update(self.remap.written(partition, view, producer))
        return totals

    def _remap_report(self, counts: dict[str, int]) -> None:
        """The pass's metrics: ``counts`` of a committed step, and the rows left and kept."""
        if self.remap is not None:
            left, kept = sum(self.remap.left.values()), sum(self.remap.kept.values())
            self.metrics.remap_progress(counts, left, kept)

    def _remap_aborted(self) -> None:
        if self.remap is not None:
            self.remap.forget()

    def _positions(self, consumer: Consumer) -> list[TopicPartition]:
        """The owned partitions' next offsets (what the last committed batch left), with their
        generations: sent by a transaction that consumed nothing, so the group's fencing still
        refuses it from a replica that lost its partitions (a commit of the same offsets)."""
        assigned = consumer.assignment()
        if not assigned:
            return []
        found = consumer.position(assigned)
        return self.generations.offsets((tp.topic, tp.partition, tp.offset) for tp in found if tp.offset >= 0)

    def _boundary(
        self,
        msg: Message,
        position: Position,
        views: dict[int, BatchView],
        producer: Producer,
        now_ms: int,
        row_limit: int,
    ) -> None:
        """A transaction-topic record in step 2: an END's ledger record goes to state partition
        (its partition modulo the state's), through that partition's view when this replica
        owns it (so its store holds it for the purge), else straight to the state topic; both
        in this batch's transaction. A bad record is a dead letter."""
        found = self.handle_boundary(msg.value(), msg.headers(), position)
        if found is None:
            return
        if isinstance(found, Cause):
            by_reference = found.reason in BY_REFERENCE_REASONS
            self._dead_letter(producer, msg, position, found.error, found.reason, by_reference=by_reference)
            return
        key, value = found
        target = position.partition % self._state_partitions
        view = views.get(target)
        if view is None and target in self.stores:
            view = views[target] = BatchView(
                self.stores[target], self._emitter(producer, target), now_ms, row_limit
            )
        if view is not None:
            view.encoded[key] = value
            view.emit(key, value)
        else:
            producer.produce(self.ingest.state_topic, value, key, partition=target)

    def _consume(self, consumer: Consumer) -> list[Message]:
        """Step 1: up to ``batch_max_events`` messages and about ``batch_max_bytes`` within
        ``batch_max_ms``. Taken in chunks sized by the bytes still allowed, so a run of large
        messages cannot make a batch of gigabytes (5000 of 1 MB each) against the pod's limit."""
        ingest = self.ingest
        deadline = time.monotonic() + ingest.batch_max_ms / 1000
        msgs: list[Message] = []
        # The first chunk is sized for the largest messages allowed; later ones by the average.
        largest = ingest.max_message_bytes + ingest.max_key_bytes
        size, chunk = 0, max(1, min(_CHUNK_MAX, ingest.batch_max_events, ingest.batch_max_bytes // largest))
        seen = self._rebalances
        while True:
            got = consumer.consume(chunk, max(0.0, deadline - time.monotonic()))
            if self._rebalances != seen:
                # The partitions changed inside this call (librdkafka runs the callbacks before
                # it returns messages): what earlier chunks took may be of a partition no longer
                # ours, or consumed again from its committed offset. Only this call's messages
                # are of the new assignment.
                return list(got)
            msgs.extend(got)
            size += sum(len(m) + len(m.key() or b"") for m in got)
            wanted = ingest.batch_max_events - len(msgs)
            if len(got) < chunk or wanted <= 0 or size >= ingest.batch_max_bytes:
                return msgs
            if time.monotonic() >= deadline:
                return msgs
            average = size // len(msgs) + 1
            chunk = max(1, min(_CHUNK_MAX, wanted, (ingest.batch_max_bytes - size) // average))

    def _put_back(self, consumer: Consumer, msgs: list[Message], index: int) -> list[Message]:
        """End the batch at ``msgs[index]``: seek each partition back to its first message not
        handled, so the next batch starts there; the handled part commits as usual."""
        rest: dict[tuple[str, int], int] = {}
        for msg in msgs[index:]:
            rest.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
        for (topic, partition), offset in rest.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        log.warning(
            "batch cut short: its messages took longer than the budget",
            extra={"events": index, "count": len(msgs) - index, "duration_s": self._batch_budget_s},
        )
        return msgs[:index]

    def _emitter(self, producer: Producer, partition: int) -> Emitter:
        return Emitter(producer, self.ingest.state_topic, partition, self._on_delivery)

    def _rewind(self, consumer: Consumer, first: dict[tuple[str, int], int]) -> None:
        """Seek back to the batch's first offsets: the aborted batch is consumed again."""
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        self.generations.abort()  # the batch is consumed again from where its generations were
        self.counts["aborted_batches"] += 1
        self.metrics.aborted_transactions.inc()

    def _commit(self, producer: Producer, consumer: Consumer, offsets: list[TopicPartition]) -> bool:
        """Steps 4-5 with every outcome handled; False means the batch was aborted.

        Retriable failures are retried a bounded number of times: a broker that stays away
        longer than that ends the process (non-zero exit), and the restarted process fences
        this transaction at ``init_transactions`` instead of waiting on it forever. Each call
        also runs under the watchdog, because librdkafka does not always honour its own
        timeout here (``connector.ingest.watchdog``): a call that overruns it ends the process
        the same way, only harder.
        """
        sent = False
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                if not sent:
                    metadata = consumer.consumer_group_metadata()
                    with self._guard("send_offsets_to_transaction", CALL_TIMEOUT_S):
                        producer.send_offsets_to_transaction(offsets, metadata, CALL_TIMEOUT_S)
                    sent = True
                with self._guard("commit_transaction", CALL_TIMEOUT_S):
                    producer.commit_transaction(CALL_TIMEOUT_S)
                return True
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                # librdkafka's description names the cause (e.g. "102 message(s) timed out on
                # <state topic> [2]"): topics, partitions and counts, never record contents.
                why = {"kafka_error": err.name(), "kafka_reason": err.str()}
                if err.retriable() and attempt < _COMMIT_ATTEMPTS:
                    log.warning("transaction commit retried", extra={**why, "attempt": attempt})
                    continue
                if err.txn_requires_abort():
                    log.warning("transaction aborted", extra=why)
                    self._abort(producer, CALL_TIMEOUT_S)
                    return False
                raise TerminalError(f"Kafka transaction failed: {err.name()}: {err.str()}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _abort(self, producer: Producer, timeout_s: float) -> None:
        """Abort the open transaction. A producer that cannot is fatal here: typically it was
        fenced because the coordinator already aborted the transaction at its timeout (the
        broker away longer than that) and bumped the epoch. The process ends with that reason
        and its restart resumes from the committed offsets; nothing of the batch is visible."""
        try:
            with self._guard("abort_transaction", timeout_s):
                producer.abort_transaction(timeout_s)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            raise TerminalError(f"Kafka transaction failed: {err.name()} on abort: {err.str()}") from None

    def _guard(self, call: str, timeout_s: float) -> AbstractContextManager[None]:
        """The watchdog's deadline for a call given ``timeout_s`` of its own."""
        return self.watchdog.guard(call, timeout_s + _WATCHDOG_GRACE_S)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            p, o = msg.partition() or 0, msg.offset() or 0
            if o > self._delivered.get(p, -1):
                self._delivered[p] = o
            return
        if err.code() in _PURGED:
            return  # purged by our own abort: its cause is logged with the abort
        # The transaction cannot commit without the record: librdkafka makes it abortable, and
        # ``_commit`` aborts and rewinds (nothing is sent again inside this transaction).
        log.warning(
            "state record not delivered; the batch will be aborted",
            extra={"kafka_error": err.name(), "partition": msg.partition()},
        )

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION or err.fatal():
            self._fatal = err

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            err, self._fatal = self._fatal, None
            raise TerminalError(f"Kafka: {err.name()}: {err.str()}")

    def _skip_error(self, msg: Message) -> bool:
        """An end of partition is skipped; any other consumer error ends the process, named.

        A ``TerminalError`` naming the error, so the process exits and its restart resumes at
        the committed offsets: on three brokers the group coordinator's death made the consumer
        report ``_FATAL`` after an ``UNKNOWN_MEMBER_ID`` abort (a fatal client error: the consumer
        is unusable), and retrying in the same process (a ``TransientError``) left the ingest
        making no progress for minutes; the raw
        ``KafkaException`` it was before exited too, but the CLI called it a bug (issue 21).
        """
        err = msg.error()
        if err is None:
            return False
        if err.code() == KafkaError._PARTITION_EOF:
            return True
        raise TerminalError(
            f"consuming the source topics: Kafka {err.name()}; a restart resumes at the committed offsets"
        )

    def _clients(self) -> tuple[Consumer, Producer]:
        if self._consumer is None or self._producer is None:
            raise TerminalError("ingest service not started")
        return self._consumer, self._producer
