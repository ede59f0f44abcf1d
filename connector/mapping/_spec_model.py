"""The validated mapping file as data (private to ``connector.mapping.spec``, which re-exports it).

Frozen classes: built once at start-up by ``_spec_check`` and shared by the mapper, the
converters and the compiled fast path's plan without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DecimalHandling", "FieldSpec", "Format", "MappingSpec", "TableSpec", "TimeUnit", "TopicSpec"]

Format = Literal["debezium-json", "debezium-avro", "native-avro"]
DecimalHandling = Literal["precise", "string", "double"]
TimeUnit = Literal["days", "millis", "micros", "nanos"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How the messages of one topic are decoded."""

    name: str
    format: Format = "debezium-json"
    decimal_handling: DecimalHandling = "precise"
    timestamp_unit: TimeUnit = "micros"
    unavailable_placeholder: str = "__debezium_unavailable_value"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where one entity field's value comes from, and how to convert it.

    Exactly one source: ``column`` (with an optional ``path`` into a JSON column), a
    ``const``, or a ``template`` over columns (association fields become templates).
    """

    name: str
    column: str | None = None
    path: tuple[str, ...] = ()
    const: Any = None
    is_const: bool = False
    template: str | None = None
    template_columns: tuple[str, ...] = ()
    enum: dict[str, str] | None = None
    unit: TimeUnit | None = None
    decimal: DecimalHandling | None = None
    scale: int | None = None
    default: Any = None
    line: int = 0

    @property
    def columns(self) -> tuple[str, ...]:
        """The source columns this field reads (for TOAST: unavailable column -> missing field)."""
        return self.template_columns if self.template is not None else (self.column,) if self.column else ()


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One source table's mapping to one entity."""

    table: str
    entity: str
    entity_id: str
    id_columns: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class MappingSpec:
    """The whole validated mapping file."""

    topics: dict[str, TopicSpec]
    tables: dict[str, TableSpec]
    origin: str = "<mapping>"
    transaction_topic: str | None = None
    """Debezium's transaction topic (``transactions.topic``): when set, ingest records which
    events of each source transaction the state holds and the snapshot never delivers one
    half-applied (``connector.state.ledger``); None: no transaction tracking."""
    _default_topic: TopicSpec = field(default_factory=lambda: TopicSpec("*"))

    def topic(self, name: str) -> TopicSpec:
        """The topic's decode settings; topics not listed use the Debezium JSON defaults."""
        return self.topics.get(name) or self._default_topic
