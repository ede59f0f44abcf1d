"""The compiled decode-and-map fast path for Debezium JSON (the ``carecloud_fastpath`` extension).

Decoding and mapping a ~1 KB Debezium JSON event in Python costs about 20 µs, two thirds of
the ingest's per-event work (docs/decisions/0012). The extension does the same for the
common message in a few microseconds: it parses the bytes, computes the version and the
EntityId, converts every field and returns the state key and the encoded state row, byte
for byte as ``state_key`` and ``encode_row`` write them (``FastChange``). With ``peek``,
which reads a stored row's version without parsing its values, the common update needs no
Python work on the values at all.

The Python path stays the reference: the extension *declines* any message it is not sure of
(a possible unchanged-TOAST placeholder, primary-key headers, a value a converter would
refuse, a logical type from an embedded schema it does not follow, an unknown table) and
the caller then decodes and maps it in Python, which names any problem for the dead-letter
topic. A table whose mapping uses a shape the extension does not implement is left out of
its plan, so all of that table's messages take the Python path.
``tests/unit/mapping/test_fastpath.py`` holds the two paths to the same state bytes. The
extension is loaded, its contract checked and the plan validated by ``connector._fastpath``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from string import Formatter
from typing import Any

import orjson

from connector import _fastpath
from connector.mapping.convert import INT_RANGE, UNIT_DIVISOR, ConversionError
from connector.mapping.mapper import FieldPlan, Mapper
from connector.mapping.spec import MappingSpec, TableSpec, TopicSpec
from connector.model import raw_schema
from connector.source import Placeholder
from connector.source.events import Position

__all__ = ["FastChange", "FastPath", "Peek", "fastpath_plan"]

_KEY_HEADERS = frozenset({"__debezium.oldkey", "__debezium.newkey"})


Peek = Callable[[bytes], "tuple[int, int, int, int, int] | None"]
"""The extension's ``peek``: the version of a stored row that is a live, complete entity with
no older-filled fields and no delete floor, read without parsing its values; else None."""


def _segments(template: str) -> list[dict[str, str]] | None:
    """``{"lit": text}`` / ``{"col": column}`` parts of a template of plain ``{column}`` fields."""
    out: list[dict[str, str]] = []
    for text, name, spec, conversion in Formatter().parse(template):
        if text:
            out.append({"lit": text})
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion is not None:
            return None  # a format spec, attribute or index: the Python path formats it
        out.append({"col": name})
    return out


def _conv(avro_type: Any, f: FieldPlan, topic: TopicSpec) -> dict[str, Any] | None:
    """The converter ``converter_for`` chose, described for the extension; None if not covered."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            return None
        avro_type = branches[0]
    spec = f.spec
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "decimal":
            handling = spec.decimal or topic.decimal_handling
            scale, precision = avro_type["scale"], avro_type["precision"]
            source_scale = scale if spec.scale is None else spec.scale
            # Up to scale 6 Python writes every such decimal in plain notation (no 1E-7 form).
            if handling != "precise" or source_scale != scale or precision > 28 or scale > 6:
                return None
            return {"kind": "decimal", "scale": scale, "precision": precision}
        if logical == "date":
            return {"kind": "date"} if (spec.unit or "days") == "days" else None
        if logical in ("timestamp-millis", "timestamp-micros"):
            divisor = UNIT_DIVISOR.get(spec.unit or topic.timestamp_unit, 1_000_000)
            return {"kind": "timestamp", "divisor": divisor, "millis": logical == "timestamp-millis"}
        if avro_type.get("type") == "enum":
            return {"kind": "enum", "symbols": list(avro_type["symbols"])}
        return _conv(avro_type["type"], f, topic)
    if avro_type in ("string", "boolean"):
        return {"kind": avro_type}
    if avro_type in INT_RANGE:
        lo, hi = INT_RANGE[avro_type]
        return {"kind": "integer", "lo": lo, "hi": hi}
    return None


def _json(value: Any) -> str:
    """A typed value as ``encode_row`` writes it inside a row (decimals as exact text)."""
    return orjson.dumps(value, default=_decimal_text).decode()


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def _on_null(f: FieldPlan) -> dict[str, Any]:
    """What a null source gives (``_null``) as JSON text, or nothing when Python must decide."""
    if f.spec.default is not None:
        try:
            return {"on_null": _json(f.convert(f.spec.default))}
        except ConversionError:
            return {}
    return {"on_null": "null"} if f.nullable else {}


