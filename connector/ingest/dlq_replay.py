"""Dead letters replayed to their original topics after a fix (``dlq replay``).

Replaying sends a dead letter's original key and value, with its headers minus the
``carecloud.*`` ones, back to its original topic AND partition (the
``carecloud.topic``/``carecloud.partition`` headers): source partition p feeds state partition
p, so a replay into another partition could split an entity's rows across two state
partitions. Ingest then takes it through decode -> map -> merge again, now with the fixed
mapping.

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
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connector.errors import TransientError
from connector.ingest.dead_letter import DeadLetter, replay_headers
from connector.source import Position

__all__ = ["ReplayResult", "Verdict", "replay", "verdict"]


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
