"""Debezium Avro through a Schema Registry (confluent_kafka's ``mock://`` client and stubs)."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connector.errors import BadInputError, TransientError
from connector.source import (
    DebeziumAvroDecoder,
    DebeziumJsonDecoder,
    DecodeError,
    Op,
    Position,
    RegistrySchemas,
    SchemaRegistryUnavailable,
    Transaction,
    UnknownSchemaError,
)
from tests.unit.source.source_helpers import (
    CANARY,
    assert_no_canary,
    avro_schema,
    confluent_frame,
    families_envelope,
    families_row,
    message,
)

POSITION = Position("carecloud.public.families", 0, 2)
KEY_SCHEMA = avro_schema("pg_families_key.avsc")
VALUE_SCHEMA = avro_schema("pg_families_value.avsc")
PLACEHOLDER = "__debezium_unavailable_value"


class Registry:
    """A mock registry with the families key and value schemas registered."""

    def __init__(self, value_schema: dict[str, Any] = VALUE_SCHEMA) -> None:
        self.client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        self.key_id = self.register("carecloud.public.families-key", KEY_SCHEMA)
        self.value_id = self.register("carecloud.public.families-value", value_schema)
        self.value_schema = value_schema

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        schema_id: int = self.client.register_schema(subject, Schema(orjson.dumps(schema).decode(), "AVRO"))
        return schema_id

    def key(self, id_: int = 1003) -> bytes:
        return confluent_frame(self.key_id, KEY_SCHEMA, {"id": id_})

    def value(self, envelope: dict[str, Any]) -> bytes:
        return confluent_frame(self.value_id, self.value_schema, envelope)

    def decoder(self, **options: Any) -> DebeziumAvroDecoder:
        return DebeziumAvroDecoder(schema_registry_client=self.client, **options)


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_avro_create_decodes_like_the_json_fixture(registry: Registry) -> None:
    avro = registry.decoder().decode(
        registry.key(), registry.value(families_envelope("c", after=families_row())), None, POSITION
    )
    msg = message("pg_create.json")
    json = DebeziumJsonDecoder().decode(msg.key, msg.value, msg.headers, msg.position)
    assert avro is not None
    assert json is not None
    assert (avro.table, avro.op, avro.key, avro.version) == (json.table, json.op, json.key, json.version)
    assert avro.transaction == json.transaction == Transaction("779:34389512", 1, 1)
    assert avro.row.pop("photo") == b"\x89PNG\r\n\x1a\n"
    json.row.pop("photo")
    assert avro.row == json.row
    assert avro.row["deductible"] == Decimal("3000.00")
    assert avro.row["balance"] == Decimal("-1250.125")


def test_avro_toast_placeholders_in_every_shape(registry: Registry) -> None:
    row = families_row(notes=PLACEHOLDER, photo=PLACEHOLDER.encode(), tags=[PLACEHOLDER])
    event = registry.decoder().decode(
        registry.key(), registry.value(families_envelope("u", after=row)), None, POSITION
    )
    assert event is not None
    assert event.op is Op.UPDATE
    assert event.unavailable == frozenset({"notes", "photo", "tags"})


def test_avro_delete_tombstone_and_key_headers(registry: Registry) -> None:
    decoder = registry.decoder()
    before = {**dict.fromkeys(families_row()), "id": 1003, "family_name": ""}
    headers = [("__debezium.newkey", b'{"id":2003}')]
    delete = decoder.decode(
        registry.key(), registry.value(families_envelope("d", before=before)), headers, POSITION
    )
    assert delete is not None
    assert (delete.op, delete.row["id"], delete.new_key) == (Op.DELETE, 1003, {"id": 2003})
    assert decoder.decode(registry.key(), None, None, POSITION) is None


def test_connect_logical_types_and_named_references() -> None:
    schema = orjson.loads(orjson.dumps(VALUE_SCHEMA))
    fields = schema["fields"][0]["type"][1]["fields"]
    fields += [
        {
            "name": "born",
            "type": [
                "null",
                {
                    "type": "int",
                    "connect.version": 1,
                    "connect.name": "org.apache.kafka.connect.data.Date",
                    "logicalType": "date",
                },
            ],
            "default": None,
        },
        {
            "name": "seen",
            "type": [
                "null",
                {
                    "type": "long",
                    "connect.version": 1,
                    "connect.name": "org.apache.kafka.connect.data.Timestamp",
                    "logicalType": "timestamp-millis",
                },
            ],
            "default": None,
        },
        {"name": "credit", "type": ["null", "io.debezium.data.VariableScaleDecimal"], "default": None},
    ]
    registry = Registry(schema)
    seen = dt.datetime(2024, 11, 4, 17, 30, 5, 123000, tzinfo=dt.UTC)
    row = families_row(born=dt.date(2016, 5, 14), seen=seen, credit={"scale": 1, "value": b"\x01"})
    event = registry.decoder().decode(
        registry.key(), registry.value(families_envelope("c", after=row)), None, POSITION
    )
    assert event is not None
    assert event.row["born"] == dt.date(2016, 5, 14)
    assert event.row["seen"] == seen
    assert event.row["credit"] == Decimal("0.1")


def test_schemas_are_fetched_once_per_id(registry: Registry) -> None:
    calls: list[int] = []

    class Counting:
        def get_schema(self, schema_id: int) -> Any:
            calls.append(schema_id)
            return registry.client.get_schema(schema_id)

    decoder = DebeziumAvroDecoder(registry=RegistrySchemas(Counting()))
    for _ in range(3):
        decoder.decode(
            registry.key(), registry.value(families_envelope("c", after=families_row())), None, POSITION
        )
    assert sorted(calls) == sorted([registry.key_id, registry.value_id])


def reject(decoder: DebeziumAvroDecoder, key: bytes | None, value: bytes | None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decoder.decode(key, value, None, POSITION)
    assert isinstance(info.value, BadInputError)
    assert_no_canary(info.value)
    return info.value


def test_wire_format_errors(registry: Registry) -> None:
    decoder = registry.decoder()
    good = registry.value(families_envelope("c", after=families_row(family_name=CANARY)))
    assert reject(decoder, registry.key(), b"\x01" + good[1:]).reason == "wrong_magic_byte"
    assert reject(decoder, registry.key(), b"{" + CANARY.encode()).reason == "wrong_magic_byte"
    assert reject(decoder, registry.key(), good[:4]).reason == "truncated_message"
    assert reject(decoder, registry.key(), b"").reason == "truncated_message"
    assert reject(decoder, registry.key(), good[:-3]).reason == "invalid_avro"
    assert reject(decoder, registry.key(), good + b"\x00").reason == "invalid_avro"
    assert reject(decoder, None, good).reason == "missing_key"
    assert reject(decoder, b"\x07" + registry.key()[1:], good).reason == "invalid_key"
    assert reject(decoder, registry.key()[:-1] + b"\x80", good).reason == "invalid_key"


def test_unknown_schema_id_is_bad_input(registry: Registry) -> None:
    decoder = registry.decoder()
    good = registry.value(families_envelope("c", after=families_row()))
    unknown = b"\x00" + (9999).to_bytes(4, "big") + good[5:]
    error = reject(decoder, registry.key(), unknown)
    assert isinstance(error, UnknownSchemaError)
    assert error.reason == "unknown_schema_id"
    unknown_key = b"\x00" + (9998).to_bytes(4, "big") + registry.key()[5:]
    assert isinstance(reject(decoder, unknown_key, good), UnknownSchemaError)


def test_out_of_range_date_names_the_column(registry: Registry) -> None:
    row = families_row(coverage_start=10**9, family_name=CANARY)
    error = reject(registry.decoder(), registry.key(), registry.value(families_envelope("c", after=row)))
    assert error.reason == "date_out_of_range"
    assert "after.coverage_start" in str(error)


def test_key_mismatch(registry: Registry) -> None:
    value = registry.value(families_envelope("c", after=families_row(1003, family_name=CANARY)))
    assert reject(registry.decoder(), registry.key(4242), value).reason == "key_mismatch"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_registry_is_transient_not_bad_input(registry: Registry) -> None:
    decoder = DebeziumAvroDecoder(
        schema_registry_url=f"http://127.0.0.1:{_closed_port()}", schema_registry_config={"max.retries": 0}
    )
    with pytest.raises(SchemaRegistryUnavailable) as info:
        decoder.decode(
            registry.key(), registry.value(families_envelope("c", after=families_row())), None, POSITION
        )
    assert isinstance(info.value, TransientError)
    assert not isinstance(info.value, BadInputError)


class Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_schema(self, schema_id: int) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SchemaRegistryError(503, 50301, "unavailable"), SchemaRegistryUnavailable),
        (SchemaRegistryError(500, 50001, "store error"), SchemaRegistryUnavailable),
        (TimeoutError("read timed out"), SchemaRegistryUnavailable),
        (SchemaRegistryError(404, 40403, "Schema not found"), UnknownSchemaError),
    ],
)
def test_registry_failures_are_classified(error: Exception, expected: type[Exception]) -> None:
    decoder = DebeziumAvroDecoder(registry=RegistrySchemas(Failing(error)))
    with pytest.raises(expected):
        decoder.decode(b"\x00\x00\x00\x00\x01\x02", b"\x00\x00\x00\x00\x02\x02", None, POSITION)


def test_registry_recovers_after_being_unavailable(registry: Registry) -> None:
    flaky = Failing(SchemaRegistryError(503, 50301, "unavailable"))
    schemas = RegistrySchemas(flaky)
    with pytest.raises(SchemaRegistryUnavailable):
        schemas.get(registry.value_id)
    flaky.get_schema = registry.client.get_schema  # type: ignore[method-assign]
    assert schemas.get(registry.value_id).row_plans is not None


def test_unusable_registry_schemas_are_bad_input(registry: Registry) -> None:
    class Stub:
        def __init__(self, schema_str: str, schema_type: str = "AVRO") -> None:
            self.schema_str, self.schema_type = schema_str, schema_type

    class Holding:
        def get_schema(self, schema_id: int) -> Stub:
            return Stub('{"type":"nope"}') if schema_id == 1 else Stub("{}", "PROTOBUF")

    schemas = RegistrySchemas(Holding())
    with pytest.raises(DecodeError) as info:
        schemas.get(1)
    assert info.value.reason == "invalid_schema"
    with pytest.raises(DecodeError) as info:
        schemas.get(2)
    assert info.value.reason == "unsupported_schema_type"
