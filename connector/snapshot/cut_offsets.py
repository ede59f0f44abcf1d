"""The cut: one end offset per state partition, and a topic read from its start up to it.

A cut is taken as the last stable offset (read committed) of every partition at one moment, so
every transaction is either wholly in or wholly out; reading stops at the cut however much
ingest has written since. Both cut readers (``cut.StateReader`` and
``compiled_cut.CompiledStateReader``) read the state topic through ``consume_to_cut``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from connector.errors import TransientError
from connector.state.topics import last_stable_offsets

__all__ = ["BATCH", "Cut", "consume_to_cut", "take_cut"]

BATCH = 10_000
"""Messages per ``consume()`` by default."""
STALL_TIMEOUT_S = 60.0
"""How long a cut's read may go without moving before it fails (``consume_to_cut``): far longer
than a leader's failover (seconds), far shorter than a night."""


@dataclass(frozen=True, slots=True)
class Cut:
    """One exclusive end offset per state partition; recorded in the snapshot manifest."""

    topic: str
    end_offsets: dict[int, int]
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
            "taken_at": self.taken_at.isoformat(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Cut:
        """The cut a manifest or a date's run record holds (the inverse of ``as_json``)."""
        ends = {int(p): int(o) for p, o in raw["end_offsets"].items()}
        return cls(raw["topic"], ends, datetime.fromisoformat(raw["taken_at"]))


def take_cut(base: dict[str, Any], topic: str) -> Cut:
    """The last stable offset of every partition of the state topic, now."""
    return Cut(topic, last_stable_offsets(base, topic))


def consume_to_cut(
    base: dict[str, Any],
    cut: Cut,
    absorb: Callable[[list[Message], dict[int, int]], list[Message]],
    after_batch: Callable[[], None] = lambda: None,
    batch: int = BATCH,
    stall_timeout_s: float | None = None,
) -> None:
    """Read every partition of the cut's topic from its start up to the cut, batch by batch.

    ``absorb(messages, ends)`` takes a batch's records that lie before the cut (``ends``: the
    exclusive end of each partition still being read) and returns the messages carrying an
    error; a partition ends at its end offset or at the end-of-partition event past it (the
    transaction markers at the end of a range are not records). ``batch``: messages per
    ``consume()``; batches of about a thousand keep the messages in the CPU's caches and
    consume at twice the rate of ten thousand (docs/decisions/0013).

    A read that moves no partition for ``stall_timeout_s`` (``STALL_TIMEOUT_S`` when None, read
    at the call so a test can shorten it) raises a ``TransientError``: with
    every replica of a partition unreachable librdkafka waits for a leader without reporting
    an error, and ``after_batch`` (which renews the run's lease) would keep a run that cannot
    finish alive all night (issue 21: every broker killed after the cut hung the run). A
    leader's failover or a rolling restart stalls a read for seconds, and the run goes on.
    """
    pending = {p: end for p, end in cut.end_offsets.items() if end > 0}
    if not pending:
        return
    consumer = Consumer(
        {
            **base,
            "group.id": f"carecloud-snapshot-{cut.topic}",  # assign() only; never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.queue.backoff.ms": 10,
            "queued.max.messages.kbytes": 16384,  # prefetch bounded to 16 MiB, not librdkafka's 64
        }
    )
    try:
        consumer.assign([TopicPartition(cut.topic, p, 0) for p in pending])
        seen: list[tuple[int, int]] = []
        moved = time.monotonic()
        stall = STALL_TIMEOUT_S if stall_timeout_s is None else stall_timeout_s
        while pending:
            done: set[int] = set()
            for msg in absorb(consumer.consume(batch, 1.0), pending):
                err = msg.error()
                if err is None or err.code() != KafkaError._PARTITION_EOF:
                    raise TransientError(f"reading {cut.topic}: {err.name() if err else 'unknown error'}")
                p, offset = msg.partition() or 0, msg.offset() or 0
                if p in pending and offset >= pending[p]:  # control records end the range
                    done.add(p)
            after_batch()
            positions = consumer.position([TopicPartition(cut.topic, p) for p in list(pending)])
            now = [(tp.partition, tp.offset) for tp in positions]
            if now != seen or done:
                seen, moved = now, time.monotonic()
            elif time.monotonic() - moved > stall:
                raise TransientError(
                    f"reading {cut.topic}: no partition moved for {stall:.0f} s (its brokers unreachable?)"
                )
            for tp in positions:
                if tp.offset >= pending[tp.partition] or tp.partition in done:
                    consumer.pause([tp])
                    del pending[tp.partition]
    finally:
        consumer.close()
