"""The ingest loop: Kafka change events -> entity state, exactly once.

One Kafka transaction per batch carries the batch's state rows (to the compacted state
topic, partition p for source partition p), its dead letters and its consumed offsets, so a
crash at any point leaves either all of a batch or none of it. The local store is written
only after the commit; it is a cache that catches up from the state topic.

Fencing: the producer's ``transactional.id`` is stable per replica (a restarted pod fences
its own previous incarnation at ``init_transactions``), and offsets are sent with the
consumer's group metadata (KIP-447), so a replica that lost its partitions in a rebalance
cannot commit a batch for them. Partitions are assigned with the ``range`` strategy over
source topics of equal partition count, so partition p of every source topic — and hence
state partition p — has exactly one owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.config import Settings
from connector.errors import ConfigError, TerminalError, TransientError
from connector.health import Heartbeat
from connector.mapping import Mapper, MappingSpec
from connector.mapping.fastpath import FastChange, FastPath, Peek, fastpath_available
from connector.metrics import METRICS, Metrics
from connector.source import Decoder, Position, make_decoder
from connector.state._ingest_report import IngestReport
from connector.state.apply import Outcome, apply_change
from connector.state.barrier import INTERNAL_REASON, Cause, dead_letter_cause
from connector.state.codec import decode_row, encode_row, state_key
from connector.state.dlq import BY_REFERENCE_REASONS
from connector.state.exceptions import StateRowTooLargeError, StoreCorruptedError, StoreError
from connector.state.purge import MarkerPurge
from connector.state.resolve import StateRow
from connector.state.restore import restore_partitions
from connector.state.store import PartitionStore
from connector.state.topics import ensure_topics, record_limit, source_partitions
from connector.state.watchdog import Watchdog

__all__ = ["BatchView", "Emit", "IngestService", "dead_letter_headers"]

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.5
_BACKOFF_MAX_S = 30.0
_COMMIT_ATTEMPTS = 3
_CALL_TIMEOUT_S = 30.0
"""librdkafka's own timeout for each transactional call."""
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)  # noqa: SLF001 (librdkafka's local codes)
"""Delivery errors of records our own abort purged: the abort's cause is logged, not these."""
_WATCHDOG_GRACE_S = 15.0
"""How far past its own timeout a call may run before the watchdog ends the process."""
_RECORD_OVERHEAD = 1024
"""Room left under a topic's ``max.message.bytes`` for the record batch's framing and headers:
a state row or dead letter this close to the limit is refused before ``produce`` is called."""
_CHUNK_MAX = 1000
"""Messages per ``consume`` call at most (1000 measured best for the loop's per-record cost)."""
_BEAT_EVERY = 128
"""Messages between heartbeats inside a batch: a long batch of large events is progress."""


def dead_letter_headers(position: Position, error: str, reason: str) -> list[tuple[str, str | bytes | None]]:
    """Where the event was and why it was refused: never its content."""
    return [
        ("carecloud.topic", position.topic.encode()),
        ("carecloud.partition", str(position.partition).encode()),
        ("carecloud.offset", str(position.offset).encode()),
        ("carecloud.error", error.encode()),
        ("carecloud.reason", reason.encode()),
    ]


class Emit(Protocol):
    """Where a batch's changed rows go: the state topic in the service, a list offline."""

    def __call__(self, key: bytes, value: bytes | None) -> None: ...

    def finish(self) -> None: ...


class _Emitter:
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
            return apply_change(self, change.change())
        raw = self.store.get(change.key)
        if raw is not None:
            stored = peek(raw)
            if stored is None:
                return apply_change(self, change.change())
            if change.version <= stored:
                return Outcome.STALE
        self._check_size(change.key, change.row)
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
            changes[entity] += int(complete) - int(self.live_before.get((entity, entity_id), False))
        return changes

    def put(self, entity: str, entity_id: str, row: StateRow) -> None:
        """Encode first, then record: an event whose row cannot be encoded or is too large
        leaves the view as it was (the per-message barrier dead-letters it)."""
        key = state_key(entity, entity_id)
        value = encode_row(row, deleted_at_ms=self.stamp_ms)
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


