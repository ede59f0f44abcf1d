"""Bytes for the state topic and the local store: one ``StateRow`` per (entity, EntityId).

JSON (orjson) rather than the entity's Avro binary, because a row can be partial (fields
missing after an unchanged-TOAST update) or a delete marker, which the entity schema cannot
express. Dates, timestamps and decimals are written as ISO strings and exact decimal strings
and restored by the entity schema's field types, planned once per entity.

The key is ``<Entity>/<EntityId>``: entity names contain no ``/``, so the first one splits it,
and keys of one entity sort together (prefix scans per entity).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import orjson

from connector.mapping.source_columns import SourceColumns, decode_source, encode_source
from connector.model import ENTITY_NAMES, raw_schema
from connector.source.version import Version
from connector.state.resolve import StateRow

__all__ = [
    "complete_values",
    "decode_row",
    "encode_row",
    "is_complete",
    "is_deleted",
    "restore_values",
    "row_mapping_version",
    "split_key",
    "state_key",
    "stored_values",
    "stored_values_and_source",
    "stored_version",
    "without_source",
]

_SEP = b"/"


def state_key(entity: str, entity_id: str) -> bytes:
    """The compacted state topic's (and local store's) key for one entity."""
    return entity.encode() + _SEP + entity_id.encode()


def split_key(key: bytes) -> tuple[str, str]:
    """Inverse of ``state_key``."""
    entity, _, entity_id = key.partition(_SEP)
    return entity.decode(), entity_id.decode()


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def encode_row(row: StateRow, *, deleted_at_ms: int | None = None) -> bytes:
    """Compact JSON; absent optional parts are left out to keep the common row small.

    ``deleted_at_ms`` stamps a delete marker with when ingest wrote it (``"dt"``, epoch ms):
    the age the purge rule reads (``connector.state.purge``). It is not part of ``StateRow``:
    the merge is pure and never sees a clock, and ``decode_row`` ignores it.

    ``"mv"``, the row's mapping version (``connector.mapping.versions``), comes last, where the
    compiled path writes it too (``fastpath/src/row.rs``, ``encode``: the same bytes).
    ``"src"``, the row's source columns as a JSON string (``connector.mapping.source_columns``),
    comes just before it, when the row keeps them.
    """
    doc: dict[str, Any] = {"v": list(row.version), "r": row.values}
    if row.deleted:
        doc["d"] = 1
        if deleted_at_ms is not None:
            doc["dt"] = deleted_at_ms
    if row.missing:
        doc["m"] = sorted(row.missing)
    if row.field_versions:
        doc["fv"] = {name: list(v) for name, v in row.field_versions.items()}
    if row.delete_floor is not None:
        doc["df"] = list(row.delete_floor)
    if row.source is not None:
        doc["src"] = row.source if isinstance(row.source, str) else encode_source(row.source)
    if row.mapping_version is not None:
        doc["mv"] = row.mapping_version
    return orjson.dumps(doc, default=_default)


_MV = b'"mv":"'
_SOURCE = re.compile(rb',"src":"(?:[^"\\]|\\.)*"', re.DOTALL)
"""A row's source columns: the key and its JSON string (``encode_row``); unescaped, ``,"src":"``
can only be the row's own key (no entity field is named ``src``)."""


def without_source(data: bytes) -> bytes:
    """The row without its source columns, which a snapshot never reads: what the cut readers
    keep of a row (the compiled one's ``row::without_source`` does the same)."""
    if b',"src":"' not in data:
        return data
    return _SOURCE.sub(b"", data, count=1)


def row_mapping_version(data: bytes) -> str | None:
    """A row's mapping version without parsing; None for a row written before rows carried
    it. ``"mv":"`` unescaped can only be the row's own key (the argument of ``is_complete``:
    no entity has a field named ``mv``), and the version is the hex up to the next quote."""
    at = data.rfind(_MV)
    if at < 0:
        return None
    start = at + len(_MV)
    return data[start : data.index(b'"', start)].decode()


