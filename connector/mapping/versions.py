"""Mapping versions: a short fingerprint of what the mapping does to each entity.

A state row records the version of the mapping that produced it (``"mv"`` in the row,
``connector.state.codec``), so after a rollout the rows of both mappings can be told apart and
the snapshot never delivers an entity whose rows span versions (docs/decisions/0023).

The version is per *entity*, not per table: the mapping file allows one EntityId template per
entity, every count, gate and hold of the snapshot is per entity, and a row's key names its
entity and not its table. It hashes the entity's ``Descriptor``: for every table mapped onto
the entity, its EntityId template and each field's source (column, JSON path, constant,
template), converter options (unit, decimal handling, scale, default) and enum map, and the
settings of the topics that carry the table and change conversion (format, decimal handling,
timestamp unit, the unchanged-TOAST placeholder). Line numbers, comments, key order and the
mappings of other entities do not change it. A topic carries a table when its name ends with
``.<table>`` (Debezium's ``<prefix>.<schema>.<table>``); a table no topic name matches takes
every topic's settings, so a change to any topic changes its version rather than none.

``identity_changes`` compares two descriptors for what would move EntityIds: the EntityId
template (the entity's own ids) and the template and columns an association (``references``)
field reads (the ids the entity points at).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from connector.mapping._spec_model import FieldSpec, MappingSpec, TableSpec, TopicSpec
from connector.model import REFERENCES

__all__ = [
    "VERSION_LENGTH",
    "Descriptor",
    "IdentityChange",
    "describe",
    "entity_versions",
    "identity_changes",
]

VERSION_LENGTH = 12
"""Hex digits of the fingerprint kept: 48 bits, so two versions of one entity collide with a
chance of about 1 in 10^14, and a row grows by 20 bytes (``,"mv":"<12 hex>"``)."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What one entity's mapping does, as canonical data, and its version (the hash of it)."""

    entity: str
    version: str
    tables: dict[str, Any]
    """Per source table: ``entity_id`` (the template), ``fields`` (each field's source and
    options, canonical) and ``topics`` (the conversion settings of the topics carrying it)."""

    def as_json(self) -> dict[str, Any]:
        return {"entity": self.entity, "version": self.version, "tables": self.tables}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Descriptor:
        return cls(str(raw["entity"]), str(raw["version"]), dict(raw["tables"]))

    def references(self) -> dict[str, dict[str, Any]]:
        """Per association field: the template and columns it reads, per table."""
        fields = {ref.field for ref in REFERENCES.get(self.entity, ())}
        out: dict[str, dict[str, Any]] = {}
        for table, body in sorted(self.tables.items()):
            for name, source in body["fields"].items():
                if name in fields:
                    out.setdefault(name, {})[table] = {
                        k: source.get(k) for k in ("template", "columns", "column", "const")
                    }
        return out

    def entity_id_templates(self) -> dict[str, str]:
        return {table: body["entity_id"] for table, body in sorted(self.tables.items())}


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """A mapping change that would move EntityIds of ``entity``: its own (``what`` is
    ``entity_id``) or those an association field points at (``what`` is the field's name)."""

    entity: str
    table: str
    what: str
    before: Any
    after: Any

    def describe(self) -> str:
        if self.what == "entity_id":
            return f"{self.table} ({self.entity}): entity_id template {self.before!r} -> {self.after!r}"
        return (
            f"{self.table} ({self.entity}): {self.what} reads {_reads(self.before)} -> {_reads(self.after)}"
        )


def _reads(source: dict[str, Any] | None) -> str:
    if source is None:
        return "nothing"
    if source.get("template") is not None:
        return f"{source['template']!r} over {', '.join(source.get('columns') or ())}"
    if source.get("column") is not None:
        return f"column {source['column']}"
    return f"constant {source.get('const')!r}"


def _field(spec: FieldSpec) -> dict[str, Any]:
    """One field's source and options, with only what is set (so adding an option later does
    not change the version of mappings that do not use it)."""
    body: dict[str, Any] = {}
    if spec.is_const:
        body["const"] = spec.const
    elif spec.template is not None:
        body["template"] = spec.template
        body["columns"] = list(spec.template_columns)
    elif spec.column is not None:
        body["column"] = spec.column
    if spec.path:
        body["path"] = list(spec.path)
    if spec.enum is not None:
        body["enum"] = dict(sorted(spec.enum.items()))
    for name in ("unit", "decimal", "scale", "default"):
        value = getattr(spec, name)
        if value is not None:
            body[name] = value
    return body


def _topic(topic: TopicSpec) -> dict[str, Any]:
    return {
        "format": topic.format,
        "decimal_handling": topic.decimal_handling,
        "timestamp_unit": topic.timestamp_unit,
        "unavailable_placeholder": topic.unavailable_placeholder,
    }


def _topics_of(spec: MappingSpec, table: TableSpec) -> dict[str, Any]:
    short = table.table.rsplit(".", 1)[-1]
    matched = {name: t for name, t in spec.topics.items() if name.endswith(f".{short}") or name == short}
    chosen = matched or spec.topics
    return {name: _topic(t) for name, t in sorted(chosen.items())}


def describe(spec: MappingSpec) -> dict[str, Descriptor]:
    """Every mapped entity's descriptor and version."""
    by_entity: dict[str, dict[str, Any]] = {}
    for table in spec.tables.values():
        by_entity.setdefault(table.entity, {})[table.table] = {
            "entity_id": table.entity_id,
            "fields": {f.name: _field(f) for f in sorted(table.fields, key=lambda f: f.name)},
            "topics": _topics_of(spec, table),
        }
    out = {}
    for entity, tables in sorted(by_entity.items()):
        canonical = orjson.dumps(
            {"entity": entity, "tables": tables}, option=orjson.OPT_SORT_KEYS, default=str
        )
        version = hashlib.sha256(canonical).hexdigest()[:VERSION_LENGTH]
        out[entity] = Descriptor(entity, version, orjson.loads(canonical)["tables"])
    return out


def entity_versions(spec: MappingSpec) -> dict[str, str]:
    """``{entity: version}`` of every mapped entity: what each row the mapping writes carries."""
    return {entity: d.version for entity, d in describe(spec).items()}


def identity_changes(before: Descriptor, after: Descriptor) -> list[IdentityChange]:
    """What in ``after`` would move EntityIds that ``before`` wrote: a table's EntityId template,
    or what an association field reads. A table new in ``after`` moves nothing (it has no rows
    yet); a table gone from it is not a move either (its rows stay until deleted)."""
    changes: list[IdentityChange] = []
    entity = after.entity
    old_ids, new_ids = before.entity_id_templates(), after.entity_id_templates()
    for table in sorted(old_ids.keys() & new_ids.keys()):
        if old_ids[table] != new_ids[table]:
            changes.append(IdentityChange(entity, table, "entity_id", old_ids[table], new_ids[table]))
    old_refs, new_refs = before.references(), after.references()
    for name in sorted(old_refs.keys() | new_refs.keys()):
        old_tables, new_tables = old_refs.get(name, {}), new_refs.get(name, {})
        for table in sorted(old_tables.keys() & new_tables.keys()):
            if old_tables[table] != new_tables[table]:
                changes.append(IdentityChange(entity, table, name, old_tables[table], new_tables[table]))
    return changes
