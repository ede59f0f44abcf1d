"""Kafka Connect and Debezium logical types -> Python values, planned once per schema.

Debezium repeats the same schema with every message, so the decision "which columns need
converting, and how" is taken once per distinct schema and kept as a *plan*: a dict from
column name to a converter, holding only the columns that need one. Applying a plan to a row
is then one dict lookup and one call per typed column, and nothing for the rest.

Two schema dialects describe the same logical types: the Kafka Connect JSON schema that
``JsonConverter`` embeds (``{"type": "int32", "name": "io.debezium.time.Date", ...}``) and the
Avro schema that Confluent's ``AvroConverter`` registers (``{"type": "int",
"connect.name": "io.debezium.time.Date"}``, with ``logicalType`` for the Connect built-ins).
Both map onto the same converters here, so JSON and Avro events of one table decode to the
same Python values. Types not listed (``MicroTime``, ``Json``, ``Uuid``, decimals in
``string``/``double`` handling mode, ...) stay as the wire gave them: the mapping stage
converts those by the entity field's type.

A converter raises ``_Invalid`` with a reason code; ``apply_plan`` turns it into a
``DecodeError`` naming the column. No message here ever includes the value.
"""

from __future__ import annotations

import binascii
import datetime as dt
import decimal
from collections.abc import Callable, Mapping
from typing import Any

from connector.errors import DecodeError
from connector.source.limits import MAX_DECIMAL_BYTES

__all__ = ["Converter", "Plan", "apply_plan", "avro_plan", "connect_plan", "convert_value"]

Converter = Callable[[Any], Any]
Plan = dict[str, Converter]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_MILLISECOND = dt.timedelta(milliseconds=1)
_MICROSECOND = dt.timedelta(microseconds=1)
# Exact arithmetic: a column's scale must never be rounded away by the default 28-digit context.
_MAX_SCALE = 1000  # PostgreSQL's own limit for numeric
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


class _Invalid(Exception):  # noqa: N818 - internal signal, never leaves this package
    """A value that does not fit its logical type; carries only a reason code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _integer(value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass, and a float would lose digits
        raise _Invalid("wrong_type")
    return value


def _bytes(value: Any) -> bytes:
    if type(value) is str:  # JsonConverter writes bytes as base64
        try:
            return binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, ValueError):
            raise _Invalid("invalid_decimal") from None
    if isinstance(value, bytes):
        return value
    raise _Invalid("wrong_type")


def _unscaled(value: Any, scale: int) -> decimal.Decimal:
    """``org.apache.kafka.connect.data.Decimal``: big-endian two's-complement unscaled value."""
    if not -_MAX_SCALE <= scale <= _MAX_SCALE:  # a hostile scale would make quantize huge
        raise _Invalid("invalid_decimal")
    if type(value) is int or type(value) is float:  # JsonConverter ``decimal.format=NUMERIC``
        return _EXACT.create_decimal(repr(value)).quantize(decimal.Decimal(1).scaleb(-scale), context=_EXACT)
    if isinstance(value, decimal.Decimal):
        return value
    raw = _bytes(value)
    if not raw:
        raise _Invalid("invalid_decimal")
    if len(raw) > MAX_DECIMAL_BYTES:  # Decimal(int) is quadratic in the digits: refuse first
        raise _Invalid("decimal_too_long")
    return decimal.Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale, context=_EXACT)


def _decimal(scale: int) -> Converter:
    return lambda value: _unscaled(value, scale)


def _variable_scale_decimal(value: Any) -> decimal.Decimal:
    """``io.debezium.data.VariableScaleDecimal``: a struct of ``scale`` and ``value`` bytes."""
    if isinstance(value, decimal.Decimal):
        return value
    if not isinstance(value, Mapping):
        raise _Invalid("wrong_type")
    scale = value.get("scale")
    if type(scale) is not int:
        raise _Invalid("invalid_decimal")
    return _unscaled(value.get("value"), scale)


def _date(value: Any) -> dt.date:
    """Days since the epoch (``io.debezium.time.Date``, Connect ``Date``)."""
    if type(value) is dt.date:
        return value
    try:
        return dt.date.fromordinal(_EPOCH_ORDINAL + _integer(value))
    except (ValueError, OverflowError):
        raise _Invalid("date_out_of_range") from None


