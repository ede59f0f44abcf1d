"""What a source message says about its table's columns: names and, where a schema is sent, types.

The source schema evolves (a column added, dropped, retyped) and the mapping names columns;
``connector.mapping.schema_check`` compares the two. This module only reads the message's own
description of its row, for each wire format:

- Debezium JSON with schemas: the ``after`` (else ``before``) struct of the value schema: every
  column with its Connect type and logical name;
- Debezium JSON without schemas: the keys of the ``after`` row (a delete says nothing): columns
  without types (a column's JSON value says too little about its type);
- Debezium Avro: the writer schema's ``after`` record, from the Schema Registry by the
  message's schema id (``RegistrySchemas``, which caches each id for good).

Types are folded into families (``integer``, ``float``, ``decimal``, ``boolean``, ``string``,
``json``, ``date``, ``timestamp``, ``time``, ``bytes``, ``other``), which is what a mapping's
converter cares about. The table comes from the payload's ``source`` block (``schema.table``
or ``db.table``); the record's name (``<prefix>.<schema>.<table>``) is kept as a fallback.
Nothing here holds or returns a row value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from connector.source.avro import RegistrySchemas, split_wire_format

__all__ = [
    "PAYLOAD_SEPARATOR",
    "WRAPPED_PREFIX",
    "SourceColumns",
    "avro_columns",
    "connect_family",
    "json_columns",
    "json_order",
    "wrapped_schema",
]

WRAPPED_PREFIX: Final = b'{"schema":'
PAYLOAD_SEPARATOR: Final = b',"payload":'

_LOGICAL_FAMILIES: Final = {
    "org.apache.kafka.connect.data.Decimal": "decimal",
    "io.debezium.data.VariableScaleDecimal": "decimal",
    "org.apache.kafka.connect.data.Date": "date",
    "io.debezium.time.Date": "date",
    "org.apache.kafka.connect.data.Timestamp": "timestamp",
    "io.debezium.time.Timestamp": "timestamp",
    "io.debezium.time.MicroTimestamp": "timestamp",
    "io.debezium.time.NanoTimestamp": "timestamp",
    "io.debezium.time.ZonedTimestamp": "timestamp",
    "org.apache.kafka.connect.data.Time": "time",
    "io.debezium.time.Time": "time",
    "io.debezium.time.MicroTime": "time",
    "io.debezium.time.NanoTime": "time",
    "io.debezium.time.ZonedTime": "time",
    "io.debezium.data.Json": "json",
    "io.debezium.data.Uuid": "string",
    "io.debezium.data.Enum": "string",
    "io.debezium.data.Xml": "string",
    "decimal": "decimal",
    "date": "date",
    "timestamp-millis": "timestamp",
    "timestamp-micros": "timestamp",
    "time-millis": "time",
    "time-micros": "time",
    "uuid": "string",
}
_PHYSICAL_FAMILIES: Final = {
    "int8": "integer",
    "int16": "integer",
    "int32": "integer",
    "int64": "integer",
    "int": "integer",
    "long": "integer",
    "float32": "float",
    "float64": "float",
    "float": "float",
    "double": "float",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}


@dataclass(frozen=True, slots=True)
class SourceColumns:
    """One table's columns as a message describes them."""

    table: str | None
    """``schema.table`` / ``db.table`` from the payload's source block, when it has one."""
    record: str | None
    """The schema's record name without ``.Envelope``/``.Value`` (``<prefix>.<schema>.<table>``)."""
    columns: Mapping[str, str | None]
    """Column -> type family; None when the message carries no schema."""
    typed: bool
    order: int | None = None
    """Where this schema stands among the table's others, when the message says: the source's
    commit time (``source.ts_ms``) for JSON, the registry's schema id (ids grow as versions are
    registered) for Avro. A backlog read across partitions shows an older schema after a newer
    one; the order keeps it from undoing the newer one's verdict."""


def connect_family(physical: Any, logical: Any) -> str:
    """The family of a Connect (JSON) or Avro column type: its logical name first."""
    if isinstance(logical, str) and logical in _LOGICAL_FAMILIES:
        return _LOGICAL_FAMILIES[logical]
    if isinstance(physical, str):
        return _PHYSICAL_FAMILIES.get(physical, "other")
    return "other"


def _row_struct(fields: Any, key: str) -> Mapping[str, Any] | None:
    for name in ("after", "before"):
        found = next((f for f in fields if isinstance(f, Mapping) and f.get(key) == name), None)
        if found is not None:
            return found
    return None


