"""The Portal simulator's record check: JSON values back to Avro types, then the entity schema.

Each field's JSON value must have the form ``openapi.yaml`` gives it (the patterns come from the
same generator); it is decoded to the Python type the Avro schema holds (date, aware datetime,
Decimal, ...), must re-encode to exactly the same JSON value with the connector's own encoders
(so ``1.5`` for a ``decimal(12,2)`` or a timestamp without milliseconds is refused, not
normalised), and the decoded record must pass ``connector.model.validate``. A problem names the
record's index in the batch and the field, never the value.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.errors import SchemaValidationError
from connector.model import field_names, raw_schema, validate
from connector.sinks._cells import RuleError, encoders
from connector.sinks._portal_openapi import DATE_PATTERN, TIMESTAMP_PATTERN, decimal_pattern

__all__ = ["RecordError", "check_records"]

ERROR_LIMIT = 20
"""At most this many record errors are reported per batch."""
_INTEGER_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_VALIDATE_FIELD = re.compile(r"field '([^'.]+)")


class _Invalid(ValueError):  # noqa: N818 - internal signal, never leaves this module
    """A field's JSON value is not of its form; the message says what was expected."""


Decoder = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class RecordError:
    """One field of one record that breaks the schema: where, and which rule."""

    record: int
    field: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "pointer": f"/records/{self.record}/{self.field}" if self.field else f"/records/{self.record}",
            "record": self.record,
            "field": self.field,
            "detail": self.detail,
        }


def check_records(entity: str, records: list[Any]) -> list[RecordError]:
    """The first ``ERROR_LIMIT`` problems of ``records`` (JSON values) as ``entity`` records."""
    errors: list[RecordError] = []
    for index, record in enumerate(records):
        errors.extend(_check(entity, index, record))
        if len(errors) >= ERROR_LIMIT:
            break
    return errors[:ERROR_LIMIT]


def _check(entity: str, index: int, record: Any) -> list[RecordError]:
    if not isinstance(record, dict):
        return [RecordError(index, "", "expected a JSON object")]
    field_decoders = _decoders(entity)
    field_encoders = dict(encoders(entity, for_csv=False))
    problems = [
        RecordError(index, "", f"unknown field {name[:64]!r}, not in the {entity} schema")
        for name in record
        if name not in field_decoders
    ]
    decoded: dict[str, Any] = {}
    for name, decode in field_decoders.items():
        if name not in record:
            problems.append(RecordError(index, name, "missing (every field is sent, null included)"))
            continue
        try:
            value = decode(record[name])
            again = field_encoders[name](value)
        except (_Invalid, RuleError) as exc:
            problems.append(RecordError(index, name, str(exc)))
            continue
        except (TypeError, ValueError, ArithmeticError):
            problems.append(RecordError(index, name, "cannot be read as its schema type"))
            continue
        if again != record[name]:
            problems.append(RecordError(index, name, "not in the canonical form the schema gives"))
            continue
        decoded[name] = value
    if problems:
        return problems
    try:
        validate(entity, decoded)
    except SchemaValidationError as exc:
        found = _VALIDATE_FIELD.search(str(exc))
        return [RecordError(index, found.group(1) if found else "", str(exc))]
    return []


@functools.cache
def _decoders(entity: str) -> dict[str, Decoder]:
    types = {field["name"]: field["type"] for field in raw_schema(entity)["fields"]}
    return {name: _decoder(types[name]) for name in field_names(entity)}


def _decoder(field_type: Any) -> Decoder:
    nullable = isinstance(field_type, list) and "null" in field_type
    branch = next(t for t in field_type if t != "null") if isinstance(field_type, list) else field_type
    kind = branch if isinstance(branch, str) else branch.get("logicalType") or branch.get("type")
    decode = _value_decoder(kind, branch)

    def decode_field(value: Any) -> Any:
        if value is None:
            if nullable:
                return None
            raise _Invalid("is null but required")
        return decode(value)

    return decode_field


def _value_decoder(kind: str, branch: Any) -> Decoder:
    if kind in ("string", "enum"):
        symbols = frozenset(branch["symbols"]) if kind == "enum" else None
        return functools.partial(_string, symbols)
    if kind == "boolean":
        return _boolean
    if kind in _INTEGER_RANGE:
        return functools.partial(_integer, *_INTEGER_RANGE[kind])
    if kind == "date":
        return _date
    if kind == "timestamp-millis":
        return _timestamp
    if kind == "decimal":
        pattern = re.compile(decimal_pattern(int(branch["precision"]), int(branch.get("scale", 0))))
        return functools.partial(_decimal, pattern, int(branch["precision"]), int(branch.get("scale", 0)))
    raise _Invalid(f"type {kind!r} is not supported")  # pragma: no cover - the generator refuses it first


def _string(symbols: frozenset[str] | None, value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("expected a string")
    if symbols is not None and value not in symbols:
        raise _Invalid("expected one of the symbols of its enum")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("expected true or false")
    return value


def _integer(low: int, high: int, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _Invalid(f"expected an integer from {low} to {high}")
    return value


_DATE = re.compile(DATE_PATTERN)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


def _date(value: Any) -> dt.date:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise _Invalid("expected a date string YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _Invalid("expected a calendar date YYYY-MM-DD") from None


def _timestamp(value: Any) -> dt.datetime:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise _Invalid("expected a UTC timestamp string YYYY-MM-DDTHH:MM:SS.mmmZ")
    try:
        return dt.datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise _Invalid("expected a valid UTC timestamp YYYY-MM-DDTHH:MM:SS.mmmZ") from None


def _decimal(pattern: re.Pattern[str], precision: int, scale: int, value: Any) -> Decimal:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _Invalid(f"expected a decimal({precision},{scale}) string with exactly {scale} places")
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise _Invalid(f"expected a decimal({precision},{scale}) string") from None
