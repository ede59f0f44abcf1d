"""Conversions from source values to entity field values, planned once per field.

A converter is chosen at start-up from the entity field's Avro type and the mapping's hints,
so the per-event work is one call. Converters accept every form Debezium emits for a type
(typed values when the message carried a schema; raw JSON values otherwise) and raise
``ConversionError`` with a reason code; the mapper adds the field name. No message here ever
contains the value.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.mapping.spec import DecimalHandling, FieldSpec, TimeUnit

__all__ = [
    "FIRST_DAY",
    "INT_RANGE",
    "LAST_DAY",
    "UNIT_DIVISOR",
    "ConversionError",
    "Converter",
    "converter_for",
]

Converter = Callable[[Any], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
UNIT_DIVISOR = {"millis": 1_000, "micros": 1_000_000, "nanos": 1_000_000_000}
# UNIT_DIVISOR, INT_RANGE and the date span (FIRST_DAY, LAST_DAY: days since the epoch) are
# shared with the compiled fast path (its plan, mapping/fastpath.py; fastpath/src/convert.rs),
# which must convert alike. Dates outside this span are a source bug (a sentinel like
# 9999-12-31 or a unit mix-up), not a family's data: they go to the dead-letter topic instead
# of into CareCloud.
_YEARS = range(1800, 2201)
_EPOCH_ORDINAL = _EPOCH_DAY.toordinal()
FIRST_DAY = date(_YEARS.start, 1, 1).toordinal() - _EPOCH_ORDINAL
LAST_DAY = date(_YEARS.stop - 1, 12, 31).toordinal() - _EPOCH_ORDINAL
_FIRST_MICRO = FIRST_DAY * 86_400_000_000
_END_MICRO = (LAST_DAY + 1) * 86_400_000_000
INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class ConversionError(ValueError):
    """A value cannot become the field's type; ``reason`` is a code, ``expected`` a type name."""

    def __init__(self, reason: str, expected: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expected = expected


def converter_for(
    avro_type: Any, spec: FieldSpec, *, decimal_handling: DecimalHandling, timestamp_unit: TimeUnit
) -> tuple[Converter, bool]:
    """The converter for one field and whether the field accepts null."""
    nullable = False
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        nullable = len(branches) < len(avro_type)
        if len(branches) != 1:
            raise ValueError("only [null, T] unions are supported in entity schemas")
        avro_type = branches[0]
    conv = _base_converter(avro_type, spec, spec.decimal or decimal_handling, spec.unit or timestamp_unit)
    if spec.enum:
        table, inner = spec.enum, conv

        def conv(value: Any) -> Any:
            return inner(table.get(str(value), value))

    return conv, nullable


def _base_converter(avro_type: Any, spec: FieldSpec, dec: DecimalHandling, unit: TimeUnit) -> Converter:
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "decimal":
            return _decimal(avro_type["scale"], avro_type["precision"], dec, spec.scale)
        if logical == "date":
            return _date(unit if spec.unit else "days")
        if logical in ("timestamp-millis", "timestamp-micros"):
            return _timestamp(unit, millis=logical == "timestamp-millis")
        if avro_type.get("type") == "enum":
            return _enum(frozenset(avro_type["symbols"]))
        return _base_converter(avro_type["type"], spec, dec, unit)
    simple = {"string": _string, "boolean": _boolean, "double": _double, "float": _double}
    if avro_type in simple:
        return simple[avro_type]
    if avro_type in INT_RANGE:
        return _integer(*INT_RANGE[avro_type])
    raise ValueError(f"unsupported Avro type {avro_type!r}")


def _string(value: Any) -> str:
    if isinstance(value, str):
        if value.isascii() and value.isprintable():  # no control character: skip the regex
            return value
        if _CONTROL.search(value):
            raise ConversionError("control_character", "string")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids (NPI, claim numbers) stored as text
    if isinstance(value, Decimal):
        return str(value)
    raise ConversionError("wrong_type", "string")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):  # MySQL TINYINT(1)
        return bool(value)
    raise ConversionError("wrong_type", "boolean")


