"""One encoder per field: a record's Python value to its CSV cell or JSON value (private).

``formats`` is the interface and documents the encodings; this module is the hot path. Each
field gets a single closure that checks the type, handles null and encodes, with the common
case first: one call per field and no wrapper, which is most of the formatting cost (about a
microsecond per timestamp, a few hundred nanoseconds per other field). A value that breaks a
rule raises ``RuleError`` with a message naming the rule, or ``TypeError``; never the value.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from connector.model import field_names, raw_schema
from connector.sinks.exceptions import SinkConfigError

__all__ = ["FORMULA_TRIGGERS", "Encoder", "RuleError", "Value", "encoders"]

FORMULA_TRIGGERS = frozenset("=+-@\t\r'")
"""First characters that get a ``'`` prefix in CSV string cells; ``'`` itself keeps it reversible."""

Value = str | bool | int | None
Encoder = Callable[[Any], Value]


class RuleError(ValueError):
    """A value broke a rule the message names (the message never holds the value)."""


@functools.cache
def encoders(entity: str, *, for_csv: bool) -> tuple[tuple[str, Encoder], ...]:
    """``(field, encoder)`` in schema order, built once per entity and format."""
    types = {field["name"]: field["type"] for field in raw_schema(entity)["fields"]}
    return tuple((name, _encoder(entity, name, types[name], for_csv)) for name in field_names(entity))


def _encoder(entity: str, name: str, field_type: Any, for_csv: bool) -> Encoder:
    nullable = isinstance(field_type, list) and "null" in field_type
    branches = [t for t in field_type if t != "null"] if isinstance(field_type, list) else [field_type]
    if len(branches) != 1:
        raise SinkConfigError(f"{entity}.{name}: only a type or a nullable type can be written to a file")
    branch = branches[0]
    kind = branch if isinstance(branch, str) else branch.get("logicalType") or branch.get("type")
    null: Value = "" if for_csv else None
    if kind == "string":
        return _string(nullable, null, for_csv)
    if kind == "enum":
        return _enum(nullable, null, frozenset(branch["symbols"]))
    if kind == "boolean":
        return _boolean(nullable, null, for_csv)
    if kind in ("int", "long"):
        return _integer(nullable, null, for_csv)
    if kind == "date":
        return _date(nullable, null)
    if kind == "timestamp-millis":
        return _timestamp(nullable, null)
    if kind == "decimal":
        return _decimal(nullable, null, int(branch.get("scale", 0)))
    raise SinkConfigError(f"{entity}.{name}: type {kind!r} has no file encoding")


def _absent(value: Any, nullable: bool, null: Value) -> Value:
    """The slow path of every encoder: null, or the wrong type."""
    if value is None:
        if nullable:
            return null
        raise RuleError("is null but required")
    raise TypeError


def _string(nullable: bool, null: Value, neutralise: bool) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is str:
            return "'" + value if neutralise and value[:1] in FORMULA_TRIGGERS else value
        return _absent(value, nullable, null)

    return encode


def _enum(nullable: bool, null: Value, symbols: frozenset[str]) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is str:
            if value in symbols:
                return value
            raise RuleError("is not a symbol of its enum")
        return _absent(value, nullable, null)

    return encode


def _boolean(nullable: bool, null: Value, as_text: bool) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is bool:
            return ("true" if value else "false") if as_text else value
        return _absent(value, nullable, null)

    return encode


def _integer(nullable: bool, null: Value, as_text: bool) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is int:
            return str(value) if as_text else value
        return _absent(value, nullable, null)

    return encode


def _date(nullable: bool, null: Value) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is dt.date:  # not a datetime, which is also a date
            return value.isoformat()
        return _absent(value, nullable, null)

    return encode


def _timestamp(nullable: bool, null: Value) -> Encoder:
    def encode(value: Any) -> Value:
        if type(value) is dt.datetime:
            if value.tzinfo is dt.UTC:  # what the Avro decoder returns: skip the conversion
                return value.isoformat(timespec="milliseconds")[:-6] + "Z"
            offset = value.utcoffset()
            if offset is None:
                raise RuleError("is a timestamp without a time zone")
            return (value - offset).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
        return _absent(value, nullable, null)

    return encode


def _decimal(nullable: bool, null: Value, scale: int) -> Encoder:
    quantum = Decimal(1).scaleb(-scale)
    point = -scale - 1  # where the "." sits in a number written at exactly the scale
    negative_zero = "-0." + "0" * scale

    def encode(value: Any) -> Value:
        if type(value) is Decimal and value.is_finite():
            text = format(value, "f")
            if scale and text[point : point + 1] == "." and text != negative_zero:
                return text  # already at the scale, as the Avro decoder returns it: no quantize
            exact = value.quantize(quantum)
            if exact != value:
                raise RuleError(f"has more than {scale} decimal places")
            return format(exact.copy_abs() if exact.is_zero() else exact, "f")  # no "-0.00"
        return _absent(value, nullable, null)

    return encode