def is_complete(data: bytes) -> bool:
    """``decode_row(...).complete`` without parsing: no delete flag and no missing fields.

    ``encode_row`` writes ``"d"`` and ``"m"`` as top-level keys only when set. Inside the
    values a quote is escaped (``\\"``), and no entity has a field named ``d`` or ``m``, so the
    unescaped ``"d":`` or ``"m":`` can only be those keys (a test checks it on every schema).
    """
    return b'"d":' not in data and b'"m":' not in data


def is_deleted(data: bytes) -> bool:
    """A delete marker, without parsing (the same reasoning as ``is_complete``)."""
    return b'"d":' in data


def stored_values(data: bytes) -> dict[str, Any]:
    """A row's values as stored (JSON text for dates, timestamps and decimals), untyped: what
    the snapshot's readers hand to ``Format.writer(entity, stored=True)`` and to the digest."""
    values: dict[str, Any] = orjson.loads(data)["r"]
    return values


def stored_values_and_source(data: bytes) -> tuple[dict[str, Any], SourceColumns | None]:
    """``stored_values`` and the row's source columns (None when it keeps none): what the
    compiled path's row hands the Python merge (``connector.ingest.batch.as_change``)."""
    doc = orjson.loads(data)
    text = doc.get("src")
    return doc["r"], None if text is None else decode_source(text)


def stored_version(data: bytes) -> Version:
    """A row's version without typing its values (which of two rows of a key is newer)."""
    return Version(*orjson.loads(data)["v"])


def complete_values(data: bytes) -> dict[str, Any] | None:
    """``stored_values`` of a live row with every field known; None for a delete marker or a
    row still missing an unchanged-TOAST value (``StateRow.complete``)."""
    doc = orjson.loads(data)
    if doc.get("d") or doc.get("m"):
        return None
    values: dict[str, Any] = doc["r"]
    return values


def decode_row(entity: str, data: bytes, *, typed: bool = True) -> StateRow:
    """Restore a row, typing its values by the entity schema.

    ``typed=False`` leaves dates, timestamps and decimals as the JSON text they are stored
    as. The ingest reads stored rows only to merge them and write them back: the merge copies
    values without looking at them, and ``encode_row`` writes such text exactly as it writes
    the typed value it came from (a test checks it on every entity), so typing them would be
    work thrown away on every update.
    """
    doc = orjson.loads(data)
    values = restore_values(entity, doc["r"]) if typed else doc["r"]
    floor = doc.get("df")
    return StateRow(
        Version(*doc["v"]),
        bool(doc.get("d")),
        values,
        frozenset(doc.get("m", ())),
        {k: Version(*v) for k, v in doc.get("fv", {}).items()},
        None if floor is None else Version(*floor),
        doc.get("mv"),
        doc.get("src"),
    )


def restore_values(entity: str, values: dict[str, Any]) -> dict[str, Any]:
    """Type an encoded row's values in place (decimals, dates, timestamps) by the entity schema."""
    restore = _restorers(entity)
    for name, value in values.items():
        fn = restore.get(name)
        if fn is not None and value is not None:
            values[name] = fn(value)
    return values


@cache
def _restorers(entity: str) -> dict[str, Callable[[Any], Any]]:
    if entity not in ENTITY_NAMES:
        raise KeyError(entity)
    out: dict[str, Callable[[Any], Any]] = {}
    for field in raw_schema(entity)["fields"]:
        avro_type = field["type"]
        if isinstance(avro_type, list):
            avro_type = next(t for t in avro_type if t != "null")
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        if logical == "decimal":
            out[field["name"]] = Decimal
        elif logical == "date":
            out[field["name"]] = date.fromisoformat
        elif logical in ("timestamp-millis", "timestamp-micros"):
            out[field["name"]] = datetime.fromisoformat
    return out
