"""The source stage's public surface and the decoder factory."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

import connector.source
from connector.errors import ConfigError
from connector.source import (
    DebeziumAvroDecoder,
    DebeziumJsonDecoder,
    Decoder,
    NativeEnvelopeDecoder,
    make_decoder,
)
from connector.source.exceptions import SchemaRegistryUnavailable, UnknownSchemaError


def test_exported_names_are_what_was_meant() -> None:
    assert sorted(connector.source.__all__) == sorted(
        [
            "FORMATS",
            "ChangeEvent",
            "DebeziumAvroDecoder",
            "DebeziumJsonDecoder",
            "DecodeError",
            "Decoder",
            "Format",
            "Headers",
            "NativeEnvelopeDecoder",
            "Op",
            "Placeholder",
            "Position",
            "RegistrySchemas",
            "SchemaRegistryUnavailable",
            "Transaction",
            "UnknownSchemaError",
            "Version",
            "make_decoder",
        ]
    )
    for name in connector.source.__all__:
        assert getattr(connector.source, name) is not None


def test_error_classes() -> None:
    assert issubclass(UnknownSchemaError, connector.source.DecodeError)
    assert UnknownSchemaError("x").reason == "unknown_schema_id"
    assert not issubclass(SchemaRegistryUnavailable, connector.source.DecodeError)


def test_factory_builds_each_format() -> None:
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    json_decoder: Decoder = make_decoder("debezium-json", unavailable_placeholder="__x__")
    assert isinstance(json_decoder, DebeziumJsonDecoder)
    avro = make_decoder("debezium-avro", schema_registry_client=client, unavailable_placeholder="__x__")
    assert isinstance(avro, DebeziumAvroDecoder)
    assert isinstance(
        make_decoder("debezium-avro", schema_registry_url="mock://factory"), DebeziumAvroDecoder
    )
    native = make_decoder("native-avro", unavailable_placeholder="ignored", schema_registry_url="http://x")
    assert isinstance(native, NativeEnvelopeDecoder)


def test_factory_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="format"):
        make_decoder("protobuf")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unavailable_placeholdr"):
        make_decoder("debezium-json", unavailable_placeholdr="x")
    with pytest.raises(ConfigError, match="schema_registry_url"):
        make_decoder("debezium-avro")


@pytest.mark.parametrize("setting", ["", "hex:", "hex:zz"])
def test_bad_placeholder_settings_fail_at_start_up(setting: str) -> None:
    with pytest.raises(ConfigError, match="unavailable_placeholder"):
        make_decoder("debezium-json", unavailable_placeholder=setting)
