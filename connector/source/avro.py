"""Debezium Avro (Confluent ``AvroConverter``) -> ``ChangeEvent``.

Each key and value is Confluent's wire format: magic byte ``0``, the writer schema's id as a
4-byte big-endian integer, then the Avro binary. Schemas come from the Schema Registry
through ``confluent_kafka``'s ``SchemaRegistryClient`` and are parsed once per id by
``RegistrySchemas``, which also precomputes the id's converter plans.

Two kinds of failure, kept apart because the runner treats them oppositely:

- the registry cannot be asked (down, 5xx, timeout) -> ``SchemaRegistryUnavailable``, a
  ``TransientError``: back off, do not advance offsets, do not dead-letter;
- the message is bad (wrong magic byte, too short, an id the registry does not have,
  bytes that are not the writer schema's record) -> a ``DecodeError`` subclass: dead-letter.

Before parsing, every ``logicalType`` in a writer schema is renamed so fastavro returns the
raw int/bytes; ``_logical`` then converts them by ``connect.name`` / logical type, column by
column, as for JSON (an out-of-range date is ``date_out_of_range`` naming the column, not an
anonymous fastavro error). fastavro's own messages quote values, so none is passed on.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import fastavro
import orjson

from connector.errors import DecodeError
from connector.source._envelope import DEFAULT_PLACEHOLDER, Envelope, Headers
from connector.source._logical import Plan, avro_plan
from connector.source.debezium import JsonKeyParser
from connector.source.events import ChangeEvent, Position
from connector.source.exceptions import SchemaRegistryUnavailable, UnknownSchemaError

__all__ = ["DebeziumAvroDecoder", "RegistrySchemas", "WriterSchema", "split_wire_format"]

MAGIC_BYTE: Final = 0
HEADER_SIZE: Final = 5
_LOGICAL: Final = "logicalType"
_RENAMED: Final = "connector.logicalType"


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """One registry id, parsed: ``plan`` types the record's own fields (keys), ``row_plans``
    the ``before``/``after`` rows of a Debezium envelope (None if it is not one)."""

    schema_id: int
    parsed: Any
    plan: Plan
    row_plans: tuple[Plan, Plan] | None


def _rename_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {(_RENAMED if k == _LOGICAL else k): _rename_logical(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_logical(v) for v in node]
    return node


def _row_record(field: Mapping[str, Any] | None, named: Mapping[str, Any]) -> Mapping[str, Any]:
    ftype = field.get("type") if field else None
    if isinstance(ftype, list):
        ftype = next((t for t in ftype if t != "null"), None)
    if isinstance(ftype, str):
        ftype = named.get(ftype)
    return ftype if isinstance(ftype, Mapping) else {}


def _writer(schema_id: int, schema_str: str) -> WriterSchema:
    try:
        parsed = fastavro.parse_schema(_rename_logical(orjson.loads(schema_str)))
    except Exception:  # orjson or fastavro: the registry holds something we cannot use
        raise DecodeError(
            f"schema id {schema_id} is not a valid Avro schema", reason="invalid_schema"
        ) from None
    named = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return WriterSchema(schema_id, parsed, {}, None)
    plan = avro_plan(parsed, named, logical_key=_RENAMED)
    fields = {f["name"]: f for f in parsed["fields"]}
    row_plans = None
    if "before" in fields or "after" in fields:
        row_plans = (
            avro_plan(_row_record(fields.get("before"), named), named, logical_key=_RENAMED),
            avro_plan(_row_record(fields.get("after"), named), named, logical_key=_RENAMED),
        )
    return WriterSchema(schema_id, parsed, plan, row_plans)


class RegistrySchemas:
    """Writer schemas by id: fetched once through ``SchemaRegistryClient``, kept for good.

    A registry id names one immutable schema, so the cache never expires. Pass a ready client
    (tests: ``SchemaRegistryClient.new_client({"url": "mock://..."})``) or a URL plus client
    config (``basic.auth.user.info``, ``max.retries``, ...).
    """

    def __init__(
        self, client: Any = None, *, url: str | None = None, config: Mapping[str, Any] | None = None
    ) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if client is None:
            if not url:
                raise ValueError("RegistrySchemas needs a client or a url")
            client = SchemaRegistryClient.new_client({**(config or {}), "url": url})
        self._client = client
        self._registry_error: type[Exception] = SchemaRegistryError
        self._cache: dict[int, WriterSchema | DecodeError] = {}

    def get(self, schema_id: int) -> WriterSchema:
        """The parsed schema; ``UnknownSchemaError`` / ``SchemaRegistryUnavailable`` otherwise."""
        found = self._cache.get(schema_id)
        if found is None:
            found = self._cache[schema_id] = self._fetch(schema_id)
        if isinstance(found, DecodeError):
            raise DecodeError(str(found), reason=found.reason)
        return found

    def _fetch(self, schema_id: int) -> WriterSchema | DecodeError:
        try:
            schema = self._client.get_schema(schema_id)
        except self._registry_error as exc:
            status = getattr(exc, "http_status_code", None)
            if status == 404:  # not cached: the id may yet be registered (and is cheap to ask)
                raise UnknownSchemaError(f"schema id {schema_id} is not in the registry") from None
            raise SchemaRegistryUnavailable(
                f"schema registry answered HTTP {status} for schema id {schema_id}"
            ) from exc
        except Exception as exc:  # transport errors: connection refused, timeout, TLS, DNS
            raise SchemaRegistryUnavailable(
                f"schema registry unreachable fetching schema id {schema_id} ({type(exc).__name__})"
            ) from exc
        schema_type = getattr(schema, "schema_type", "AVRO") or "AVRO"
        if schema_type != "AVRO":
            return DecodeError(
                f"schema id {schema_id} is {schema_type}, not AVRO", reason="unsupported_schema_type"
            )
        try:
            return _writer(schema_id, schema.schema_str)
        except DecodeError as exc:
            return exc


def split_wire_format(raw: bytes, where: str) -> int:
    """The schema id of a Confluent-framed message; ``DecodeError`` if it is not framed."""
    if len(raw) < HEADER_SIZE:
        raise DecodeError(
            f"{where} is shorter than the 5-byte Schema Registry header", reason="truncated_message"
        )
    if raw[0] != MAGIC_BYTE:
        raise DecodeError(
            f"{where} does not start with the Schema Registry magic byte 0", reason="wrong_magic_byte"
        )
    return int.from_bytes(raw[1:HEADER_SIZE], "big")


def _read(raw: bytes, writer: WriterSchema, where: str) -> Any:
    stream = io.BytesIO(raw)
    stream.seek(HEADER_SIZE)
    try:
        record = fastavro.schemaless_reader(stream, writer.parsed, None)
    except Exception:  # truncated or foreign bytes fail in many ways inside fastavro
        raise DecodeError(
            f"{where} is not a record of schema id {writer.schema_id}", reason="invalid_avro"
        ) from None
    if stream.tell() != len(raw):
        raise DecodeError(f"{where} has trailing bytes after its record", reason="invalid_avro")
    return record


def _zigzag_varints(data: bytes) -> bytes:
    """Avro's encoding of ``list(data)`` items: the int-array shape of the placeholder."""
    out = bytearray()
    for n in data:
        z = n << 1  # zigzag of a non-negative int
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
    return bytes(out)


