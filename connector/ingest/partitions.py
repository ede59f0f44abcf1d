"""The ingest's partitions and their local stores: assignment, revocation, restore, rebuild.

A part of ``IngestService`` (``connector.ingest.service``), kept apart so each concern reads on
its own: the consumer's rebalance callbacks open a store per arriving partition and restore it
from the state topic (``connector.state.restore``) before the partition is read; a revoked
partition's store is closed; a store met damaged is deleted and restored from the beginning.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from connector.config import Settings
from connector.config.settings import IngestSettings
from connector.errors import TerminalError
from connector.ingest.generations import Generations
from connector.ingest.report import IngestReport
from connector.ops.health import Heartbeat
from connector.ops.metrics import Metrics
from connector.state.exceptions import StoreCorruptedError, StoreError
from connector.state.purge import MarkerPurge
from connector.state.restore import restore_partitions
from connector.state.store import PartitionStore

__all__ = ["Partitions"]

log = logging.getLogger(__name__)

_COMMITTED_TIMEOUT_S = 30.0
"""How long reading the assigned partitions' committed offsets (and generations) may take."""


class Partitions:
    """The partitions this replica owns and their stores (``IngestService`` sets the fields)."""

    settings: Settings
    ingest: IngestSettings
    metrics: Metrics
    heartbeat: Heartbeat
    report: IngestReport
    stores: dict[int, PartitionStore]
    purge: MarkerPurge
    generations: Generations
    counts: Counter[str]
    ready: threading.Event
    _restore_stall_s: float
    _rebalances: int
    _callback_error: Exception | None
    _store_failure: StoreError | None

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
            # Each partition's snapshot generation travels with its committed offset.
            self.generations.load(consumer.committed(partitions, _COMMITTED_TIMEOUT_S))
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
        self.generations.forget(partitions)
        for p in {tp.partition for tp in partitions}:
            self.purge.forget(p)
            store = self.stores.pop(p, None)
            if store is not None:
                self._close_store(store)

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
