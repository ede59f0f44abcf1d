"""The decoded change event: one source row change, independent of the wire format.

Every decoder (Debezium JSON, Schema-Registry Avro, the native envelope) produces this, so the
mapping stage sees one shape. Values are already typed where the wire format says how
(decimal -> ``Decimal``, ``io.debezium.time.Date`` -> ``date``, timestamps -> aware
``datetime``); where it does not (Debezium JSON without its schema wrapper), they stay raw
and the mapping converts them by the entity field's type.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from connector.source.version import Version

__all__ = ["ChangeEvent", "Op", "Position", "Transaction"]


class Op(enum.Enum):
    """Debezium's ``op`` codes; the native envelope's UPSERT maps to UPDATE."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"

    @property
    def is_delete(self) -> bool:
        return self is Op.DELETE


class Position(NamedTuple):
    """Where a message came from: what dead letters, logs and metrics may name.

    A named tuple rather than a frozen dataclass: one is built per consumed message, and a
    named tuple is built in half the time.
    """

    topic: str
    partition: int
    offset: int


class Transaction(NamedTuple):
    """Debezium's ``transaction`` block (present when ``provide.transaction.metadata`` is on).

    ``id`` is the source's transaction id (PostgreSQL ``"txId:lsn"``, MySQL the GTID or binlog
    position); the orders count the events of the transaction, overall and per table, from 1.
    """

    id: str
    total_order: int
    data_collection_order: int


@dataclass(slots=True)
class ChangeEvent:
    """One decoded change to one source row.

    ``row`` is ``after`` for create/update/read and ``before`` for delete (which may hold only
    the primary key). ``key`` holds the primary-key columns from the message key. Columns
    whose value Debezium left out (the PostgreSQL unchanged-TOAST placeholder) are absent
    from ``row`` and named in ``unavailable``: the state keeps their previous value.
    ``old_key``/``new_key`` come from Debezium's ``__debezium.oldkey``/``newkey`` headers on
    a primary-key update. ``transaction`` is Debezium's transaction block, when the
    connector emits one. For the native envelope, ``entity``/``entity_id`` are set and
    ``row`` already has the entity's fields. ``snapshot_end`` is the source's logical name on
    the last read of a PostgreSQL initial snapshot (Debezium's ``snapshot: "last"``), where the
    snapshot's generation is complete (docs/decisions/0019).

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which
    made construction about four times slower on the per-event path (bench/ingest.py). It is
    still treated as immutable but for one field: the ingest re-stamps ``version`` with its
    partition's snapshot generation (``connector.ingest.generations``) before mapping it.
    """

    position: Position
    table: str
    op: Op
    key: dict[str, Any] | None
    row: dict[str, Any]
    version: Version
    unavailable: frozenset[str] = frozenset()
    old_key: dict[str, Any] | None = None
    new_key: dict[str, Any] | None = None
    entity: str | None = None
    entity_id: str | None = None
    source_ts_ms: int | None = field(default=None, compare=False)
    transaction: Transaction | None = field(default=None, compare=False)
    snapshot_end: str | None = field(default=None, compare=False)
