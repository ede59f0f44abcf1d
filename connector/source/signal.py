"""Debezium's Kafka signal channel: an ``execute-snapshot`` signal asking for an incremental snapshot.

The source stage knows Debezium's wire formats, so the signal's shape lives here; which tables
may be asked for (those the mapping maps) is decided above, by ``connector.ingest.backfill``.

What Debezium (3.x, ``KafkaSignalChannel``) expects, and why each detail matters:

- the connector reads **partition 0** of ``signal.kafka.topic`` only (it assigns that one
  partition), so the signal is produced there explicitly, whatever the topic's partition count;
- the message **key is the connector's logical name**, its ``topic.prefix``, as a plain string:
  a signal whose key differs is logged and ignored, so a wrong prefix fails silently on
  Debezium's side; the command prints the key it used;
- the value is JSON ``{"id", "type": "execute-snapshot", "data": {"data-collections": [...],
  "type": "INCREMENTAL"}}``; ``id`` is optional for Debezium and names the request in its log;
- each data collection is a **regular expression** matched against the whole table identifier
  (``schema.table`` for PostgreSQL), so a table name is escaped: ``public\\.family`` matches
  that table only;
- an incremental snapshot still needs the ``source`` channel's signalling table
  (``signal.data.collection``) on most connectors (PostgreSQL included): Debezium writes its
  watermarks there to deduplicate the snapshot's reads against streamed changes.

No value of any row is ever in a signal, so printing one (``--dry-run``) is safe.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from connector.errors import TransientError
from connector.source.exceptions import SignalError

__all__ = ["SIGNAL_PARTITION", "SignalError", "SnapshotSignal", "send_signal"]

SIGNAL_PARTITION: Final = 0
"""The one partition of the signal topic Debezium's Kafka channel reads."""


def _collection(table: str) -> str:
    """``table`` as a regular expression that matches only itself (Debezium matches whole ids)."""
    return re.escape(table)


@dataclass(frozen=True, slots=True)
class SnapshotSignal:
    """One ``execute-snapshot`` request of an incremental snapshot of ``tables``."""

    topic: str
    """Debezium's ``signal.kafka.topic``."""
    connector: str
    """Debezium's ``topic.prefix`` (its logical name): the message key it accepts."""
    tables: tuple[str, ...]
    """Tables as Debezium names them (``schema.table`` for PostgreSQL), not yet escaped."""
    id: str = field(default_factory=lambda: f"carecloud-backfill-{uuid.uuid4()}")

    @property
    def key(self) -> bytes:
        return self.connector.encode("utf-8")

    def document(self) -> dict[str, Any]:
        """The value as a JSON object (what ``--dry-run`` prints)."""
        return {
            "id": self.id,
            "type": "execute-snapshot",
            "data": {"data-collections": [_collection(t) for t in self.tables], "type": "INCREMENTAL"},
        }

    @property
    def value(self) -> bytes:
        return orjson.dumps(self.document())


def send_signal(client_config: Mapping[str, Any], signal: SnapshotSignal, timeout_s: float = 30.0) -> int:
    """Produce ``signal`` to partition 0 of its topic and wait for the broker's acknowledgement;
    returns the message's offset.

    The topic must exist (Debezium reads partition 0 of it from start-up): producing to a
    missing one would at best auto-create it with the broker's defaults, so it is refused with
    the setting that names it. Idempotent producer, ``acks=all``: one signal, acknowledged once.
    """
    from confluent_kafka import KafkaException, Producer

    producer = Producer(
        {
            **client_config,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": int(timeout_s * 1000),
            "allow.auto.create.topics": False,  # a missing topic is refused, never made with defaults
        }
    )
    try:
        metadata = producer.list_topics(signal.topic, timeout=timeout_s)
    except KafkaException as exc:
        raise TransientError(f"cannot reach Kafka to look up signal topic {signal.topic}: {exc}") from None
    found = metadata.topics.get(signal.topic)
    if found is None or found.error is not None or SIGNAL_PARTITION not in found.partitions:
        raise SignalError(
            f"signal topic {signal.topic} does not exist: create it (one partition) and set Debezium's "
            f"signal.kafka.topic to it, or pass --signal-topic"
        )
    outcome: list[Any] = []
    producer.produce(
        signal.topic,
        signal.value,
        signal.key,
        partition=SIGNAL_PARTITION,
        on_delivery=lambda err, msg: outcome.append((err, msg)),
    )
    remaining = producer.flush(timeout_s)
    if remaining or not outcome:
        raise SignalError(
            f"signal to {signal.topic} not acknowledged within {timeout_s:.0f} s; its delivery is unknown"
        )
    err, msg = outcome[0]
    if err is not None:
        raise SignalError(f"signal to {signal.topic} refused by the broker: {err.str()}")
    offset: int = msg.offset()
    return offset
