"""One field's value from a change event (private to ``connector.mapping.mapper``).

Each field of a table is planned once (``FieldPlan``: its spec, converter and constant), and
``fill_function`` generates one function that maps them all, reading plain columns inline and
the rest through each field's reader. Absent values (an unchanged-TOAST column) are ``ABSENT``,
so the mapper can leave the field out of an update rather than null it. Errors are
``MappingError`` with a dead-letter reason, naming the entity and field, never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from connector.mapping.convert import ConversionError, Converter
from connector.mapping.exceptions import MappingError
from connector.mapping.spec import FieldSpec
from connector.source.events import ChangeEvent
from connector.source.limits import MAX_NESTING, nesting_exceeds

__all__ = ["ABSENT", "FieldPlan", "Fill", "fill_function", "id_part"]

ABSENT: Any = object()
_Reader = Callable[[ChangeEvent], Any]
Fill = Callable[[ChangeEvent, dict[str, Any], set[str]], None]
"""Puts every field's value into ``values``, or its name into ``missing``."""


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """One field of a table as the mapper reads it (also what the fast path's plan describes)."""

    name: str
    spec: FieldSpec
    convert: Converter
    nullable: bool
    const: Any


def id_part(value: Any, entity: str, column: str) -> str:
    if value is None or value is ABSENT:
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


def fill_function(plans: tuple[FieldPlan, ...], entity: str) -> Fill:
    """One function that maps every field of a table, generated from its plan at start-up.

    Mapping is the largest share of the per-event work, and a loop calling one reader per
    field spent a third of it on the loop and the calls. The generated code reads a plain
    column (no path, template or constant) inline and converts it; everything else, and a
    plain column that is null, absent or unchanged-TOAST, goes through the field's reader
    (``_reader``), so the result is the same. Only names from the mapping and the schema
    appear in the code, as ``repr`` literals.
    """
    names: dict[str, Any] = {"ABSENT": ABSENT, "ConversionError": ConversionError, "_refused": _refused}
    lines = ["def fill(event, values, missing):", "    row, unavailable = event.row, event.unavailable"]
    for i, f in enumerate(plans):
        names[f"read{i}"] = _reader(f, entity)
        fallback = [
            f"v = read{i}(event)",
            "if v is ABSENT:",
            f"    missing.add({f.name!r})",
            "else:",
            f"    values[{f.name!r}] = v",
        ]
        spec = f.spec
        if f.const is not ABSENT or spec.template is not None or spec.column is None or spec.path:
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
    fill: Fill = names["fill"]
    return fill


def _refused(entity: str, name: str, exc: ConversionError) -> MappingError:
    return MappingError(f"{entity}.{name}: {exc.reason} (expected {exc.expected})", reason=exc.reason)


def _reader(f: FieldPlan, entity: str) -> _Reader:
    """``_field_value`` for one field, as ``fill_function``'s code calls it when it cannot read inline.

    A JSON text column read through paths is parsed once per event: the parsed object replaces
    the text in the event's row, and every path field of that column walks it.
    """
    if f.const is not ABSENT:
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
    """The converted value, or ``ABSENT`` when a source column is an unchanged-TOAST column."""
    spec = f.spec
    if f.const is not ABSENT:
        return f.const
    if spec.template is not None:
        if not event.unavailable.isdisjoint(spec.template_columns):
            return ABSENT
        parts = {}
        for col in spec.template_columns:
            raw = event.row.get(col)
            if raw is None:
                return _null(f, entity, "required_field_null")
            parts[col] = id_part(raw, entity, col)
        return spec.template.format(**parts)
    column = spec.column
    assert column is not None
    if column in event.unavailable:
        return ABSENT
    raw = event.row.get(column, ABSENT)
    if spec.path and raw is not ABSENT and raw is not None:
        raw = _follow(raw, spec.path, entity, f.name)
    if raw is ABSENT or raw is None:
        return _null(f, entity, "required_field_missing" if raw is ABSENT else "required_field_null")
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
            return ABSENT
        value = value.get(step, ABSENT)
        if value is ABSENT or value is None:
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
