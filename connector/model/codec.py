"""Validate, encode and decode records with the entity and envelope schemas.

Records are plain dicts keyed by field name, holding Python values: ``str`` (strings and enum
symbols), ``int``, ``bool``, ``datetime.date`` (``date``), timezone-aware ``datetime.datetime``
(``timestamp-millis``; sub-millisecond digits are dropped on encode) and ``decimal.Decimal``
(``decimal(12,2)``); an optional field may be left out or set to ``None``.

fastavro's own error messages quote the offending value, and these records are families' health
claims, so no fastavro message leaves this module: ``validate`` walks the schema itself and
names the entity, the field and the expected type; ``encode`` and ``decode`` replace any
fastavro error with one of their own.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
from collections.abc import Mapping
from typing import Any, NoReturn

from fastavro import schemaless_reader, schemaless_writer

from connector.errors import DecodeError, SchemaValidationError
from connector.model.schemas import ENTITY_NAMES, ENTITY_NAMESPACE, ENVELOPE_NAME, schema

__all__ = ["decode", "encode", "validate"]

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "bytes": (bytes, bytearray),
    "double": (int, float),
    "float": (int, float),
}
_ENTITY_FULLNAMES = {f"{ENTITY_NAMESPACE}.{name}": name for name in ENTITY_NAMES}


def validate(name: str, record: Mapping[str, Any]) -> None:
    """Raise ``SchemaValidationError`` unless ``record`` conforms to the schema ``name``.

    Stricter than Avro where Avro would silently change the data: unknown fields, naive
    datetimes (fastavro reads them as local time), datetimes in date fields and decimals with
    more places than the scale are rejected. A ``ChangeEnvelope`` must also be consistent:
    ``Payload`` is a record of ``EntityType`` with the envelope's ``EntityId`` on ``UPSERT``, and
    null on ``DELETE``. The message names the schema, the field and the expected type, never the
    value. An unknown ``name`` raises ``UnknownSchemaError`` (a ``ConfigError``).
    """
    parsed = schema(name)
    if name != ENVELOPE_NAME:
        _check_record(record, parsed, "", name)
        return
    _check_record(record, parsed, "", name, skip="Payload")
    _check_payload(record)


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    """Schemaless Avro binary of ``record`` (no header, no schema id), for the state topic.

    The fast path leaves the checking to fastavro, which is looser than ``validate``: it writes
    a naive datetime as local time, a datetime in a date field as its date, an int as a boolean,
    and does not enforce a decimal's precision or an envelope's rules. So records must have
    passed ``validate`` where they entered (the mapping stage). Only when fastavro refuses a
    record is ``validate`` run, to raise a ``SchemaValidationError`` that names the field. An
    envelope's ``Payload`` is written as the record type its ``EntityType`` names.
    """
    parsed = schema(name)
    datum: Mapping[str, Any] = record
    if name == ENVELOPE_NAME:
        datum = _tag_payload(record)
    buffer = io.BytesIO()
    try:
        schemaless_writer(
            buffer, parsed, datum, strict_allow_default=True, disable_tuple_notation=name != ENVELOPE_NAME
        )
    except Exception as exc:  # fastavro raises many types, some quoting the value: keep none of them
        failure = type(exc).__name__
    else:
        return buffer.getvalue()
    validate(name, record)  # outside the except block, so fastavro's error is not chained
    raise SchemaValidationError(f"{name}: the record cannot be encoded ({failure})")


def decode(name: str, data: bytes) -> dict[str, Any]:
    """The record that ``encode(name, ...)`` turned into ``data``; ``DecodeError`` if it is not one.

    Dates come back as ``datetime.date``, timestamps as UTC ``datetime.datetime``, decimals as
    ``decimal.Decimal``; optional fields are always present (``None`` when unset).
    """
    parsed = schema(name)
    stream = io.BytesIO(data)
    failure: str | None
    try:
        record = schemaless_reader(stream, parsed, None)
    except Exception as exc:  # truncated or foreign bytes fail in many ways inside fastavro
        failure = type(exc).__name__
    else:
        failure = None
    if failure is not None:  # raised outside the except block: fastavro's error is not chained
        raise DecodeError(f"{name}: the bytes are not a {name} record ({failure})")
    left = len(data) - stream.tell()
    if left:
        raise DecodeError(f"{name}: {left} trailing byte(s) after the record")
    if not isinstance(record, dict):  # pragma: no cover - a record schema always reads as a dict
        raise DecodeError(f"{name}: the bytes did not decode to a record")
    return record


def _tag_payload(envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    """Use fastavro's (type name, record) notation so the union branch is chosen, not guessed."""
    payload = envelope.get("Payload")
    entity = envelope.get("EntityType")
    if payload is None or not isinstance(entity, str) or entity not in ENTITY_NAMES:
        return envelope
    return {**envelope, "Payload": (f"{ENTITY_NAMESPACE}.{entity}", payload)}


def _check_payload(envelope: Mapping[str, Any]) -> None:
    payload = envelope.get("Payload")
    if envelope["Operation"] == "DELETE":
        if payload is not None:
            _fail(ENVELOPE_NAME, "Payload", "expected null when Operation is DELETE, got a record")
        return
    entity = envelope["EntityType"]
    if payload is None:
        _fail(ENVELOPE_NAME, "Payload", f"expected a {entity} record when Operation is UPSERT, got null")
    _check_record(payload, schema(entity), "Payload", f"{ENVELOPE_NAME} with a {entity} payload")
    if payload["EntityId"] != envelope["EntityId"]:
        _fail(ENVELOPE_NAME, "Payload.EntityId", "expected the envelope's EntityId, got a different one")


