"""The mapping stage's output: one change to one CareCloud entity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connector.mapping.source_columns import SourceColumns
from connector.source.events import Position
from connector.source.version import Version

__all__ = ["EntityChange"]


@dataclass(slots=True)
class EntityChange:
    """A change to the entity ``(entity, entity_id)`` at ``version``.

    ``values`` holds entity fields (Avro field names, Python types); for an upsert whose
    source carried unchanged-TOAST placeholders it is partial and ``missing`` names the
    fields the state must take from the previous version. A delete carries no values.
    ``previous_entity_id`` is set on the create that follows a primary-key update (Debezium's
    ``__debezium.oldkey``) and ``next_entity_id`` on the matching delete (``newkey``), so the
    state can carry over a TOAST value that exists only under the old key.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which
    made construction about four times slower on the per-event path (bench/ingest.py). It is
    still treated as immutable: nothing assigns to it after construction.
    """

    entity: str
    entity_id: str
    deleted: bool
    version: Version
    values: dict[str, Any]
    missing: frozenset[str] = frozenset()
    previous_entity_id: str | None = None
    next_entity_id: str | None = None
    position: Position | None = field(default=None, compare=False)
    mapping_version: str | None = None
    """The version of the mapping that made this change (``connector.mapping.versions``); the
    row it writes carries it. None: not made by a mapping file's table (the native envelope)."""
    source: SourceColumns | None = None
    """The source row the values were mapped from (an upsert, with source columns kept:
    ``IngestSettings.source_columns``), which the state row keeps for re-mapping."""
    unavailable: frozenset[str] = frozenset()
    """Source columns the event left out (unchanged TOAST): the stored row's are kept."""
