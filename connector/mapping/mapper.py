"""Source row -> entity record: the compiled form of the mapping file.

Each (topic, table) pair is compiled once into a plan of per-field getters and converters,
so mapping an event is a loop over prepared closures. The EntityId comes only from the
primary-key template, never from anything random or sequential: the same source row maps to
the same EntityId across updates, restarts, replays and rebuilds.

Records are valid by construction, so they are not validated again per event: every field is
planned from the entity schema at start-up (a field not mapped explicitly reads the
same-name column), and each converter enforces its field's Avro type, range, scale and enum
symbols. Calling ``validate`` per event cost 18 % of the ingest path (bench/ingest.py);
tests/unit/test_replay_example.py checks that mapped records pass it. Reading one field's value
(and the generated function that reads them all) is ``_fields``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from string import Formatter
from typing import Any

from connector.mapping._fields import ABSENT, FieldPlan, Fill, fill_function, id_part
from connector.mapping.change import EntityChange
from connector.mapping.convert import ConversionError, converter_for
from connector.mapping.exceptions import MappingError
from connector.mapping.source_columns import SourceColumns
from connector.mapping.spec import MappingSpec, TableSpec
from connector.mapping.versions import entity_versions
from connector.model import raw_schema
from connector.source.events import ChangeEvent

__all__ = ["FieldPlan", "Mapper"]


@dataclass(frozen=True, slots=True)
class _TablePlan:
    table: TableSpec
    fields: tuple[FieldPlan, ...]
    fill: Fill
    """Puts every field's value into ``values``, or its name into ``missing`` (``fill_function``)."""
    entity_id: Callable[[dict[str, Any] | None, dict[str, Any]], str]
    version: str
    """The entity's mapping version (``connector.mapping.versions``), which each change carries."""


class Mapper:
    """Maps decoded change events to entity changes according to one mapping file."""

    def __init__(self, spec: MappingSpec, *, source_columns: bool = False) -> None:
        self.spec = spec
        self.source_columns = source_columns
        """Whether each upsert carries its source row (``EntityChange.source``), which the
        state row keeps so it can be re-mapped later (docs/decisions/0025)."""
        self.versions = entity_versions(spec)
        """``{entity: mapping version}``: what every row this mapping writes carries."""
        self._plans: dict[tuple[str, str], _TablePlan] = {}
        for table in spec.tables.values():
            self._compile("*", table)  # fail at start-up, not on the first event

    def map(self, event: ChangeEvent) -> EntityChange:
        """The entity change for ``event``; raises ``MappingError``/``SchemaValidationError``."""
        if event.entity is not None and event.entity_id is not None:
            return _native(event, event.entity, event.entity_id)
        key = (event.position.topic, event.table)
        plan = self._plans.get(key)
        if plan is None:
            table = self.spec.tables.get(event.table)
            if table is None:
                raise MappingError(f"no mapping for source table {event.table}", reason="unknown_table")
            plan = self._compile(event.position.topic, table)
        t = plan.table
        entity_id = plan.entity_id(event.key, event.row)
        if event.op.is_delete:
            nxt = _format_id(t, event.new_key, {}, t.entity) if event.new_key else None
            return EntityChange(
                t.entity,
                entity_id,
                True,
                event.version,
                {},
                next_entity_id=nxt,
                position=event.position,
                mapping_version=plan.version,
            )
        values: dict[str, Any] = {"EntityId": entity_id}
        missing: set[str] = set()
        # A copy taken before the fill: a path field replaces its JSON text column by the
        # parsed object in the event's row, and the state keeps the source as it came.
        source = SourceColumns(event.table, dict(event.row)) if self.source_columns else None
        plan.fill(event, values, missing)
        prev = _format_id(t, event.old_key, {}, t.entity) if event.old_key else None
        return EntityChange(
            t.entity,
            entity_id,
            False,
            event.version,
            values,
            frozenset(missing),
            previous_entity_id=prev,
            position=event.position,
            mapping_version=plan.version,
            source=source,
            unavailable=event.unavailable,
        )

    def field_plans(self, topic: str, table: TableSpec) -> tuple[FieldPlan, ...]:
        """The planned fields of ``table`` as read from ``topic`` (for the compiled fast path)."""
        plan = self._plans.get((topic, table.table)) or self._compile(topic, table)
        return plan.fields

    def _compile(self, topic: str, table: TableSpec) -> _TablePlan:
        settings = self.spec.topic(topic)
        types = {f["name"]: f["type"] for f in raw_schema(table.entity)["fields"]}
        plans = []
        for spec in table.fields:
            conv, nullable = converter_for(
                types[spec.name],
                spec,
                decimal_handling=settings.decimal_handling,
                timestamp_unit=settings.timestamp_unit,
            )
            const = ABSENT
            if spec.is_const:
                try:
                    const = None if spec.const is None else conv(spec.const)
                except ConversionError as exc:
                    raise MappingError(
                        f"{table.entity}.{spec.name}: constant is not {exc.expected} (line {spec.line})",
                        reason=exc.reason,
                    ) from None
            plans.append(FieldPlan(spec.name, spec, conv, nullable, const))
        plan = _TablePlan(
            table,
            tuple(plans),
            fill_function(tuple(plans), table.entity),
            _id_maker(table),
            self.versions[table.entity],
        )
        self._plans[(topic, table.table)] = plan
        return plan


def _native(event: ChangeEvent, entity: str, entity_id: str) -> EntityChange:
    """The native envelope is already entity-shaped; only its id must agree with its payload."""
    if event.op.is_delete:
        return EntityChange(entity, entity_id, True, event.version, {}, position=event.position)
    if event.row.get("EntityId") != entity_id:
        raise MappingError(f"{entity}: envelope EntityId and payload EntityId differ", reason="key_mismatch")
    return EntityChange(entity, entity_id, False, event.version, event.row, position=event.position)


def _format_id(table: TableSpec, key: dict[str, Any] | None, row: dict[str, Any], entity: str) -> str:
    key = key or {}
    parts = {c: id_part(key.get(c, row.get(c, ABSENT)), entity, c) for c in table.id_columns}
    return table.entity_id.format(**parts)


def _id_maker(table: TableSpec) -> Callable[[dict[str, Any] | None, dict[str, Any]], str]:
    """``_format_id`` for this table, with a shortcut for the common template: one integer
    column between fixed text (``FAM-{family_id}``). Anything else, and every error, takes
    ``_format_id``, so the result is the same."""
    entity = table.entity

    def general(key: dict[str, Any] | None, row: dict[str, Any]) -> str:
        return _format_id(table, key, row, entity)

    parsed = list(Formatter().parse(table.entity_id))
    fields = [(name, spec, conv) for _, name, spec, conv in parsed if name is not None]
    if len(table.id_columns) != 1 or len(fields) != 1 or fields[0][1:] != ("", None):
        return general
    column = table.id_columns[0]
    if fields[0][0] != column:
        return general
    prefix = "".join(text for text, name, _, _ in parsed if name is not None)
    suffix = "".join(text for text, name, _, _ in parsed if name is None)

    def single(key: dict[str, Any] | None, row: dict[str, Any]) -> str:
        value = key.get(column, ABSENT) if key else ABSENT
        if value is ABSENT:
            value = row.get(column, ABSENT)
        if type(value) is int:
            return prefix + str(value) + suffix
        return general(key, row)

    return single
