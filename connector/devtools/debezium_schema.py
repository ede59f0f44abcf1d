"""Debezium JSON as JsonConverter writes it with ``schemas.enable=true`` (Debezium's default).

The synthetic streams are schemaless; these put a Connect schema in front of their messages,
typing the columns a mapping reads as dates, timestamps and decimals with Debezium's logical
types, as a PostgreSQL connector would. The fast path's tests and ``bench/ingest.py
--wrapped`` use them.
"""

from __future__ import annotations

from typing import Any

import orjson

from connector.mapping import Mapper
from connector.mapping.fastpath import fastpath_plan

__all__ = ["LOGICAL", "column_schemas", "struct", "wrap", "wrap_key"]

LOGICAL = {
    "date": {"type": "int32", "name": "io.debezium.time.Date"},
    "timestamp": {"type": "int64", "name": "io.debezium.time.MicroTimestamp"},
}


def column_schemas(mapper: Mapper, topic: str) -> dict[str, dict[str, Any]]:
    """Connect schemas of the columns the plan reads as dates, timestamps and decimals."""
    plan, _ = fastpath_plan(mapper, topic)
    out: dict[str, dict[str, Any]] = {}
    for table in plan["tables"].values():
        for f in table["fields"]:
            source = f["source"]
            if source["kind"] != "column" or source["path"]:
                continue
            conv = source["conv"]
            if conv["kind"] in LOGICAL:
                out[source["column"]] = dict(LOGICAL[conv["kind"]])
            elif conv["kind"] == "decimal":
                out[source["column"]] = {
                    "type": "bytes",
                    "name": "org.apache.kafka.connect.data.Decimal",
                    "parameters": {"scale": str(conv["scale"]), "connect.decimal.precision": "12"},
                }
    return out


def struct(row: dict[str, Any], typed: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    fields = []
    for column, value in row.items():
        base = "boolean" if isinstance(value, bool) else "int64" if isinstance(value, int) else "string"
        fields.append({"type": base, "optional": True, **typed.get(column, {}), "field": column})
    return {"type": "struct", "fields": fields, "optional": True, "name": name}


def wrap(doc: dict[str, Any], typed: dict[str, dict[str, Any]], **over: Any) -> dict[str, Any]:
    """``doc`` with a Debezium value schema in front, as JsonConverter writes it."""
    row = doc.get("after") or doc.get("before") or {}
    value = struct(row, typed, "Value")
    schema = {
        "type": "struct",
        "fields": [
            {**value, "field": "before"},
            {**value, "field": "after"},
            {"type": "struct", "fields": [], "optional": False, "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
        ],
        "optional": False,
        "name": "Envelope",
        **over,
    }
    return {"schema": schema, "payload": doc}


def wrap_key(key: bytes, typed: dict[str, dict[str, Any]]) -> bytes:
    columns = orjson.loads(key)
    return orjson.dumps({"schema": struct(columns, typed, "Key"), "payload": columns})