def _check_record(
    value: Any, record_schema: dict[str, Any], path: str, label: str, skip: str | None = None
) -> None:
    if not isinstance(value, Mapping):
        _fail(label, path, f"expected {_describe(record_schema)}, got {type(value).__name__}")
    known: set[str] = set()
    for field in record_schema["fields"]:
        field_name = field["name"]
        known.add(field_name)
        field_path = f"{path}.{field_name}" if path else field_name
        if field_name == skip:
            continue
        if field_name not in value:
            if "default" not in field:
                _fail(label, field_path, f"missing; expected {_describe(field['type'])}")
            continue
        _check(value[field_name], field["type"], field_path, label)
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        where = f" in {path!r}" if path else ""
        raise SchemaValidationError(
            f"{label}: unknown field(s){where} not in the schema: {', '.join(unknown)}"
        )


def _check(value: Any, avro_type: Any, path: str, label: str) -> None:
    """Raise for the first way ``value`` breaks ``avro_type`` (a fastavro-parsed type)."""
    if isinstance(avro_type, list):
        _check_union(value, avro_type, path, label)
        return
    avro_type = _resolve(avro_type)
    if value is None:
        if avro_type != "null":
            _fail(label, path, f"expected {_describe(avro_type)}, got null")
        return
    kind = avro_type["type"] if isinstance(avro_type, dict) else avro_type
    if kind == "record":
        _check_record(value, avro_type, path, label)
        return
    problem = _problem(value, avro_type, kind)
    if problem is not None:
        _fail(label, path, f"expected {_describe(avro_type)}, got {problem}")


def _check_union(value: Any, branches: list[Any], path: str, label: str) -> None:
    if value is None and "null" in branches:
        return
    candidates = [branch for branch in branches if branch != "null"]
    if len(candidates) == 1:  # the common ["null", T]: report T's own problem
        _check(value, candidates[0], path, label)
        return
    for branch in candidates:
        try:
            _check(value, branch, path, label)
        except SchemaValidationError:
            continue
        return
    _fail(label, path, f"expected {_describe(branches)}, got {type(value).__name__}")


def _problem(value: Any, avro_type: Any, kind: str) -> str | None:
    """What is wrong with a non-null ``value`` for a non-record type, or None; never the value."""
    logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
    got = type(value).__name__
    if logical == "date":
        ok = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
        return None if ok else got
    if logical in ("timestamp-millis", "timestamp-micros"):
        if not isinstance(value, dt.datetime):
            return got
        return None if value.utcoffset() is not None else "a naive datetime"
    if logical == "decimal":
        return _decimal_problem(value, avro_type["precision"], avro_type.get("scale", 0))
    if kind == "enum":
        if not isinstance(value, str):
            return got
        return None if value in avro_type["symbols"] else "a string that is not one of the symbols"
    if kind in _INT_RANGE:
        if not isinstance(value, int) or isinstance(value, bool):
            return got
        low, high = _INT_RANGE[kind]
        return None if low <= value <= high else f"an int outside the {kind} range"
    if isinstance(value, bool) and kind != "boolean":  # bool is an int subclass: not a number here
        return got
    return None if isinstance(value, _PYTHON_TYPES.get(kind, ())) else got


def _decimal_problem(value: Any, precision: int, scale: int) -> str | None:
    if not isinstance(value, decimal.Decimal):
        return type(value).__name__
    if not value.is_finite():
        return "a Decimal that is not a finite number"
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if -exponent > scale:
        return f"a Decimal with more than {scale} digits after the decimal point"
    if len(digits) + exponent > precision - scale and any(digits):
        return f"a Decimal with more than {precision - scale} digits before the decimal point"
    return None


def _describe(avro_type: Any) -> str:
    """A short human name for a parsed Avro type: ``date``, ``decimal(12,2)``, ``enum Gender``."""
    if isinstance(avro_type, list):
        return " or ".join(_describe(branch) for branch in avro_type)
    avro_type = _resolve(avro_type)
    if isinstance(avro_type, str):
        return avro_type
    logical = avro_type.get("logicalType")
    if logical == "decimal":
        return f"decimal({avro_type['precision']},{avro_type.get('scale', 0)})"
    if logical in ("timestamp-millis", "timestamp-micros"):
        return f"{logical} (timezone-aware datetime)"
    if logical is not None:
        return str(logical)
    kind = str(avro_type["type"])
    if kind in ("enum", "record"):
        short = str(avro_type["name"]).rsplit(".", 1)[-1]
        symbols = f" ({', '.join(avro_type['symbols'])})" if kind == "enum" else ""
        return f"{kind} {short}{symbols}"
    return kind


def _resolve(avro_type: Any) -> Any:
    """The definition of a named type referred to by its full name; other types as they are."""
    if not isinstance(avro_type, str) or "." not in avro_type:
        return avro_type
    if avro_type in _ENTITY_FULLNAMES:
        return schema(_ENTITY_FULLNAMES[avro_type])
    return schema(ENVELOPE_NAME)["__named_schemas"][avro_type]  # the names fastavro parsed


def _fail(label: str, path: str, problem: str) -> NoReturn:
    raise SchemaValidationError(f"{label}: field {path!r}: {problem}")
