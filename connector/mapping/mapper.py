"""Source row -> entity record: the compiled form of the mapping file.

Each (topic, table) pair is compiled once into a plan of per-field getters and converters,
so mapping an event is a loop over prepared closures. The EntityId comes only from the
primary-key template, never from anything random or sequential: the same source row maps to
the same EntityId across updates, restarts, replays and rebuilds.

Records are valid by construction, so they are not validated again per event: every field is
planned from the entity schema at start-up (a field not mapped explicitly reads the
same-name column), and each converter enforces its field's Avro type, range, scale and enum
symbols. Calling ``validate`` per event cost 18 % of the ingest path (bench/ingest.py);
tests/unit/test_replay_example.py checks that mapped records pass it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from string import Formatter
from typing import Any

import orjson

from connector.mapping.change import EntityChange
from connector.mapping.convert import ConversionError, Converter, converter_for
from connector.mapping.exceptions import MappingError
from connector.mapping.spec import FieldSpec, MappingSpec, TableSpec
from connector.model import raw_schema
from connector.source.events import ChangeEvent
from connector.source.limits import MAX_NESTING, nesting_exceeds

__all__ = ["FieldPlan", "Mapper"]

_ABSENT: Any = object()
_Reader = Callable[[ChangeEvent], Any]
_Fill = Callable[[ChangeEvent, dict[str, Any], set[str]], None]


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """One field of a table as the mapper reads it (also what the fast path's plan describes)."""

    name: str
    spec: FieldSpec
    convert: Converter
    nullable: bool
    const: Any


@dataclass(frozen=True, slots=True)
class _TablePlan:
    table: TableSpec
    fields: tuple[FieldPlan, ...]
    fill: _Fill
    """Puts every field's value into ``values``, or its name into ``missing`` (``_fill``)."""
    entity_id: Callable[[dict[str, Any] | None, dict[str, Any]], str]


class Mapper:
    """Maps decoded change events to entity changes according to one mapping file."""

    def __init__(self, spec: MappingSpec) -> None:
        self.spec = spec
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
                t.entity, entity_id, True, event.version, {}, next_entity_id=nxt, position=event.position
            )
        values: dict[str, Any] = {"EntityId": entity_id}
        missing: set[str] = set()
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
            const = _ABSENT
            if spec.is_const:
                try:
                    const = None if spec.const is None else conv(spec.const)
                except ConversionError as exc:
                    raise MappingError(
                        f"{table.entity}.{spec.name}: constant is not {exc.expected} (line {spec.line})",
                        reason=exc.reason,
                    ) from None
            plans.append(FieldPlan(spec.name, spec, conv, nullable, const))
        plan = _TablePlan(table, tuple(plans), _fill(tuple(plans), table.entity), _id_maker(table))
        self._plans[(topic, table.table)] = plan
        return plan


def _native(event: ChangeEvent, entity: str, entity_id: str) -> EntityChange:
    """The native envelope is already entity-shaped; only its id must agree with its payload."""
    if event.op.is_delete:
        return EntityChange(entity, entity_id, True, event.version, {}, position=event.position)
    if event.row.get("EntityId") != entity_id:
        raise MappingError(f"{entity}: envelope EntityId and payload EntityId differ", reason="key_mismatch")
    return EntityChange(entity, entity_id, False, event.version, event.row, position=event.position)


def _id_part(value: Any, entity: str, column: str) -> str:
    if value is None or value is _ABSENT:
        raise MappingError(f"{entity}: primary-key column {column} is missing", reason="missing_primary_key")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MappingError(
            f"{entity}: primary-key column {column} is not text or an integer", reason="wrong_type"
        )
    text = str(value)
    if not text or not text.isprintable():
        raise MappingError(
            f"{entity}: primary-key column {column} is empty or unprintable", reason="bad_primary_key"
        )
    return text


def _format_id(table: TableSpec, key: dict[str, Any] | None, row: dict[str, Any], entity: str) -> str:
    key = key or {}
    parts = {c: _id_part(key.get(c, row.get(c, _ABSENT)), entity, c) for c in table.id_columns}
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
        value = key.get(column, _ABSENT) if key else _ABSENT
        if value is _ABSENT:
            value = row.get(column, _ABSENT)
        if type(value) is int:
            return prefix + str(value) + suffix
        return general(key, row)

    return single


