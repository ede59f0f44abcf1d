"""Catching partitions' local stores up with the state topic (or rebuilding them).

Read with ``read_committed`` from the offset each store last reflected up to the end, in
write batches of the consumed size: the measured cost is dominated by one write per batch.
All partitions being restored are read by one consumer, so their fetches overlap and the
fixed costs (the consumer, the end-of-partition round trips) are paid once: a single
partition is read at about a third of what the broker serves three (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from rocksdict import WriteBatch

from connector.errors import TransientError
from connector.state.store import PartitionStore
from connector.state.topics import high_watermarks

__all__ = ["restore_partition", "restore_partitions"]

_BATCH = 10_000


def restore_partition(
    base: dict[str, Any],
    topic: str,
    partition: int,
    store: PartitionStore,
    progress: Callable[[int, int], None] | None = None,
    *,
    stall_timeout_s: float | None = None,
) -> int:
    """``restore_partitions`` for one partition; ``progress(restored, remaining)``."""
    report = None if progress is None else (lambda p, done, remaining: progress(done, remaining))
    return restore_partitions(base, topic, {partition: store}, report, stall_timeout_s=stall_timeout_s)


def restore_partitions(
    base: dict[str, Any],
    topic: str,
    stores: Mapping[int, PartitionStore],
    progress: Callable[[int, int, int], None] | None = None,
    *,
    stall_timeout_s: float | None = None,
) -> int:
    """Apply every committed state record from each ``store.next_offset`` on; returns the count.

    A tombstone (a purged delete marker) deletes its key from the store. ``progress(partition,
    restored, remaining)`` is called after each batch for each partition still being read, with
    the records just written (0 while waiting) and the offsets still to read: a restore can
    take minutes, and both the restore-progress metric and the liveness heartbeat must see it
    moving. A restore whose
    position has not moved for ``stall_timeout_s`` (the broker away, not a transaction being
    waited out: the caller sets it above the transaction timeout) raises ``TransientError``
    instead of waiting forever while looking alive.
    """
    if not stores:
        return 0
    conf = {k: v for k, v in base.items() if k != "error_cb"}
    # Read up to the high watermarks taken now, not just to the first end-of-partition: a
    # transaction still open at this moment (a previous owner that already sent its offsets
    # before a rebalance) ends before we consume, and if it commits, its rows are in the store
    # that the consumed offsets assume.
    high = high_watermarks(base, topic, stores)
    pending = {p: high[p] for p, store in stores.items() if store.next_offset < high[p]}
    if not pending:
        return 0
    consumer = Consumer(
        {
            **conf,
            "group.id": f"carecloud-restore-{topic}",  # assign() only; never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 10,
            # An empty fetch at the end (the last transaction's marker still to skip) would
            # otherwise be held by the broker for 500 ms.
            "fetch.wait.max.ms": 10,
        }
    )
    restored = 0
    try:
        consumer.assign([TopicPartition(topic, p, stores[p].next_offset) for p in pending])
        last_position = {p: stores[p].next_offset for p in pending}
        moved_at = time.monotonic()
        while pending:
            batches: dict[int, WriteBatch] = {}
            last: dict[int, Message] = {}  # the last record of each partition in this batch
            ended: set[int] = set()
            p, batch = -1, WriteBatch(raw_mode=True)
            for msg in consumer.consume(_BATCH, 0.1):  # short: the end of a partition is an EOF event
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    q = msg.partition() or 0
                    if q in pending and (msg.offset() or 0) >= pending[q]:
                        ended.add(q)
                    continue
                if msg.partition() != p:  # a fetch hands records of one partition in runs
                    p = msg.partition() or 0
                    batch = batches.setdefault(p, WriteBatch(raw_mode=True))
                last[p] = msg
                key, value = msg.key(), msg.value()
                if key is None:
                    continue
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            written = {q: len(b) for q, b in batches.items()}
            for q, msg in last.items():
                stores[q].commit(batches[q], (msg.offset() or 0) + 1)
                restored += written[q]
            positions = consumer.position([TopicPartition(topic, p) for p in pending])
            for tp in positions:
                p = tp.partition
                if tp.offset >= pending[p]:
                    ended.add(p)
                if tp.offset != last_position[p]:
                    last_position[p], moved_at = tp.offset, time.monotonic()
                if progress is not None:
                    progress(p, written.get(p, 0), 0 if p in ended else pending[p] - max(tp.offset, 0))
            for p in ended:
                pending.pop(p, None)
            if pending and stall_timeout_s is not None and time.monotonic() - moved_at > stall_timeout_s:
                stalled = ", ".join(map(str, sorted(pending)))
                raise TransientError(
                    f"restore of state partition(s) {stalled} made no progress in {stall_timeout_s:.0f} s"
                )
    finally:
        consumer.close()
    for store in stores.values():
        store.flush()
    return restored
