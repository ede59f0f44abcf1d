"""Encoders for values as the state topic stores them (JSON), the snapshot's fast path (private).

The state holds a row's values as orjson wrote them: dates ``YYYY-MM-DD``, timestamps
``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``, decimals as ``str(Decimal)``. Parsing those back into
``date``/``datetime``/``Decimal`` only for the file encoders to print them again cost about half
of a snapshot's formatting time. These encoders turn the stored text into the file's text
directly when it already has the file's shape, and fall back to parse-then-encode (with every
rule of ``_cells``) for anything else, so the output is the same byte for byte; a property
test compares the two paths.
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Any

from connector.model import raw_schema
from connector.sinks._cells import Encoder, Value, encoders

__all__ = ["stored_encoders"]


@functools.cache
def stored_encoders(entity: str, *, for_csv: bool) -> tuple[tuple[str, Encoder], ...]:
    """``(field, encoder)`` like ``encoders`` but taking the state's stored JSON values."""
    kinds = {field["name"]: _kind(field["type"]) for field in raw_schema(entity)["fields"]}
    out = []
    for name, typed in encoders(entity, for_csv=for_csv):
        kind = kinds[name]
        if kind == "date":
            out.append((name, _date(typed)))
        elif kind == "timestamp-millis":
            out.append((name, _timestamp(typed)))
        elif isinstance(kind, tuple):
            out.append((name, _decimal(typed, kind[1])))
        else:
            out.append((name, typed))  # strings, enums, booleans, integers: JSON has them as is
    return tuple(out)


def _kind(field_type: Any) -> Any:
    branch = next(t for t in field_type if t != "null") if isinstance(field_type, list) else field_type
    if isinstance(branch, dict):
        logical = branch.get("logicalType")
        if logical == "decimal":
            return ("decimal", int(branch.get("scale", 0)))
        return logical or branch.get("type")
    return branch


def _date(typed: Encoder) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is str:
            return value if len(value) == 10 else typed(dt.date.fromisoformat(value))
        return typed(value)

    return encode


def _timestamp(typed: Encoder) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is str:
            if value.endswith("+00:00"):
                if len(value) == 32:  # microseconds: truncate to milliseconds, as the Avro encoding
                    return value[:23] + "Z"
                if len(value) == 25:
                    return value[:19] + ".000Z"
            return typed(dt.datetime.fromisoformat(value))
        return typed(value)

    return encode


def _decimal(typed: Encoder, scale: int) -> Encoder:
    point = -scale - 1
    negative_zero = "-0." + "0" * scale

    def encode(value: Any) -> Value:
        if type(value) is str:
            if scale and value[point : point + 1] == "." and "E" not in value and value != negative_zero:
                return value  # already at the schema's scale
            return typed(Decimal(value))
        return typed(value)

    return encode
