"""What the ingest loop tells Prometheus (``IngestService.report``).

Counts are reported per committed batch, never per event and never for an aborted batch, so
a batch consumed twice is counted once. Every series the alerts and the dashboard query exists
from the first scrape of a replica that owns partitions: the restore series from assignment,
the lag from the broker's offsets when the consumer has not fetched yet (a caught-up restarted
replica), and the live entity count of this replica's stores from a scan at assignment plus
each batch's changes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connector.model import ENTITY_NAMES
from connector.ops.metrics import Metrics
from connector.state.codec import is_complete
from connector.state.store import PartitionStore

__all__ = ["IngestReport"]

_LAG_QUERY_EVERY_S = 10.0
"""How often to ask the broker for a partition's offsets when the consumer has none cached."""


class IngestReport:
    """The ingest loop's metrics: batch counts, lag, restore progress and live entities."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.batch: Counter[tuple[str, str, str]] = Counter()
        """(kind, entity or reason, operation) -> events of the batch in flight."""
        self._live: dict[int, Counter[str]] = {}
        self._queried: dict[tuple[str, int], float] = {}

    def event(self, entity: str, deleted: bool, stale: bool) -> None:
        if stale:
            self.batch[("stale", entity, "")] += 1
        self.batch[("event", entity, "delete" if deleted else "upsert")] += 1

    def fast_path(self) -> None:
        self.batch[("fast", "", "")] += 1

    def dead_letter(self, reason: str) -> None:
        self.batch[("dlq", reason, "")] += 1

    def committed(self, consumer: Consumer, live_changes: dict[int, Counter[str]]) -> None:
        """Report a committed batch: its counts, the live-entity changes per partition, the lag."""
        for (kind, name, operation), n in self.batch.items():
            if kind == "event":
                self.metrics.count_events(name, operation, n)
            elif kind == "stale":
                self.metrics.count_stale(name, n)
            elif kind == "fast":
                self.metrics.fast_path_events.inc(n)
            else:
                self.metrics.count_dead_letters(name, n)
        self.batch.clear()
        for partition, changes in live_changes.items():
            self._live.setdefault(partition, Counter()).update(changes)
        if live_changes:
            self._report_live()
        self.lag(consumer)

    def lag(self, consumer: Consumer) -> None:
        """Lag per assigned partition: the cached watermark and position when the consumer has
        them (no broker call), else the committed offset and a watermark query, at most every
        ``_LAG_QUERY_EVERY_S`` per partition.

        The committed offsets of every partition lacking a position are asked in one request: a
        partition has none until a message of it is consumed, so an idle source (most of a
        mapping's topic partitions, most of the time) would otherwise cost a blocking round
        trip per partition, and those stalled the batch loop for about 0.5 s each (18 idle
        partitions held it about 9 s in every 10). The watermark is asked only when the
        consumer has not fetched the partition yet.
        """
        assigned = consumer.assignment()
        if not assigned:
            return
        now = time.monotonic()
        known: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in consumer.position(assigned):
            key = (tp.topic, tp.partition)
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                self.metrics.set_lag(tp.topic, tp.partition, high - tp.offset)
            elif now - self._queried.get(key, -_LAG_QUERY_EVERY_S) >= _LAG_QUERY_EVERY_S:
                self._queried[key] = now
                known[key] = (tp.offset, high)
        if not known:
            return
        lacking = [TopicPartition(t, p) for (t, p), (position, _) in known.items() if position < 0]
        committed: dict[tuple[str, int], int] = {}
        if lacking:
            try:
                committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(lacking, 2.0)}
            except KafkaException:
                return
        for (topic, partition), (position, high) in known.items():
            if high < 0:
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 2.0, False)
                except KafkaException:
                    continue
            if position < 0:
                position = max(committed.get((topic, partition), 0), 0)  # none committed: all behind
            if high >= 0:
                self.metrics.set_lag(topic, partition, high - position)

    def assigning(self, partition: int) -> None:
        """A partition arrives: its restore series exist at once, at zero."""
        self.metrics.restore_progress(partition, 0, 0)

    def assigned(self, partition: int, store: PartitionStore) -> None:
        """After the restore: count the store's live entities (once; batches keep it current)."""
        counts: Counter[str] = Counter()
        for key, value in store.items():
            if is_complete(value):
                counts[key[: key.index(b"/")].decode()] += 1
        self._live[partition] = counts
        self._report_live()

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        gone = list(partitions)
        for topic in {tp.topic for tp in gone}:
            self.metrics.forget_partitions(topic, [tp.partition for tp in gone if tp.topic == topic])
        for tp in gone:
            self._live.pop(tp.partition, None)
        self._report_live()

    def _report_live(self) -> None:
        for entity in ENTITY_NAMES:
            self.metrics.set_state_entities(entity, sum(c[entity] for c in self._live.values()))