class DebeziumAvroDecoder:
    """Decodes Debezium Avro messages; one instance per consumer (schemas cached per id)."""

    def __init__(
        self,
        *,
        registry: RegistrySchemas | None = None,
        schema_registry_url: str | None = None,
        schema_registry_config: Mapping[str, Any] | None = None,
        schema_registry_client: Any = None,
        unavailable_placeholder: str = DEFAULT_PLACEHOLDER,
    ) -> None:
        self._registry = registry or RegistrySchemas(
            schema_registry_client, url=schema_registry_url, config=schema_registry_config
        )
        self._envelope = Envelope(JsonKeyParser(), unavailable_placeholder=unavailable_placeholder)
        placeholder = self._envelope.placeholder.raw
        self._markers = (placeholder, _zigzag_varints(placeholder))

    def decode(
        self, key: bytes | None, value: bytes | None, headers: Headers | None, position: Position
    ) -> ChangeEvent | None:
        """The change in one message; None for a tombstone; raises as the module says."""
        if value is None:
            return None  # the tombstone after a delete, not a second delete
        writer = self._registry.get(split_wire_format(value, "value"))
        payload = _read(value, writer, "value")
        if not isinstance(payload, dict):
            raise DecodeError("value is not an Avro record", reason="invalid_envelope")
        if key is None:
            raise DecodeError("message key is null", reason="missing_key")
        try:
            key_writer = self._registry.get(split_wire_format(key, "key"))
            columns = _read(key, key_writer, "key")
        except UnknownSchemaError:
            raise
        except DecodeError as exc:  # the key's own rule stays in the message
            raise DecodeError(str(exc), reason="invalid_key") from None
        if not isinstance(columns, dict):
            raise DecodeError("key is not an Avro record of key columns", reason="invalid_key")
        m = self._markers
        scan = m[0] in value or m[1] in value
        return self._envelope.event(
            payload,
            columns,
            headers,
            position,
            row_plans=writer.row_plans,
            key_plan=key_writer.plan,
            scan_toast=scan,
        )
