"""The dead-letter topic: the headers ingest writes, and dead letters listed and replayed after a fix.

Ingest writes a dead letter as the original key and value with ``carecloud.*`` headers naming
the original position, the error class and the reason (``dead_letter_headers``, here); an
oversized message is dead-lettered *by reference*, position only, no bytes. Replaying sends a
dead letter's original key and value, with its headers minus the ``carecloud.*`` ones, back to
its original topic AND partition (the ``carecloud.topic``/``carecloud.partition`` headers):
source partition p feeds state partition p, so a replay into another partition could split an
entity's rows across two state partitions. Ingest then takes it through decode -> map -> merge
again, now with the fixed mapping.

A dead letter is produced only to one of the mapping's source topics (``verdict``): the
``carecloud.topic`` header is data read back from a topic, and a corrupted, hand-made or
foreign dead letter must not make the replay write PHI to any topic it names (issue 16). One
naming another topic is refused, counted and reported by its DLQ offset, never produced; the
report names the header, not its value.

Replaying twice, or replaying an event that is now stale, is harmless: the state merge orders
changes by the source's version key carried inside the event (PostgreSQL commit LSN and event
LSN, MySQL binlog position), never by arrival (docs/decisions/0005-version-key-and-merge.md).
A replayed event older than a change the state already holds (the row was updated or deleted
at the source since) is counted as stale and dropped; a deleted entity is never resurrected.
A second copy of the change the state holds has the same source version and wins only the
Kafka-offset tie-break, so it writes the same values again: the entity does not change. An
event that still fails is dead-lettered again under its new position; ``--since`` with the
offset the previous replay printed avoids replaying it again.

Only committed dead letters are read (``read_committed``): a dead letter of an aborted batch
was never final (its batch is consumed again).
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from connector.errors import TransientError
from connector.source import Position
from connector.state.topics import last_stable_offsets

__all__ = [
    "DeadLetter",
    "DlqFilter",
    "ReplayResult",
    "Verdict",
    "dead_letter_headers",
    "from_message",
    "read_dead_letters",
    "replay",
    "replay_headers",
    "verdict",
]

Headers = Sequence[tuple[str, str | bytes | None]]

_OWN = "carecloud."
BY_REFERENCE_REASONS = frozenset(
    {"oversized_record", "oversized_key", "oversized_headers", "state_row_too_large"}
)
"""Dead letters that carry only their position: their bytes would not fit, or were the problem."""
_STALL_S = 60.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: where it lies, where it came from, why; the bytes are kept out of ``repr``."""

    dlq_partition: int
    dlq_offset: int
    timestamp: dt.datetime | None
    """When it was dead-lettered (the DLQ record's timestamp)."""
    position: Position | None
    """The original position; None when the ``carecloud.*`` headers are missing or unreadable."""
    error: str
    reason: str
    key: bytes | None = field(default=None, repr=False)
    value: bytes | None = field(default=None, repr=False)
    headers: tuple[tuple[str, bytes | None], ...] = field(default=(), repr=False)
    """Every header of the dead letter, ``carecloud.*`` included."""

    @property
    def by_reference(self) -> bool:
        """No bytes were kept (oversized): it cannot be replayed, only re-published at the source."""
        return self.reason in BY_REFERENCE_REASONS or (self.key is None and self.value is None)

    def as_json(self) -> dict[str, Any]:
        """Positions, error and reason: never the key, value or header values."""
        p = self.position
        return {
            "dlq_partition": self.dlq_partition,
            "dlq_offset": self.dlq_offset,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "topic": p.topic if p else None,
            "partition": p.partition if p else None,
            "offset": p.offset if p else None,
            "error": self.error,
            "reason": self.reason,
            "by_reference": self.by_reference,
        }


def from_message(
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
) -> DeadLetter:
    """A dead letter from a DLQ record's parts (pure: the unit tests' entry point)."""
    pairs = tuple((name, v.encode() if isinstance(v, str) else v) for name, v in headers or ())
    own = {
        name[len(_OWN) :]: (v or b"").decode("utf-8", "replace") for name, v in pairs if name.startswith(_OWN)
    }
    position = None
    try:
        if own.get("topic"):
            position = Position(own["topic"], int(own["partition"]), int(own["offset"]))
    except (KeyError, ValueError):
        position = None
    when = (
        None
        if timestamp_ms is None or timestamp_ms < 0
        else dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    )
    return DeadLetter(
        partition,
        offset,
        when,
        position,
        own.get("error", "unknown"),
        own.get("reason", "unknown"),
        key,
        value,
        pairs,
    )


