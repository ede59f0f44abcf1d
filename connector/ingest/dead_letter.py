"""A dead letter: the record ingest writes to the dead-letter topic, and how it is read back.

Ingest writes a dead letter as the original key and value with ``carecloud.*`` headers naming
the original position, the error class and the reason (``dead_letter_headers``); an oversized
message is dead-lettered *by reference*, position only, no bytes. ``from_message`` reads one
back (``connector.ingest.dlq_read``), and a replay forwards its headers minus the connector's
own (``replay_headers``, ``connector.ingest.dlq_replay``). A dead letter holds a family's
health claim: its ``repr`` and ``as_json`` name positions and reasons, never the bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.source import Position

__all__ = [
    "BY_REFERENCE_REASONS",
    "DeadLetter",
    "Headers",
    "dead_letter_headers",
    "from_message",
    "replay_headers",
]

Headers = Sequence[tuple[str, str | bytes | None]]

_OWN = "carecloud."
BY_REFERENCE_REASONS = frozenset(
    {"oversized_record", "oversized_key", "oversized_headers", "state_row_too_large"}
)
"""Dead letters that carry only their position: their bytes would not fit, or were the problem."""


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
