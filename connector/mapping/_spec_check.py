"""The mapping file's checks against the entity schemas (private to ``connector.mapping.spec``).

Every problem is collected and reported with its line instead of stopping at the first, so an
operator fixes a file in one pass; ``spec.parse_mapping`` raises them as one
``MappingConfigError``.
"""

from __future__ import annotations

import string
from typing import Any, get_args

from connector.mapping._spec_model import (
    DecimalHandling,
    FieldSpec,
    Format,
    MappingSpec,
    TableSpec,
    TimeUnit,
    TopicSpec,
)
from connector.mapping._yaml import Located
from connector.mapping.exceptions import MappingConfigError
from connector.model import ENTITY_NAMES, REFERENCES, field_names

__all__ = ["Validator"]

_TOPIC_KEYS = {"format", "decimal_handling", "timestamp_unit", "unavailable_placeholder"}
_TABLE_KEYS = {"entity", "entity_id", "fields"}
_SOURCE_KEYS = {"column", "path", "const", "template", "references"}
_FIELD_KEYS = _SOURCE_KEYS | {"enum", "unit", "decimal", "scale", "default"}
_UNSET: Any = object()


class Validator:
    """Collects every problem in one pass instead of stopping at the first."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.problems: list[str] = []

    def err(self, line: int, where: str, message: str) -> None:
        self.problems.append(f"{self.origin}:{line}: {where}: {message}")

    def run(self, doc: Any) -> MappingSpec:
        if not isinstance(doc, Located):
            raise MappingConfigError([f"{self.origin}:1: the mapping must be a YAML mapping"])
        for key in doc.keys() - {"version", "topics", "tables", "transactions"}:
            self.err(
                doc.key_lines[key],
                key,
                "unknown top-level key (expected version, topics, tables, transactions)",
            )
        if doc.get("version") != 1:
            self.err(doc.key_lines.get("version", 1), "version", "must be 1")
        topics = self.topics(doc.get("topics") or Located())
        raw_tables = doc.get("tables")
        if not isinstance(raw_tables, Located) or not raw_tables:
            self.err(doc.key_lines.get("tables", 1), "tables", "must map at least one source table")
            raw_tables = Located()
        id_templates = self.entity_templates(raw_tables)
        tables = {}
        for name, body in raw_tables.items():
            table = self.table(str(name), body, raw_tables.key_lines[name], id_templates)
            if table is not None:
                tables[table.table] = table
        transaction_topic = self.transactions(doc, topics)
        if self.problems:
            raise MappingConfigError(self.problems)
        return MappingSpec(topics, tables, self.origin, transaction_topic)

    def transactions(self, doc: Located, topics: dict[str, TopicSpec]) -> str | None:
        """``transactions: {topic: <prefix>.transaction}``: Debezium's transaction topic, read
        beside the source topics (never one of them: its records are not row changes)."""
        if "transactions" not in doc:
            return None
        raw, line = doc["transactions"], doc.key_lines["transactions"]
        if not isinstance(raw, Located):
            self.err(
                line, "transactions", "must be a mapping with topic (Debezium's <topic.prefix>.transaction)"
            )
            return None
        for key in raw.keys() - {"topic"}:
            self.err(raw.key_lines[key], f"transactions.{key}", "unknown setting (expected topic)")
        topic = raw.get("topic")
        where = raw.key_lines.get("topic", line)
        if not isinstance(topic, str) or not topic:
            self.err(where, "transactions.topic", "required: Debezium's <topic.prefix>.transaction topic")
            return None
        if topic in topics:
            self.err(where, "transactions.topic", "is listed under topics too; it is not a source topic")
            return None
        return topic

    def topics(self, raw: Any) -> dict[str, TopicSpec]:
        if not isinstance(raw, Located):
            self.err(1, "topics", "must be a mapping of topic name to settings")
            return {}
        out = {}
        for name, body in raw.items():
            line = raw.key_lines[name]
            body = body or Located()
            if not isinstance(body, Located):
                self.err(line, f"topics.{name}", "must be a mapping")
                continue
            for key in body.keys() - _TOPIC_KEYS:
                self.err(body.key_lines[key], f"topics.{name}.{key}", "unknown setting")
            kwargs: dict[str, Any] = {}
            for key, choices in (
                ("format", Format),
                ("decimal_handling", DecimalHandling),
                ("timestamp_unit", TimeUnit),
            ):
                if key in body:
                    if body[key] not in get_args(choices):
                        self.err(
                            body.key_lines[key], f"topics.{name}.{key}", f"must be one of {get_args(choices)}"
                        )
                    kwargs[key] = body[key]
            if "unavailable_placeholder" in body:
                kwargs["unavailable_placeholder"] = str(body["unavailable_placeholder"])
            out[str(name)] = TopicSpec(str(name), **kwargs)
        return out

    def entity_templates(self, raw_tables: Located) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Each entity's EntityId template, which its children's association fields reuse."""
        found: dict[str, tuple[str, tuple[str, ...]]] = {}
        for name, body in raw_tables.items():
            if not isinstance(body, Located):
                continue
            entity, template = body.get("entity"), body.get("entity_id")
            if entity not in ENTITY_NAMES or not isinstance(template, str):
                continue
            columns = self.template_columns(template, body.key_lines["entity_id"], f"tables.{name}.entity_id")
            if entity in found and found[entity][0] != template:
                self.err(
                    body.key_lines["entity_id"],
                    f"tables.{name}.entity_id",
                    f"{entity} already has EntityId template {found[entity][0]!r}; one entity, one template "
                    "(else the same row could get two EntityIds)",
                )
            found.setdefault(entity, (template, columns))
        return found

    def template_columns(self, template: str, line: int, where: str) -> tuple[str, ...]:
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as exc:
            self.err(line, where, f"bad template ({exc})")
            return ()
        columns = []
        for _, name, spec, conv in parts:
            if name is None:
                continue
            if not name.isidentifier() or spec or conv:
                self.err(line, where, f"placeholder {{{name}}} must be a plain column name")
            columns.append(name)
        if not columns:
            self.err(line, where, "template has no {column} placeholder: every row would get the same id")
        return tuple(columns)

    def table(
        self, name: str, body: Any, line: int, id_templates: dict[str, tuple[str, tuple[str, ...]]]
    ) -> TableSpec | None:
        where = f"tables.{name}"
        if not isinstance(body, Located):
            self.err(line, where, "must be a mapping with entity, entity_id and optional fields")
            return None
        for key in body.keys() - _TABLE_KEYS:
            self.err(
                body.key_lines[key], f"{where}.{key}", "unknown setting (expected entity, entity_id, fields)"
            )
        entity = body.get("entity")
        if entity not in ENTITY_NAMES:
            self.err(body.key_lines.get("entity", line), f"{where}.entity", f"must be one of {ENTITY_NAMES}")
            return None
        template = body.get("entity_id")
        if not isinstance(template, str):
            self.err(
                body.key_lines.get("entity_id", line),
                f"{where}.entity_id",
                "required template, e.g. 'FAM-{id}'",
            )
            return None
        id_columns = self.template_columns(template, body.key_lines["entity_id"], f"{where}.entity_id")
        raw_fields = body.get("fields") or Located()
        if not isinstance(raw_fields, Located):
            self.err(
                body.key_lines.get("fields", line),
                f"{where}.fields",
                "must be a mapping of entity field to source",
            )
            raw_fields = Located()
        known = field_names(entity)
        for fname in raw_fields:
            if fname not in known:
                self.err(
                    raw_fields.key_lines[fname], f"{where}.fields.{fname}", f"{entity} has no such field"
                )
            elif fname == "EntityId":
                self.err(
                    raw_fields.key_lines[fname], f"{where}.fields.EntityId", "EntityId comes from entity_id"
                )
        refs = {r.field: r.parent for r in REFERENCES.get(entity, ())}
        fields = []
        for fname in known:
            if fname == "EntityId":
                continue
            fwhere = f"{where}.fields.{fname}"
            raw = raw_fields.get(fname, _UNSET)
            fline = raw_fields.key_lines.get(fname, line)
            if raw is _UNSET:
                raw = Located({"references": fname}) if fname in refs else fname
            spec = self.field(fname, raw, fline, fwhere, refs.get(fname), id_templates)
            if spec is not None:
                fields.append(spec)
        return TableSpec(name, entity, template, id_columns, tuple(fields), line)

    def field(
        self,
        name: str,
        raw: Any,
        line: int,
        where: str,
        parent: str | None,
        id_templates: dict[str, tuple[str, tuple[str, ...]]],
    ) -> FieldSpec | None:
        if isinstance(raw, str):
            return FieldSpec(name, column=raw, line=line)
        if not isinstance(raw, Located):
            self.err(line, where, "must be a column name or a mapping")
            return None
        for key in raw.keys() - _FIELD_KEYS:
            self.err(
                raw.key_lines.get(key, line),
                f"{where}.{key}",
                f"unknown setting (expected one of {sorted(_FIELD_KEYS)})",
            )
        sources = raw.keys() & _SOURCE_KEYS
        if len(sources) != 1:
            self.err(line, where, "needs exactly one of column, path, const, template, references")
            return None
        kw: dict[str, Any] = {"line": line}
        if isinstance(raw.get("enum"), dict):
            kw["enum"] = {str(k): str(v) for k, v in raw["enum"].items()}
        elif "enum" in raw:
            self.err(
                raw.key_lines.get("enum", line), f"{where}.enum", "must map source values to enum symbols"
            )
        for key, choices in (("unit", TimeUnit), ("decimal", DecimalHandling)):
            if key in raw:
                if raw[key] not in get_args(choices):
                    self.err(
                        raw.key_lines.get(key, line), f"{where}.{key}", f"must be one of {get_args(choices)}"
                    )
                kw[key] = raw[key]
        if "scale" in raw:
            if not isinstance(raw["scale"], int) or raw["scale"] < 0:
                self.err(raw.key_lines.get("scale", line), f"{where}.scale", "must be a non-negative integer")
            kw["scale"] = raw["scale"]
        if "default" in raw:
            kw["default"] = raw["default"]
        (source,) = sources
        value = raw[source]
        if source == "column":
            return FieldSpec(name, column=str(value), **kw)
        if source == "path":
            parts = tuple(str(value).split("."))
            return FieldSpec(name, column=parts[0], path=parts[1:], **kw)
        if source == "const":
            return FieldSpec(name, const=value, is_const=True, **kw)
        if source == "template":
            cols = self.template_columns(str(value), raw.key_lines.get(source, line), f"{where}.template")
            return FieldSpec(name, template=str(value), template_columns=cols, **kw)
        return self.reference(name, value, raw.key_lines.get(source, line), where, parent, id_templates, kw)

    def reference(
        self,
        name: str,
        value: Any,
        line: int,
        where: str,
        parent: str | None,
        id_templates: dict[str, tuple[str, tuple[str, ...]]],
        kw: dict[str, Any],
    ) -> FieldSpec | None:
        """``references: col`` -> the parent's EntityId template over this table's column(s)."""
        if parent is None:
            self.err(line, f"{where}.references", "this field is not an association field")
            return None
        if parent not in id_templates:
            self.err(
                line, f"{where}.references", f"no table maps to {parent}, so its EntityId template is unknown"
            )
            return None
        template, parent_cols = id_templates[parent]
        if isinstance(value, dict):
            binding = {str(k): str(v) for k, v in value.items()}
        elif len(parent_cols) == 1:
            binding = {parent_cols[0]: str(value)}
        else:
            self.err(line, f"{where}.references", f"{parent}'s id has columns {parent_cols}: map each one")
            return None
        if set(binding) != set(parent_cols):
            self.err(line, f"{where}.references", f"must bind exactly {parent}'s id columns {parent_cols}")
            return None
        rewritten = template
        for col, child_col in binding.items():
            rewritten = rewritten.replace("{" + col + "}", "{" + child_col + "}")
        cols = tuple(binding[c] for c in parent_cols)
        return FieldSpec(name, template=rewritten, template_columns=cols, **kw)