def dead_letter_headers(position: Position, error: str, reason: str) -> list[tuple[str, str | bytes | None]]:
    """Where the event was and why it was refused: never its content."""
    return [
        ("carecloud.topic", position.topic.encode()),
        ("carecloud.partition", str(position.partition).encode()),
        ("carecloud.offset", str(position.offset).encode()),
        ("carecloud.error", error.encode()),
        ("carecloud.reason", reason.encode()),
    ]


def replay_headers(headers: Headers) -> list[tuple[str, str | bytes | None]]:
    """The original headers: every one except the connector's own ``carecloud.*``."""
    return [(name, value) for name, value in headers if not name.startswith(_OWN)]


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


class Verdict(enum.Enum):
    """What a replay does with one dead letter."""

    REPLAY = "replay"
    """Produce it to its original topic and partition."""
    SKIP = "skipped"
    """No original position, or no bytes (by reference): re-publish it at the source instead."""
    REFUSE = "refused"
    """Its ``carecloud.topic`` header names a topic that is not one of the mapping's sources."""


def verdict(letter: DeadLetter, source_topics: Collection[str]) -> Verdict:
    """Replay, skip or refuse ``letter`` (pure: the rule the replay and its tests share).

    A position outside the source topics is refused before anything else is looked at, so
    even a dead letter with no bytes to send is reported as refused: its header is wrong.
    """
    position = letter.position
    if position is None:
        return Verdict.SKIP
    if position.topic not in source_topics:
        return Verdict.REFUSE
    if letter.by_reference:
        return Verdict.SKIP
    return Verdict.REPLAY


@dataclass
class ReplayResult:
    """Per reason: replayed, skipped (by reference, or no original position), refused, failed."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """``(reason, "replayed" | "would_replay" | "skipped" | "refused" | "duplicate" | "failed")``
    -> dead letters."""
    skipped: list[DeadLetter] = field(default_factory=list)
    refused: list[DeadLetter] = field(default_factory=list)
    """Their ``carecloud.topic`` is not a source topic; reported by DLQ offset, never by position."""
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    """With librdkafka's error name (no payload)."""
    replayed: list[DeadLetter] = field(default_factory=list)


def replay(
    base: dict[str, Any],
    letters: Iterable[DeadLetter],
    *,
    source_topics: Collection[str],
    dry_run: bool = False,
) -> ReplayResult:
    """Re-publish each replayable dead letter to its original topic and partition.

    ``source_topics`` are the mapping's topics: a dead letter naming any other is refused
    (``verdict``). The producer is idempotent (``enable.idempotence``, ``acks=all``), so its
    own retries never duplicate a record. The same original position seen twice in one run
    (the DLQ can hold it twice after a rewind of the ingest group) is replayed once.
    """
    result = ReplayResult()
    producer = None if dry_run else Producer({**_conf(base), "enable.idempotence": True, "acks": "all"})
    seen: set[Position] = set()
    for letter in letters:
        decided = verdict(letter, source_topics)
        if decided is Verdict.REFUSE:
            result.counts[(letter.reason, "refused")] += 1
            result.refused.append(letter)
            continue
        position = letter.position
        if decided is Verdict.SKIP or position is None:
            result.counts[(letter.reason, "skipped")] += 1
            result.skipped.append(letter)
            continue
        if position in seen:
            result.counts[(letter.reason, "duplicate")] += 1
            continue
        seen.add(position)
        if producer is None:
            result.counts[(letter.reason, "would_replay")] += 1
            result.replayed.append(letter)
            continue

        def delivered(err: KafkaError | None, _msg: Message, letter: DeadLetter = letter) -> None:
            if err is None:
                result.counts[(letter.reason, "replayed")] += 1
                result.replayed.append(letter)
            else:
                result.counts[(letter.reason, "failed")] += 1
                result.failed.append((letter, err.name()))

        try:
            _produce(producer, letter, position, delivered)
        except KafkaException as exc:  # e.g. the original partition no longer exists
            result.counts[(letter.reason, "failed")] += 1
            result.failed.append((letter, exc.args[0].name() if exc.args else "KafkaException"))
    if producer is not None and producer.flush(60) > 0:
        raise TransientError("replay: not every record was acknowledged within 60 s; run it again")
    return result


def _produce(
    producer: Producer, letter: DeadLetter, position: Position, on_delivery: Callable[..., None]
) -> None:
    while True:
        try:
            producer.produce(
                position.topic,
                letter.value,
                letter.key,
                partition=position.partition,
                headers=replay_headers(letter.headers),
                on_delivery=on_delivery,
            )
        except BufferError:  # the local queue is full: let deliveries drain, then try again
            producer.poll(0.5)
            continue
        producer.poll(0)
        return


def _conf(base: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != "error_cb"}