def _timestamp(value: Any, unit: dt.timedelta, per_unit: int = 1) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    try:
        return _EPOCH + unit * (_integer(value) // per_unit)
    except OverflowError:
        raise _Invalid("date_out_of_range") from None


def _millis(value: Any) -> dt.datetime:
    """Milliseconds since the epoch (``io.debezium.time.Timestamp``, Connect ``Timestamp``)."""
    return _timestamp(value, _MILLISECOND)


def _micros(value: Any) -> dt.datetime:
    """Microseconds since the epoch (``io.debezium.time.MicroTimestamp``)."""
    return _timestamp(value, _MICROSECOND)


def _nanos(value: Any) -> dt.datetime:
    """Nanoseconds since the epoch, floored to the microsecond ``datetime`` can hold."""
    return _timestamp(value, _MICROSECOND, 1000)


def _zoned(value: Any) -> dt.datetime:
    """``io.debezium.time.ZonedTimestamp``: ISO-8601 with an offset (``...Z``)."""
    if not isinstance(value, str):
        raise _Invalid("wrong_type")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid("invalid_timestamp") from None
    if parsed.tzinfo is None:
        raise _Invalid("invalid_timestamp")
    return parsed


_FIXED: dict[str, Converter] = {
    "io.debezium.data.VariableScaleDecimal": _variable_scale_decimal,
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "date": _date,
    "io.debezium.time.Timestamp": _millis,
    "org.apache.kafka.connect.data.Timestamp": _millis,
    "timestamp-millis": _millis,
    "io.debezium.time.MicroTimestamp": _micros,
    "timestamp-micros": _micros,
    "io.debezium.time.NanoTimestamp": _nanos,
    "io.debezium.time.ZonedTimestamp": _zoned,
}
_DECIMALS = frozenset({"org.apache.kafka.connect.data.Decimal", "decimal"})
_RULES = {
    "wrong_type": "the wire type does not fit the column's logical type",
    "date_out_of_range": "the date or timestamp is outside the representable range (years 1-9999)",
    "invalid_decimal": "not a decimal's scale and unscaled big-endian bytes",
    "decimal_too_long": f"an unscaled decimal longer than {MAX_DECIMAL_BYTES} bytes",
    "invalid_timestamp": "not an ISO-8601 timestamp with a UTC offset",
}


def _scale(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def _converter(name: Any, base_type: Any, scale: Any) -> Converter | None:
    if not isinstance(name, str):
        return None
    if name in _DECIMALS:
        return _decimal(_scale(scale)) if base_type in ("bytes", "fixed") else None
    return _FIXED.get(name)


def connect_plan(struct: Any) -> Plan | None:
    """Plan for a Connect JSON ``struct`` schema (``before``/``after``/key); None if not a struct."""
    if not isinstance(struct, Mapping) or not isinstance(struct.get("fields"), list):
        return None
    plan: Plan = {}
    for field in struct["fields"]:
        if not isinstance(field, Mapping) or not isinstance(field.get("field"), str):
            continue
        params = field.get("parameters")
        scale = params.get("scale") if isinstance(params, Mapping) else None
        conv = _converter(field.get("name"), field.get("type"), scale)
        if conv is not None:
            plan[field["field"]] = conv
    return plan


def avro_plan(
    record: Mapping[str, Any], named: Mapping[str, Any], *, logical_key: str = "logicalType"
) -> Plan:
    """Plan for a parsed Avro record's fields, reading ``connect.name``, else ``logical_key``.

    ``named`` resolves references to named types (fastavro's ``__named_schemas``): Avro names
    a record such as ``VariableScaleDecimal`` in full once and refers to it by name after. The
    Avro decoder renames ``logicalType`` before fastavro parses the schema, so fastavro hands
    over raw ints and bytes and every conversion (and its error) happens here, by column.
    """
    plan: Plan = {}
    for field in record.get("fields", ()):
        ftype = field.get("type")
        if isinstance(ftype, list):  # ["null", X]: Debezium's optional column
            branches = [t for t in ftype if t != "null"]
            ftype = branches[0] if len(branches) == 1 else None
        if isinstance(ftype, str):
            ftype = named.get(ftype)
        if not isinstance(ftype, Mapping):
            continue
        name = ftype.get("connect.name")
        if not isinstance(name, str) or (name not in _FIXED and name not in _DECIMALS):
            name = ftype.get(logical_key)
        params = ftype.get("connect.parameters")
        scale = ftype.get("scale", params.get("scale") if isinstance(params, Mapping) else None)
        conv = _converter(name, ftype.get("type"), scale)
        if conv is not None:
            plan[field["name"]] = conv
    return plan


def _error(where: str, column: str, reason: str) -> DecodeError:
    return DecodeError(f"{where}.{column}: {_RULES[reason]}", reason=reason)


def convert_value(conv: Converter, value: Any, column: str, where: str) -> Any:
    """One conversion, its failure named by column and rule (used for key columns)."""
    try:
        return conv(value)
    except _Invalid as exc:
        raise _error(where, column, exc.reason) from None


def apply_plan(row: dict[str, Any], plan: Plan, where: str) -> None:
    """Convert ``row``'s typed columns in place; ``where`` (``after``, ``key``) goes in errors."""
    for column, conv in plan.items():
        value = row.get(column)
        if value is not None:
            try:
                row[column] = conv(value)
            except _Invalid as exc:
                raise _error(where, column, exc.reason) from None
