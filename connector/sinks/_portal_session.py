"""The Portal's session resource, read defensively (private to ``connector.sinks.portal``).

The client resumes from what the Portal says it acknowledged, so a session body that does not
have the documented shape (``openapi.yaml``: ``Session``) is refused rather than guessed at.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from connector.sinks.exceptions import PortalMismatchError

__all__ = ["AcknowledgedBatch", "PortalCommit", "PortalSession", "parse_session"]


@dataclass(frozen=True, slots=True)
class AcknowledgedBatch:
    """A batch the Portal holds: its place, size and checksum."""

    sequence: int
    record_count: int
    checksum: str


@dataclass(frozen=True, slots=True)
class PortalCommit:
    """What a session was committed with."""

    record_count: int
    batch_count: int
    checksum: str


@dataclass(frozen=True, slots=True)
class PortalSession:
    """A session as the Portal reports it (``open``, ``committed`` or ``superseded``)."""

    session_id: str
    entity: str
    snapshot_date: dt.date
    snapshot_id: str
    state: str
    record_count: int
    batches: tuple[AcknowledgedBatch, ...]
    commit: PortalCommit | None

    @property
    def acknowledged(self) -> tuple[int, ...]:
        """The acknowledged sequence numbers, ascending."""
        return tuple(sorted(batch.sequence for batch in self.batches))


def parse_session(data: Any, where: str) -> PortalSession:
    """A ``PortalSession`` from the JSON body, or ``PortalMismatchError`` naming what is wrong."""
    if not isinstance(data, dict):
        raise PortalMismatchError(f"{where}: the Portal's session is not a JSON object")
    batches = _field(data, "batches", list, where)
    commit = data.get("commit")
    try:
        day = dt.date.fromisoformat(_field(data, "snapshot_date", str, where))
    except ValueError:
        raise PortalMismatchError(f"{where}: the Portal's session has no valid snapshot_date") from None
    return PortalSession(
        session_id=_field(data, "id", str, where),
        entity=_field(data, "entity", str, where),
        snapshot_date=day,
        snapshot_id=_field(data, "snapshot_id", str, where),
        state=_field(data, "state", str, where),
        record_count=_field(data, "record_count", int, where),
        batches=tuple(_batch(item, where) for item in batches),
        commit=None if commit is None else _commit(commit, where),
    )


def _batch(item: Any, where: str) -> AcknowledgedBatch:
    if not isinstance(item, dict):
        raise PortalMismatchError(f"{where}: an acknowledged batch is not a JSON object")
    return AcknowledgedBatch(
        _field(item, "sequence", int, where),
        _field(item, "record_count", int, where),
        _field(item, "checksum", str, where),
    )


def _commit(item: Any, where: str) -> PortalCommit:
    if not isinstance(item, dict):
        raise PortalMismatchError(f"{where}: the session's commit is not a JSON object")
    return PortalCommit(
        _field(item, "record_count", int, where),
        _field(item, "batch_count", int, where),
        _field(item, "checksum", str, where),
    )


def _field(data: dict[str, Any], name: str, kind: type[Any], where: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PortalMismatchError(f"{where}: the Portal's session has no valid {name!r}")
    return value