def _fill(plans: tuple[FieldPlan, ...], entity: str) -> _Fill:
    """One function that maps every field of a table, generated from its plan at start-up.

    Mapping is the largest share of the per-event work, and a loop calling one reader per
    field spent a third of it on the loop and the calls. The generated code reads a plain
    column (no path, template or constant) inline and converts it; everything else, and a
    plain column that is null, absent or unchanged-TOAST, goes through the field's reader
    (``_reader``), so the result is the same. Only names from the mapping and the schema
    appear in the code, as ``repr`` literals.
    """
    names: dict[str, Any] = {"_ABSENT": _ABSENT, "ConversionError": ConversionError, "_refused": _refused}
    lines = ["def fill(event, values, missing):", "    row, unavailable = event.row, event.unavailable"]
    for i, f in enumerate(plans):
        names[f"read{i}"] = _reader(f, entity)
        fallback = [
            f"v = read{i}(event)",
            "if v is _ABSENT:",
            f"    missing.add({f.name!r})",
            "else:",
            f"    values[{f.name!r}] = v",
        ]
        spec = f.spec
        if f.const is not _ABSENT or spec.template is not None or spec.column is None or spec.path:
            lines += [f"    {line}" for line in fallback]
            continue
        names[f"convert{i}"] = f.convert
        lines += [
            f"    raw = row.get({spec.column!r})",
            "    if raw is None or unavailable:",
            *(f"        {line}" for line in fallback),
            "    else:",
            "        try:",
            f"            values[{f.name!r}] = convert{i}(raw)",
            "        except ConversionError as exc:",
            f"            raise _refused({entity!r}, {f.name!r}, exc) from None",
        ]
    exec("\n".join(lines), names)  # the code holds only names from the mapping and the schema
    fill: _Fill = names["fill"]
    return fill


def _refused(entity: str, name: str, exc: ConversionError) -> MappingError:
    return MappingError(f"{entity}.{name}: {exc.reason} (expected {exc.expected})", reason=exc.reason)


def _reader(f: FieldPlan, entity: str) -> _Reader:
    """``_field_value`` for one field, as ``_fill`` calls it when it cannot read inline.

    A JSON text column read through paths is parsed once per event: the parsed object replaces
    the text in the event's row, and every path field of that column walks it.
    """
    if f.const is not _ABSENT:
        const = f.const
        return lambda event: const
    column = f.spec.column
    if column is None or f.spec.template is not None or not f.spec.path:
        return lambda event: _field_value(f, event, entity)

    def read_path(event: ChangeEvent) -> Any:
        raw = event.row.get(column)
        if type(raw) is str and column not in event.unavailable:
            try:
                parsed = _json_text(raw, entity, f.name)
            except orjson.JSONDecodeError:
                parsed = None  # _field_value reports it
            if isinstance(parsed, dict):
                event.row[column] = parsed
        return _field_value(f, event, entity)

    return read_path


def _field_value(f: FieldPlan, event: ChangeEvent, entity: str) -> Any:
    """The converted value, or ``_ABSENT`` when a source column is an unchanged-TOAST column."""
    spec = f.spec
    if f.const is not _ABSENT:
        return f.const
    if spec.template is not None:
        if not event.unavailable.isdisjoint(spec.template_columns):
            return _ABSENT
        parts = {}
        for col in spec.template_columns:
            raw = event.row.get(col)
            if raw is None:
                return _null(f, entity, "required_field_null")
            parts[col] = _id_part(raw, entity, col)
        return spec.template.format(**parts)
    column = spec.column
    assert column is not None
    if column in event.unavailable:
        return _ABSENT
    raw = event.row.get(column, _ABSENT)
    if spec.path and raw is not _ABSENT and raw is not None:
        raw = _follow(raw, spec.path, entity, f.name)
    if raw is _ABSENT or raw is None:
        return _null(f, entity, "required_field_missing" if raw is _ABSENT else "required_field_null")
    try:
        return f.convert(raw)
    except ConversionError as exc:
        raise MappingError(
            f"{entity}.{f.name}: {exc.reason} (expected {exc.expected})", reason=exc.reason
        ) from None


def _null(f: FieldPlan, entity: str, reason: str) -> Any:
    if f.spec.default is not None:
        return f.convert(f.spec.default)
    if f.nullable:
        return None
    raise MappingError(f"{entity}.{f.name}: required field has no value", reason=reason)


def _follow(value: Any, path: tuple[str, ...], entity: str, name: str) -> Any:
    """Walk into a JSON column; Debezium sends json/jsonb columns as text."""
    for step in path:
        if isinstance(value, str):
            try:
                value = _json_text(value, entity, name)
            except orjson.JSONDecodeError:
                raise MappingError(
                    f"{entity}.{name}: source JSON column is not valid JSON", reason="unparseable_json"
                ) from None
        if not isinstance(value, dict):
            return _ABSENT
        value = value.get(step, _ABSENT)
        if value is _ABSENT or value is None:
            return value
    return value


def _json_text(text: str, entity: str, name: str) -> Any:
    """A JSON text column parsed, with the nesting bound every parse path has
    (``connector.source.limits``); orjson's own errors are the caller's to report."""
    value = orjson.loads(text)
    if text.count("{") + text.count("[") > MAX_NESTING and nesting_exceeds(value):
        raise MappingError(
            f"{entity}.{name}: source JSON column is nested deeper than {MAX_NESTING} levels",
            reason="nesting_too_deep",
        )
    return value
