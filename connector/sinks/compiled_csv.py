"""The columns the compiled CSV writer (``CutSpill.csv``) writes an entity's file with.

Formatting in Python costs about 8 µs per record (per-field encoders and ``csv.writer``),
twice what gzip costs for the same bytes (docs/benchmarks.md). The extension writes the lines
from the stored JSON directly, by this description of the entity's columns, and *declines*
any row it is not sure to write as the Python writer does; the snapshot hands such a row to
the Python writer (``CSV.writer(entity, stored=True).write_prepared``), with its rules and its
error (``connector.snapshot.files``). ``tests/unit/snapshot/test_compiled_cut.py`` holds the
two paths to the same bytes.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from connector.model import field_names, raw_schema
from connector.sinks.exceptions import SinkConfigError

__all__ = ["csv_columns"]


@functools.cache
def csv_columns(entity: str) -> str:
    """The entity's columns as the extension reads them: name, nullable, kind (and its details)."""
    types = {field["name"]: field["type"] for field in raw_schema(entity)["fields"]}
    columns = []
    for name in field_names(entity):
        field_type = types[name]
        nullable = isinstance(field_type, list) and "null" in field_type
        branches = [t for t in field_type if t != "null"] if isinstance(field_type, list) else [field_type]
        if len(branches) != 1:
            raise SinkConfigError(f"{entity}.{name}: only a type or a nullable type can be written to a file")
        columns.append({"name": name, "nullable": nullable, **_kind(entity, name, branches[0])})
    return orjson.dumps(columns).decode()


def _kind(entity: str, name: str, branch: Any) -> dict[str, Any]:
    kind = branch if isinstance(branch, str) else branch.get("logicalType") or branch.get("type")
    if kind in ("string", "boolean", "date"):
        return {"kind": kind}
    if kind in ("int", "long"):
        return {"kind": "integer"}
    if kind == "enum":
        return {"kind": "enum", "symbols": branch["symbols"]}
    if kind == "timestamp-millis":
        return {"kind": "timestamp"}
    if kind == "decimal":
        return {"kind": "decimal", "scale": int(branch.get("scale", 0))}
    raise SinkConfigError(f"{entity}.{name}: type {kind!r} has no file encoding")