class IngestService:
    """Consumes the source topics and maintains the state; one per process."""

    def __init__(
        self,
        settings: Settings,
        spec: MappingSpec,
        *,
        metrics: Metrics | None = None,
        heartbeat: Heartbeat | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.settings = settings
        self.watchdog = watchdog if watchdog is not None else Watchdog()
        self.metrics = metrics if metrics is not None else METRICS
        self.heartbeat = heartbeat if heartbeat is not None else Heartbeat()
        self.ingest = settings.ingest
        self.mapper = Mapper(spec)
        self.source_topics = sorted(spec.topics)
        if not self.source_topics:
            raise ConfigError("the mapping lists no topics to consume")
        self.decoders: dict[str, Decoder] = {}
        for name in self.source_topics:
            topic = spec.topic(name)
            options: dict[str, Any] = {"unavailable_placeholder": topic.unavailable_placeholder}
            if topic.format != "debezium-json" and self.ingest.schema_registry_url:
                options["schema_registry_url"] = self.ingest.schema_registry_url
            self.decoders[name] = make_decoder(topic.format, **options)
        self.fast = self._fast_paths(spec)
        """The compiled decode-and-map path per Debezium JSON topic (``_fast_paths``)."""
        self.stores: dict[int, PartitionStore] = {}
        self.purge = MarkerPurge(self.ingest.marker_purge_after_s)
        self._restore_stall_s = self.ingest.transaction_timeout_ms / 1000 + 60
        """A restore waits out an open transaction (up to the transaction timeout), not longer."""
        self.counts: Counter[str] = Counter()
        self.report = IngestReport(self.metrics)
        self.ready = threading.Event()
        self._delivered: dict[int, int] = {}
        self._fatal: KafkaError | None = None
        self._callback_error: Exception | None = None
        self._store_failure: StoreError | None = None
        """A store that could not be flushed on close or revoke: ``close`` raises it."""
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._record_limit = 1_000_000  # librdkafka's default; start() reads the topics' own
        self._rebalances = 0
        """Assignments and revocations so far: a batch taken across one is cut there."""
        self._batch_budget_s = self.ingest.transaction_timeout_ms / 2000
        """A batch stops taking messages after this long and commits what it has handled, well
        before the coordinator would abort its transaction (a run of slow messages)."""

    def _fast_paths(self, spec: MappingSpec) -> dict[str, FastPath]:
        """One ``FastPath`` per Debezium JSON topic, as ``ingest.fast_path`` says."""
        json_topics = [t for t in self.source_topics if spec.topic(t).format == "debezium-json"]
        if self.ingest.fast_path == "off" or not json_topics:
            return {}
        missing = fastpath_available()
        if missing is not None:
            if self.ingest.fast_path == "on":
                raise ConfigError(f"CARECLOUD_INGEST_FAST_PATH=on, but {missing}")
            log.warning("compiled fast path unavailable; decoding in Python", extra={"reason": missing})
            return {}
        fast = {topic: FastPath(self.mapper, topic) for topic in json_topics}
        for topic, path in fast.items():
            log.info(
                "compiled fast path on; these tables still decode in Python",
                extra={"topic": topic, "tables": ",".join(path.python_only) or "none"},
            )
        return fast

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Check topics, join the group and fence any previous incarnation."""
        base = self.settings.kafka.client_config()
        base["error_cb"] = self._on_error
        admin = AdminClient(base)
        self._await_cluster(admin)
        partitions = source_partitions(admin, self.source_topics)
        ensure_topics(
            admin,
            state_topic=self.ingest.state_topic,
            dlq_topic=self.ingest.dlq_topic,
            partitions=partitions,
            dlq_retention_ms=self.ingest.dlq_retention_ms,
        )
        # The producer refuses what the topics would refuse, and the loop refuses it before the
        # producer does: a state row or dead letter over the limit is a dead letter by
        # reference, never a produce() error that aborts the batch on every restart.
        self._record_limit = record_limit(admin, [self.ingest.state_topic, self.ingest.dlq_topic])
        self._producer = Producer(
            {
                **base,
                "transactional.id": self.ingest.transactional_id,
                "linger.ms": 5,
                "transaction.timeout.ms": self.ingest.transaction_timeout_ms,
                "message.max.bytes": self._record_limit,
                "batch.size": min(1_000_000, self._record_limit - _RECORD_OVERHEAD),
            }
        )
        with self._guard("init_transactions", _CALL_TIMEOUT_S):
            self._producer.init_transactions(_CALL_TIMEOUT_S)
        self._check_fatal()
        self._consumer = Consumer(
            {
                **base,
                "group.id": self.ingest.group_id,
                # Static membership: a restarted replica (same StatefulSet pod name) gets its
                # partitions back at once instead of after the session timeout.
                "group.instance.id": self.ingest.transactional_id,
                "session.timeout.ms": self.ingest.session_timeout_ms,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "fetch.queue.backoff.ms": 10,
                # What librdkafka prefetches is memory too: half a batch's byte budget at most.
                "queued.max.messages.kbytes": max(1024, min(65_536, self.ingest.batch_max_bytes // 2048)),
            }
        )
        self._consumer.subscribe(
            self.source_topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )

    def _await_cluster(self, admin: AdminClient) -> None:
        """Reach the cluster in short steps, so a refused login fails start-up in seconds.

        librdkafka reports a wrong password only through ``error_cb`` (``_AUTHENTICATION``);
        one long metadata call would hide it behind a generic transport failure.
        """
        deadline = time.monotonic() + _CALL_TIMEOUT_S
        while True:
            try:
                admin.list_topics(timeout=1.0)
                return
            except KafkaException:
                admin.poll(0)  # serves error_cb
                self._check_fatal()
                if time.monotonic() >= deadline:
                    raise TransientError("cannot reach the Kafka cluster (CARECLOUD_KAFKA_*)") from None

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in flight completes or aborts whole."""
        backoff = _BACKOFF_MIN_S
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                try:
                    self.run_batch()
                    backoff = _BACKOFF_MIN_S
                except TransientError as exc:
                    # Not bad input: keep offsets where they are and try again later.
                    self.counts["transient_errors"] += 1
                    log.warning(
                        "transient failure; retrying",
                        extra={"error": type(exc).__name__, "retry_in_s": backoff},
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
        except BaseException:
            self.close(quiet=True)  # the error that ended the loop is the one to report
            raise
        self.close()

    def close(self, *, quiet: bool = False) -> None:
        """Release the clients and the stores. A store that cannot be flushed (a full volume)
        is raised as ``StoreError`` after everything is closed, unless ``quiet`` (another error
        is already on its way out): a graceful stop must not hide that the volume is full."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        for store in self.stores.values():
            self._close_store(store)
        self.stores.clear()
        if self._producer is not None:
            try:
                self._producer.flush(10)
            except KafkaException as exc:
                # A fenced or otherwise failed producer has nothing left to send; raising here
                # would replace the error that ended the loop with this one.
                log.warning("producer not flushed on close", extra={"kafka_error": exc.args[0].name()})
            except SystemError as exc:
                # Seen under load after _FENCED: confluent-kafka's flush of a producer in a fatal
                # state raises SystemError; the process is leaving with the fencing error already.
                log.warning("producer not flushed on close", extra={"error": type(exc).__name__})
            self._producer = None
        if self._store_failure is not None and not quiet:
            raise self._store_failure

    def _close_store(self, store: PartitionStore) -> None:
        """Close one store; a failed flush (a full volume) stops the process, but only after
        every other handle is released. Nothing committed is lost: the rows are in the state
        topic, and the store catches up from it on the next start."""
        try:
            store.close()
        except StoreError as exc:
            log.error("local store not flushed", extra={"error": type(exc).__name__})
            if self._store_failure is None:
                self._store_failure = exc
            if self._callback_error is None:  # revoked mid-run: the next batch raises it
                self._callback_error = exc

    # -- the transaction -------------------------------------------------------------------

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
        if not msgs:
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
        row_limit = self._record_limit - _RECORD_OVERHEAD
        over_budget = time.monotonic() + self._batch_budget_s
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
                view = views.get(partition)
                if view is None:
                    view = views[partition] = BatchView(
                        self._store(partition), self._emitter(producer, partition), now_ms, row_limit
                    )
                self._handle(msg, Position(topic, partition, offset), view, producer)
            for partition, view in views.items():
                for key in self.purge.due(partition, view.store):
                    if key not in view.encoded:  # a row this batch writes wins over the purge
                        view.encoded[key] = None
                        view.emit(key, None)
                        purged[partition] = purged.get(partition, 0) + 1
                view.emit.finish()
            offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            committed = self._commit(producer, consumer, offsets)
        except (TransientError, StoreCorruptedError) as exc:
            # Nothing of this batch may become visible: abort, rewind, and let the caller back
            # off (registry or broker away) or rebuild the corrupt store and go again.
            self._abort(producer, 2 * _CALL_TIMEOUT_S)
            self._rewind(consumer, first)
            if isinstance(exc, StoreCorruptedError):
                self._rebuild({p for _, p in first})
                return 0
            raise
        if not committed:
            self._rewind(consumer, first)
            return 0
        for partition, view in views.items():
            if view.encoded:
                view.store.write(view.encoded, self._delivered[partition] + 1)
        for partition, count in purged.items():
            self.counts["purged_markers"] += count
            log.info("delete markers purged", extra={"partition": partition, "count": count})
        self.counts["events"] += len(msgs)
        self.report.committed(consumer, {p: view.live_changes() for p, view in views.items()})
        return len(msgs)

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

    def _emitter(self, producer: Producer, partition: int) -> _Emitter:
        return _Emitter(producer, self.ingest.state_topic, partition, self._on_delivery)

    def _rewind(self, consumer: Consumer, first: dict[tuple[str, int], int]) -> None:
        """Seek back to the batch's first offsets: the aborted batch is consumed again."""
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        self.counts["aborted_batches"] += 1
        self.metrics.aborted_transactions.inc()

    def _rebuild(self, partitions: set[int]) -> None:
        """Start the held stores of ``partitions`` again (a batch met damage in one of them)."""
        damaged = {p: self.stores.pop(p) for p in sorted(partitions) if p in self.stores}
        self.stores.update(self._started_again(damaged))

    def _started_again(
        self, damaged: dict[int, PartitionStore], progress: Callable[[int, int, int], None] | None = None
    ) -> dict[int, PartitionStore]:
        """Damaged stores deleted and restored from the beginning of the state topic."""
        fresh: dict[int, PartitionStore] = {}
        for p, store in damaged.items():
            log.warning("local store corrupt; rebuilding from the state topic", extra={"partition": p})
            store.destroy()
            fresh[p] = PartitionStore(store.path)
        self.counts["restored_records"] += restore_partitions(
            self.settings.kafka.client_config(),
            self.ingest.state_topic,
            fresh,
            progress,
            stall_timeout_s=self._restore_stall_s,
        )
        return fresh

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
        per-message barrier surrounds decode -> map -> merge (``connector.state.barrier``):
        Kafka and I/O errors pass through to the loop, anything else is this message's.
        Offline tools (the fuzzer, ``bench/poison.py``) call this with a view of their own."""
        refused = self._refused_size(key, value, raw_headers)
        if refused is not None:
            return refused
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
            quick = fast.map(key, value, headers, position)
        if fast is not None and quick is not None:
            self.counts["fast_path"] += 1
            self.report.fast_path()
            outcome = view.apply_fast(quick, fast.peek)
            entity, deleted = quick.entity, quick.deleted
        else:  # no fast path, or it declined: the Python path decides
            event = self.decoders[position.topic].decode(key, value, headers, position)
            if event is None:
                self.counts["tombstones"] += 1
                return
            change = self.mapper.map(event)
            outcome = apply_change(view, change)
            entity, deleted = change.entity, change.deleted
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
        if len(key or b"") + len(value or b"") > self._record_limit - _RECORD_OVERHEAD:
            by_reference = True  # the bytes would not fit the dead-letter topic: their position does
        producer.produce(
            self.ingest.dlq_topic,
            None if by_reference else value,
            None if by_reference else key,
            headers=dead_letter_headers(position, error, reason),
        )

    def _commit(self, producer: Producer, consumer: Consumer, offsets: list[TopicPartition]) -> bool:
        """Steps 4-5 with every outcome handled; False means the batch was aborted.

        Retriable failures are retried a bounded number of times: a broker that stays away
        longer than that ends the process (non-zero exit), and the restarted process fences
        this transaction at ``init_transactions`` instead of waiting on it forever. Each call
        also runs under the watchdog, because librdkafka does not always honour its own
        timeout here (``connector.state.watchdog``): a call that overruns it ends the process
        the same way, only harder.
        """
        sent = False
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                if not sent:
                    metadata = consumer.consumer_group_metadata()
                    with self._guard("send_offsets_to_transaction", _CALL_TIMEOUT_S):
                        producer.send_offsets_to_transaction(offsets, metadata, _CALL_TIMEOUT_S)
                    sent = True
                with self._guard("commit_transaction", _CALL_TIMEOUT_S):
                    producer.commit_transaction(_CALL_TIMEOUT_S)
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
                    self._abort(producer, _CALL_TIMEOUT_S)
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

    # -- partitions and stores -------------------------------------------------------------

    def _store(self, partition: int) -> PartitionStore:
        store = self.stores.get(partition)
        if store is None:
            raise TerminalError(f"partition {partition} consumed without its local store (not assigned)")
        return store

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        # An exception escaping a librdkafka callback surfaces as an opaque SystemError from
        # consume(); keep it and re-raise it from run_batch with its real type and message.
        try:
            self._assign(partitions)
        except Exception as exc:
            self._callback_error = exc

    def _assign(self, partitions: list[TopicPartition]) -> None:
        self.ready.clear()
        base = self.settings.kafka.client_config()
        arriving = {
            p: PartitionStore(self.ingest.state_dir / f"p{p}")
            for p in sorted({tp.partition for tp in partitions})
            if p not in self.stores
        }
        for p in arriving:
            self.report.assigning(p)

        def progress(partition: int, done: int, remaining: int) -> None:
            self.metrics.restore_progress(partition, done, remaining)
            self.heartbeat.beat()  # a long restore is progress, not a stall

        self.counts["restored_records"] += restore_partitions(
            base, self.ingest.state_topic, arriving, progress, stall_timeout_s=self._restore_stall_s
        )
        for p, store in arriving.items():
            try:
                self.report.assigned(p, store)
            except StoreCorruptedError:
                # Counting the live entities reads every row, so damage anywhere in the store
                # shows here, inside the assignment: start the store again now. Raising would
                # fail the assignment, and every restart would meet the same damage.
                store = self._started_again({p: store}, progress)[p]
                self.report.assigned(p, store)
            self.stores[p] = store
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        self.report.revoked(partitions)
        for p in {tp.partition for tp in partitions}:
            self.purge.forget(p)
            store = self.stores.pop(p, None)
            if store is not None:
                self._close_store(store)

    # -- callbacks and helpers -------------------------------------------------------------

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
        err = msg.error()
        if err is None:
            return False
        if err.code() == KafkaError._PARTITION_EOF:
            return True
        raise KafkaException(err)

    def _clients(self) -> tuple[Consumer, Producer]:
        if self._consumer is None or self._producer is None:
            raise TerminalError("ingest service not started")
        return self._consumer, self._producer


def _where(position: Position) -> dict[str, Any]:
    """A message's position as log fields: never its content."""
    return {"topic": position.topic, "partition": position.partition, "offset": position.offset}


def _headers(raw: Any) -> list[tuple[str, bytes | None]] | None:
    """librdkafka hands headers as (str, bytes) pairs; normalise the type for the decoders."""
    if not raw:
        return None
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]
