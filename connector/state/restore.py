"""Catching a partition's local store up with the state topic (or rebuilding it).

Read with ``read_committed`` from the offset the store last reflected up to the end, in
write batches of the consumed size: the measured cost is dominated by one write per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from connector.errors import TransientError
from connector.state.store import PartitionStore
from connector.state.topics import high_watermarks

__all__ = ["restore_partition"]

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
    """Apply every committed state record from ``store.next_offset`` on; returns the count.

    A tombstone (a purged delete marker) deletes its key from the store. ``progress(restored,
    remaining)`` is called after each batch with the records just written and the offsets
    still to read: a restore can take minutes, and both the restore-progress metric and the
    liveness heartbeat must see it moving. A restore whose position has not moved for
    ``stall_timeout_s`` (the broker away, not a transaction being waited out: the caller sets
    it above the transaction timeout) raises ``TransientError`` instead of waiting forever
    while looking alive.
    """
    conf = {k: v for k, v in base.items() if k != "error_cb"}
    consumer = Consumer(
        {
            **conf,
            "group.id": f"carecloud-restore-{topic}-{partition}",  # never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 10,
        }
    )
    restored = 0
    tp = TopicPartition(topic, partition)
    try:
        # Read up to the high watermark taken now, not just to the first end-of-partition: a
        # transaction still open at this moment (a previous owner that already sent its
        # offsets before a rebalance) ends before we consume, and if it commits, its rows are
        # in the store that the consumed offsets assume.
        high = high_watermarks(base, topic, [partition])[partition]
        consumer.assign([TopicPartition(topic, partition, store.next_offset)])
        done = store.next_offset >= high
        last_position, moved_at = store.next_offset, time.monotonic()
        while not done:
            puts: dict[bytes, bytes | None] = {}
            next_offset = -1
            for msg in consumer.consume(_BATCH, 0.1):  # short: the end of a partition is an EOF event
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done = done or (msg.offset() or 0) >= high
                        continue
                    raise KafkaException(err)
                key = msg.key()
                if key is not None:
                    puts[key] = msg.value()
                next_offset = (msg.offset() or 0) + 1
            if next_offset >= 0:
                store.write(puts, next_offset)
                restored += len(puts)
            position = consumer.position([tp])[0].offset
            done = done or position >= high
            if position != last_position:
                last_position, moved_at = position, time.monotonic()
            elif stall_timeout_s is not None and time.monotonic() - moved_at > stall_timeout_s:
                raise TransientError(
                    f"restore of state partition {partition} made no progress in {stall_timeout_s:.0f} s"
                )
            if progress is not None:
                progress(len(puts), 0 if done else high - max(position, 0))
    finally:
        consumer.close()
    store.flush()
    return restored