def _double(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConversionError("wrong_type", "double")
    result = float(value)
    if not math.isfinite(result):
        raise ConversionError("non_finite_number", "double")
    return result


def _integer(lo: int, hi: int) -> Converter:
    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConversionError("wrong_type", "integer")
        number: int = value
        if not lo <= number <= hi:
            raise ConversionError("integer_out_of_range", "integer")
        return number

    return conv


def _enum(symbols: frozenset[str]) -> Converter:
    def conv(value: Any) -> str:
        if not isinstance(value, str) or value not in symbols:
            raise ConversionError("unknown_enum_symbol", "enum symbol")
        return value

    return conv


def _decimal(scale: int, precision: int, handling: DecimalHandling, source_scale: int | None) -> Converter:
    quantum = Decimal(1).scaleb(-scale)
    limit = Decimal(10) ** (precision - scale)
    raw_scale = scale if source_scale is None else source_scale
    # An in-range value has at most this many digits, so its text or bytes are no longer than
    # this (generously): anything longer is out of range, refused before the conversion, which
    # is quadratic in the digits (a 150 KB base64 value took 4 s of CPU).
    longest = precision + max(raw_scale, scale) + 64

    def parse(value: Any) -> Decimal:
        if isinstance(value, Decimal):
            return value
        if isinstance(value, bool):
            raise ConversionError("wrong_type", "decimal")
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConversionError("non_finite_number", "decimal")
            return Decimal(repr(value))
        if isinstance(value, str):
            if len(value) > longest:
                raise ConversionError("decimal_out_of_range", f"decimal({precision},{scale})")
            if handling == "precise":
                try:
                    raw = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise ConversionError("unparseable_decimal", "decimal (base64)") from None
                return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-raw_scale)
            try:
                return Decimal(value)
            except InvalidOperation:
                raise ConversionError("unparseable_decimal", "decimal") from None
        raise ConversionError("wrong_type", "decimal")

    fast_base64 = handling == "precise" and raw_scale == scale and precision <= 28
    digits_limit = 10**precision

    def conv(value: Any) -> Decimal:
        if fast_base64 and type(value) is str:
            # The common precise-mode value: the unscaled integer at the schema's scale, so its
            # range is checked on the integer and no quantize is needed. Anything unusual (bad
            # base64, out of range) takes the general path below, which names the problem.
            try:
                unscaled = int.from_bytes(binascii.a2b_base64(value, strict_mode=True), "big", signed=True)
            except ValueError:  # binascii.Error, or text that is not ASCII at all
                pass
            else:
                if -digits_limit < unscaled < digits_limit:
                    return Decimal(unscaled).scaleb(-scale)
        number = parse(value)
        if not number.is_finite():
            raise ConversionError("non_finite_number", "decimal")
        try:
            quantized = number.quantize(quantum)
        except InvalidOperation:  # more digits than any context holds: far out of range
            raise ConversionError("decimal_out_of_range", f"decimal({precision},{scale})") from None
        if quantized != number:
            raise ConversionError("decimal_scale_exceeded", f"decimal with scale {scale}")
        if abs(quantized) >= limit:
            raise ConversionError("decimal_out_of_range", f"decimal({precision},{scale})")
        return quantized

    return conv


def _date(unit: TimeUnit) -> Converter:
    def conv(value: Any) -> date:
        if unit == "days" and type(value) is int and FIRST_DAY <= value <= LAST_DAY:
            return date.fromordinal(_EPOCH_ORDINAL + value)  # the common case, range checked on the int
        result = parse(value)
        if result.year not in _YEARS:
            raise ConversionError("date_out_of_range", "date")
        return result

    def parse(value: Any) -> date:
        try:
            if isinstance(value, datetime):
                return value.date()
            if isinstance(value, date):
                return value
            if isinstance(value, bool):
                raise ConversionError("wrong_type", "date")
            if isinstance(value, int):
                if unit == "days":
                    return _EPOCH_DAY + timedelta(days=value)
                return (_EPOCH + timedelta(seconds=value / UNIT_DIVISOR[unit])).date()
            if isinstance(value, str):
                return date.fromisoformat(value[:10])
        except OverflowError:
            raise ConversionError("date_out_of_range", "date") from None
        except ValueError:
            raise ConversionError("unparseable_date", "date") from None
        raise ConversionError("wrong_type", "date")

    return conv


def _timestamp(unit: TimeUnit, *, millis: bool) -> Converter:
    divisor = UNIT_DIVISOR.get(unit, 1_000_000)

    def conv(value: Any) -> datetime:
        if type(value) is int:  # the common case: range and truncation checked on the integer
            micros = value * 1_000_000 // divisor
            if _FIRST_MICRO <= micros < _END_MICRO:
                if millis:
                    micros -= micros % 1000
                return _EPOCH + timedelta(microseconds=micros)
        result = parse(value)
        if result.year not in _YEARS:
            raise ConversionError("date_out_of_range", "timestamp")
        if millis and result.microsecond % 1000:
            # The schema keeps milliseconds: truncate here so state, files and API agree.
            result = result.replace(microsecond=result.microsecond - result.microsecond % 1000)
        return result

    def parse(value: Any) -> datetime:
        try:
            if isinstance(value, datetime):
                return value if value.tzinfo else value.replace(tzinfo=UTC)
            if isinstance(value, bool):
                raise ConversionError("wrong_type", "timestamp")
            if isinstance(value, int):
                whole, frac = divmod(value, divisor)
                return _EPOCH + timedelta(seconds=whole, microseconds=frac * 1_000_000 // divisor)
            if isinstance(value, str):
                parsed = datetime.fromisoformat(value)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except OverflowError:
            raise ConversionError("date_out_of_range", "timestamp") from None
        except ValueError:
            raise ConversionError("unparseable_timestamp", "timestamp") from None
        raise ConversionError("wrong_type", "timestamp")

    return conv