def _source_table(payload: Any) -> str | None:
    source = payload.get("source") if isinstance(payload, Mapping) else None
    if not isinstance(source, Mapping) or not isinstance(source.get("table"), str):
        return None
    first = source.get("schema") or source.get("db")
    return f"{first}.{source['table']}" if isinstance(first, str) else None


def _source_ms(payload: Any) -> int | None:
    source = payload.get("source") if isinstance(payload, Mapping) else None
    ts = source.get("ts_ms") if isinstance(source, Mapping) else None
    return ts if type(ts) is int else None


def _record_name(name: Any) -> str | None:
    if not isinstance(name, str):
        return None
    for suffix in (".Envelope", ".Value"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def json_columns(value: bytes) -> SourceColumns | None:
    """The columns a Debezium JSON value describes; None for a tombstone or a value without a
    row (a delete without ``before`` or anything unparseable: the decoder dead-letters those)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and len(doc) == 2 and "schema" in doc and "payload" in doc:
        schema, payload = doc["schema"], doc["payload"]
        fields = schema.get("fields") if isinstance(schema, Mapping) else None
        struct = _row_struct(fields, "field") if isinstance(fields, list) else None
        if struct is None or not isinstance(struct.get("fields"), list):
            return None
        columns = {
            f["field"]: connect_family(f.get("type"), f.get("name"))
            for f in struct["fields"]
            if isinstance(f, Mapping) and isinstance(f.get("field"), str)
        }
        return SourceColumns(
            _source_table(payload), _record_name(schema.get("name")), columns, True, _source_ms(payload)
        )
    if not isinstance(doc, Mapping):
        return None
    row = doc.get("after")  # a delete's before may hold the key columns only (replica identity)
    if not isinstance(row, Mapping):
        return None
    return SourceColumns(_source_table(doc), None, dict.fromkeys(row), False, _source_ms(doc))


def json_order(value: bytes) -> int | None:
    """``source.ts_ms`` of a Debezium JSON value (wrapped or not): ``SourceColumns.order`` for a
    message whose schema was already seen, read only when a topic's schema changes."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and "payload" in doc and "schema" in doc:
        doc = doc["payload"]
    return _source_ms(doc)


def wrapped_schema(value: bytes) -> bytes | None:
    """The schema bytes of a schema-wrapped JSON value (split as the decoder splits it), or None."""
    if not value.startswith(WRAPPED_PREFIX):
        return None
    cut = value.find(PAYLOAD_SEPARATOR, len(WRAPPED_PREFIX))
    return value[len(WRAPPED_PREFIX) : cut] if cut > 0 else None


def avro_columns(value: bytes, registry: RegistrySchemas) -> tuple[int, SourceColumns | None]:
    """(schema id, the columns of its ``after`` record) of a Confluent-framed Debezium Avro value.

    Raises what ``RegistrySchemas.get`` raises (the registry unavailable, an unknown id) and
    ``DecodeError`` for a value that is not framed; the caller decides what that means.
    """
    schema_id = split_wire_format(value, "value")
    writer = registry.get(schema_id)
    parsed = writer.parsed
    if not isinstance(parsed, Mapping) or not isinstance(parsed.get("fields"), list):
        return schema_id, None
    named = parsed.get("__named_schemas", {})
    struct = _row_struct(parsed["fields"], "name")
    ftype = struct.get("type") if struct is not None else None
    if isinstance(ftype, list):
        ftype = next((t for t in ftype if t != "null"), None)
    if isinstance(ftype, str):
        ftype = named.get(ftype)
    if not isinstance(ftype, Mapping) or not isinstance(ftype.get("fields"), list):
        return schema_id, None
    columns = {}
    for f in ftype["fields"]:
        ctype = f.get("type")
        if isinstance(ctype, list):
            ctype = next((t for t in ctype if t != "null"), None)
        if isinstance(ctype, str) and ctype in named:
            ctype = named[ctype]
        if isinstance(ctype, Mapping):
            logical = ctype.get("connect.name")
            if not isinstance(logical, str) or logical not in _LOGICAL_FAMILIES:
                logical = ctype.get("connector.logicalType", ctype.get("logicalType"))
            columns[f["name"]] = connect_family(ctype.get("type"), logical)
        else:
            columns[f["name"]] = connect_family(ctype, None)
    return schema_id, SourceColumns(None, _record_name(parsed.get("name")), columns, True, schema_id)
