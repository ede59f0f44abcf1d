"""Reading what the ingest left in Kafka: the state topic's rows and a group's offsets."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from connector.state.codec import decode_row, split_key
from connector.state.resolve import StateRow
from connector.state.topics import high_watermarks
from tests.kafka_helpers import KafkaTestCluster

__all__ = ["committed", "live_rows", "read_state"]


def committed(kafka: KafkaTestCluster, group: str, topic: str, partitions: int = 1) -> int:
    """Sum of the group's committed offsets; -1 while a transaction's offsets are pending."""
    consumer = kafka.consumer(group, {"enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)
    except KafkaException:
        return -1
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in parts)


def read_state(kafka: KafkaTestCluster, topic: str, partitions: int = 1) -> dict[tuple[str, str], StateRow]:
    """The latest committed row per key, read up to the high watermark of every partition."""
    rows: dict[tuple[str, str], StateRow] = {}
    for msg in state_records(kafka, topic, partitions):
        if (msg.key() or b"").startswith(b"~"):
            continue  # the connector's own records (ledger, carries, positions): not entities
        entity, entity_id = split_key(msg.key())
        rows[(entity, entity_id)] = decode_row(entity, msg.value())
    return rows


def state_records(kafka: KafkaTestCluster, topic: str, partitions: int = 1) -> list[Message]:
    """Every committed record, read up to the high watermark of every partition.

    Waiting for the high watermark (not the first end-of-partition) waits out a transaction
    a killed replica left open, which holds read-committed readers back until it times out.
    A partition is also done when the end-of-partition event reports the high watermark: one
    that is empty, or holds only aborted records and markers, delivers no message, so its
    position never moves (that hung a SIGTERM test whose aborted batch was alone in a partition).
    """
    consumer = kafka.consumer(None, {"isolation.level": "read_committed", "enable.partition.eof": True})
    ends = high_watermarks(kafka.config(), topic, range(partitions))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[Message] = []
    reached: dict[int, int] = {}
    deadline = time.monotonic() + 90
    try:
        while True:
            positions = consumer.position([TopicPartition(topic, p) for p in range(partitions)])
            if all(max(tp.offset, reached.get(tp.partition, -1)) >= ends[tp.partition] for tp in positions):
                return records
            assert time.monotonic() < deadline, "state topic read timed out"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                records.append(msg)
            elif error.code() == KafkaError._PARTITION_EOF:
                reached[msg.partition()] = msg.offset()
    finally:
        consumer.close()


def live_rows(rows: dict[tuple[str, str], StateRow]) -> list[tuple[str, str, dict[str, Any]]]:
    """Live, complete rows in the replay's shape, for comparison with ``ReplayResult.live``."""
    return sorted((e, i, r.values) for (e, i), r in rows.items() if r.complete)