def _table_plan(mapper: Mapper, topic: TopicSpec, table: TableSpec) -> dict[str, Any] | None:
    entity_id = _segments(table.entity_id)
    if entity_id is None:
        return None
    types = {f["name"]: f["type"] for f in raw_schema(table.entity)["fields"]}
    plans = mapper.field_plans(topic.name, table)
    # A path field replaces its column's text with the parsed object in the Python path, which
    # another field reading the same column would see: such tables take the Python path.
    path_columns = {f.spec.column for f in plans if f.spec.path and f.spec.template is None}
    other_columns = set(table.id_columns) | {
        c for f in plans if not (f.spec.path and f.spec.template is None) for c in f.spec.columns
    }
    if path_columns & other_columns:
        return None
    if any(f.name == "EntityId" for f in plans):
        return None  # the mapper sets it from the template; a field of that name replaces it
    fields: list[dict[str, Any]] = []
    for f in plans:
        source: dict[str, Any]
        if f.spec.is_const:
            source = {"kind": "const", "json": _json(f.const)}
        elif f.spec.template is not None:
            segments = _segments(f.spec.template)
            if segments is None:
                return None
            source = {"kind": "template", "segments": segments, "columns": list(f.spec.template_columns)}
        elif f.spec.column is not None:
            conv = _conv(types[f.name], f, topic)
            if conv is None:
                return None
            enum_map = dict(f.spec.enum) if f.spec.enum else None
            if enum_map is not None and not all(isinstance(v, str) for v in enum_map.values()):
                return None
            source = {
                "kind": "column",
                "column": f.spec.column,
                "path": list(f.spec.path),
                "conv": conv,
                "enum_map": enum_map,
            }
        else:
            return None
        fields.append({"name": f.name, "source": source, **_on_null(f)})
    return {
        "entity": table.entity,
        "entity_id": entity_id,
        "fields": fields,
        "mapping_version": mapper.versions[table.entity],
        "source_columns": mapper.source_columns,
    }


def fastpath_plan(mapper: Mapper, topic: str) -> tuple[dict[str, Any], list[str]]:
    """(the extension's plan for ``topic``, the tables left to the Python path)."""
    spec: MappingSpec = mapper.spec
    settings = spec.topic(topic)
    tables: dict[str, Any] = {}
    python_only: list[str] = []
    for table in spec.tables.values():
        plan = _table_plan(mapper, settings, table)
        if plan is None:
            python_only.append(table.table)
        else:
            tables[table.table] = plan
    return {"tables": tables}, python_only


@dataclass(slots=True)
class FastChange:
    """A change the compiled path mapped: the state key, and for an upsert its encoded row.

    ``row`` is the state row as ``encode_row`` writes it when no stored row precedes it;
    ``BatchView.apply_fast`` uses it as is over a plain older row (the common update) and
    otherwise turns it into an ``EntityChange`` (``connector.ingest.batch.as_change``, which
    reads the row through the state's codec) for ``apply_change``.
    """

    entity: str
    entity_id: str
    deleted: bool
    version: tuple[int, int, int, int, int]
    key: bytes
    row: bytes | None
    transaction: tuple[str, str, int] | None
    """``(table, transaction.id, data_collection_order)`` of Debezium's transaction block."""
    position: Position
    mapping_version: str | None = None
    """The entity's mapping version (``Mapper.versions``): the extension ends ``row`` with it
    (``"mv"``), and the change made from it for the Python merge carries it."""


class FastPath:
    """One topic's fast path: ``map`` gives a ``FastChange``, or None (use the Python path)."""

    def __init__(self, mapper: Mapper, topic: str) -> None:
        plan, self.python_only = fastpath_plan(mapper, topic)
        markers = Placeholder(mapper.spec.topic(topic).unavailable_placeholder).json_markers
        self._core = _fastpath.core(plan, markers)  # the plan validated against the contract
        self._versions = mapper.versions
        self.peek: Peek = _fastpath.load().peek

    def map(
        self,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, Any]] | None,
        position: Position,
        generation: int = 0,
    ) -> FastChange | None:
        """The change in one message, or None when the Python path must decode and map it.

        ``generation``: the source partition's snapshot generation at this message, which a
        streamed change's version carries (``connector.source.version.with_generation``); the
        extension declines a snapshot's ``last`` read, whose completion the Python path records.
        """
        if key is None:
            return None
        if headers and any(name in _KEY_HEADERS for name, _ in headers):
            return None  # a primary-key update: the Python path links the old and new EntityId
        out = self._core.map(key, value, position.offset, generation)
        if out is None:
            return None
        return FastChange(*out, position, self._versions.get(out[0]))
