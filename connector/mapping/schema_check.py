"""A source table's columns against the mapping: which mapped column is gone or has another type.

The source schema evolves under the mapping. An **added** column is nothing to report: the
mapping does not read it until someone maps it. A **dropped** column that a field reads would
otherwise show up late and quietly: a required field as a stream of
``required_field_missing`` dead letters, a nullable one as nulls delivered to CareCloud with no
error at all. A **retyped** column would show as ``wrong_type`` dead letters, or worse, convert
into something else. This module names both at once, from the columns a message describes
(``connector.source.schema_probe``), so ingest can raise a metric and an alert and ``status``
can say it, before the dead letters pile up.

Only names from the mapping (table, column, field) appear in a problem, never a value.
A message without a schema (JSON with ``schemas.enable=false``) says which columns exist but
not their types: only drops are seen then.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from connector.mapping.spec import FieldSpec, MappingSpec, TableSpec
from connector.model import raw_schema

__all__ = [
    "PROBLEMS",
    "SchemaProblem",
    "accepted_families",
    "check_columns",
    "implicit",
    "resolve_table",
]

Problem = Literal["dropped", "retyped"]
PROBLEMS: Final = ("dropped", "retyped")
"""What can be wrong with a mapped column (the metric's ``problem`` label)."""

_TEXT: Final = frozenset({"string", "integer", "decimal", "json", "boolean", "float"})
_BY_TYPE: Final = {
    "string": _TEXT,
    "enum": frozenset({"string"}),
    "boolean": frozenset({"boolean", "integer"}),
    "int": frozenset({"integer"}),
    "long": frozenset({"integer"}),
    "double": frozenset({"float", "integer", "decimal"}),
    "float": frozenset({"float", "integer", "decimal"}),
    "decimal": frozenset({"decimal", "integer", "float", "string"}),
    "date": frozenset({"date", "timestamp", "string"}),
    "timestamp": frozenset({"timestamp", "date", "string"}),
}


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One mapped column the source no longer has, or has with a type its field cannot take."""

    table: str
    column: str
    problem: Problem
    field: str
    """The entity field that reads the column (``Entity.Field``)."""
    found: str | None = None
    """The column's type family now (retyped only)."""

    def describe(self) -> str:
        if self.problem == "dropped":
            return f"{self.table}.{self.column} dropped: {self.field} reads it"
        return f"{self.table}.{self.column} retyped to {self.found}: {self.field} cannot take it"


@functools.cache
def _field_types(entity: str) -> dict[str, Any]:
    """The entity schema's field types, read once (``raw_schema`` builds a fresh copy per call)."""
    return {f["name"]: f["type"] for f in raw_schema(entity)["fields"]}


def _entity_type(avro_type: Any) -> str:
    """``string``, ``enum``, ``decimal``, ``date``, ``timestamp``, ... of an entity field's type."""
    if isinstance(avro_type, list):
        avro_type = next((t for t in avro_type if t != "null"), None)
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical in ("timestamp-millis", "timestamp-micros"):
            return "timestamp"
        if logical in ("decimal", "date"):
            return str(logical)
        if avro_type.get("type") == "enum":
            return "enum"
        return _entity_type(avro_type.get("type"))
    return str(avro_type)


def accepted_families(avro_type: Any, spec: FieldSpec) -> frozenset[str]:
    """The source column families a field's converter can take (``connector.mapping.convert``)."""
    if spec.template is not None:
        return frozenset({"integer", "string"})  # an EntityId part: text or an integer
    if spec.path:
        return frozenset({"json", "string"})  # walked into as JSON
    kind = _entity_type(avro_type)
    accepted = _BY_TYPE.get(kind, _TEXT)
    if spec.enum:  # looked up by the value's text first: any scalar can be mapped
        accepted = accepted | frozenset({"string", "integer", "boolean"})
    if kind in ("date", "timestamp") and spec.unit is not None:
        accepted = accepted | frozenset({"integer"})  # a number of days/millis/... by the mapping's unit
    return accepted


def resolve_table(spec: MappingSpec, *names: str | None) -> TableSpec | None:
    """The mapped table a message describes: its ``source`` table first, else the table whose
    name ends the record's or the topic's name (``<prefix>.<schema>.<table>``)."""
    for name in names:
        if not name:
            continue
        if name in spec.tables:
            return spec.tables[name]
        matches = [t for t in spec.tables.values() if name.endswith(f".{t.table}")]
        if len(matches) == 1:
            return matches[0]
    return None


def implicit(spec: FieldSpec) -> bool:
    """A field the mapping file does not name, which reads the column of its own name: the
    mapping relies on it being absent (a null) as much as present, so its absence is news only
    once the column has been seen."""
    return spec.column == spec.name and not (spec.path or spec.enum or spec.template or spec.is_const)


def check_columns(
    table: TableSpec, columns: Mapping[str, str | None], *, typed: bool, seen: Collection[str] = ()
) -> list[SchemaProblem]:
    """Every mapped column of ``table`` that ``columns`` lacks, or (``typed``) has with a type
    its field cannot take; columns the mapping does not read are ignored. A column read only by
    an ``implicit`` field counts as dropped only if ``seen`` (earlier schemas of the table) had it."""
    types = _field_types(table.entity)
    problems: dict[tuple[str, str], SchemaProblem] = {}
    for spec in table.fields:
        where = f"{table.entity}.{spec.name}"
        reads: Iterable[str] = spec.columns
        for column in reads:
            if (column, "dropped") in problems or (column, "retyped") in problems:
                continue
            if column not in columns:
                if not implicit(spec) or column in seen:
                    problems[(column, "dropped")] = SchemaProblem(table.table, column, "dropped", where)
                continue
            found = columns[column]
            if typed and found is not None and found not in accepted_families(types[spec.name], spec):
                problems[(column, "retyped")] = SchemaProblem(table.table, column, "retyped", where, found)
    return list(problems.values())
