"""Dead letters read back from the dead-letter topic, filtered (``dlq list``, and ``dlq replay``'s input).

Only committed dead letters are read (``read_committed``): a dead letter of an aborted batch
was never final (its batch is consumed again). The read stops at the topic's end when it
started (its last stable offsets), so a listing ends even while ingest goes on writing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connector.errors import TransientError
from connector.ingest.dead_letter import DeadLetter, from_message
from connector.state.topics import last_stable_offsets

__all__ = ["DlqFilter", "read_dead_letters"]

_STALL_S = 60.0


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which dead letters a ``dlq`` command acts on."""

    since: int | None = None
    """First DLQ offset (in every DLQ partition; the connector creates the topic with one)."""
    from_time: dt.datetime | None = None
    """Dead-lettered at or after this aware instant."""
    reasons: frozenset[str] = frozenset()
    """Only these reasons; empty means all."""
    limit: int | None = None
    """At most this many matching dead letters, oldest first."""

    def __post_init__(self) -> None:
        if self.from_time is not None and self.from_time.utcoffset() is None:
            raise ValueError("from_time must be timezone-aware")

    def matches(self, letter: DeadLetter) -> bool:
        if self.since is not None and letter.dlq_offset < self.since:
            return False
        if self.from_time is not None and (letter.timestamp is None or letter.timestamp < self.from_time):
            return False
        return not self.reasons or letter.reason in self.reasons


def read_dead_letters(base: dict[str, Any], topic: str, flt: DlqFilter) -> Iterator[DeadLetter]:
    """Committed dead letters matching ``flt``, up to the topic's end when the read started."""
    conf = {k: v for k, v in base.items() if k != "error_cb"}
    ends = last_stable_offsets(conf, topic)  # only decided transactions
    consumer = Consumer(
        {
            **conf,
            "group.id": "carecloud-dlq-reader",  # assign() only: never joins, never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.queue.backoff.ms": 10,
        }
    )
    try:
        starts = _start_offsets(consumer, topic, ends, flt)
        pending = {p for p, start in starts.items() if start < ends[p]}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
        yielded = 0
        last_progress = time.monotonic()
        while pending:
            if flt.limit is not None and yielded >= flt.limit:
                return
            if time.monotonic() - last_progress > _STALL_S:
                raise TransientError(f"dead-letter topic {topic}: no progress for {_STALL_S:.0f} s")
            for msg in consumer.consume(500, 0.5):
                last_progress = time.monotonic()
                err = msg.error()
                p = msg.partition() or 0
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    if (msg.offset() or 0) >= ends[p]:
                        pending.discard(p)
                    continue
                offset = msg.offset() or 0
                if offset >= ends[p] or p not in pending:
                    pending.discard(p)
                    continue
                if offset + 1 >= ends[p]:
                    pending.discard(p)
                letter = _letter(msg)
                if flt.matches(letter) and (flt.limit is None or yielded < flt.limit):
                    yielded += 1
                    yield letter
    finally:
        consumer.close()


def _letter(msg: Message) -> DeadLetter:
    _, ts = msg.timestamp()
    raw = msg.headers()
    pairs = list(raw.items()) if isinstance(raw, dict) else raw
    return from_message(msg.partition() or 0, msg.offset() or 0, ts, msg.key(), msg.value(), pairs)


def _start_offsets(consumer: Consumer, topic: str, ends: dict[int, int], flt: DlqFilter) -> dict[int, int]:
    if flt.from_time is not None:
        ms = int(flt.from_time.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in ends], 30)
        return {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found}
    low = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[0] for p in ends}
    since = flt.since or 0
    return {p: max(since, low[p]) for p in ends}
