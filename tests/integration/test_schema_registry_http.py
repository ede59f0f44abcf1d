"""Debezium Avro decoded through the project's HTTP Schema Registry, over a real socket."""

from __future__ import annotations

import datetime as dt
import io
import json
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.devtools.schema_registry import SchemaRegistryServer
from connector.errors import BadInputError, TransientError
from connector.source import (
    DecodeError,
    Op,
    Position,
    SchemaRegistryUnavailable,
    UnknownSchemaError,
    make_decoder,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"
KEY_SCHEMA = json.loads((FIXTURES / "pg_families_key.avsc").read_text())
VALUE_SCHEMA = json.loads((FIXTURES / "pg_families_value.avsc").read_text())
POSITION = Position("carecloud.public.families", 0, 12)
SOURCE = {
    "version": "3.1.3.Final",
    "connector": "postgresql",
    "name": "carecloud",
    "ts_ms": 1730741405000,
    "snapshot": "false",
    "db": "claims",
    "sequence": '["34389280","34389512"]',
    "ts_us": None,
    "ts_ns": None,
    "schema": "public",
    "table": "families",
    "txId": 779,
    "lsn": 34389512,
    "xmin": None,
}


def frame(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def envelope(op: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": SOURCE,
        "transaction": None,
        "op": op,
        "ts_ms": 1730741405873,
        "ts_us": None,
        "ts_ns": None,
    }


def row(id_: int) -> dict[str, Any]:
    return {
        "id": id_,
        "family_name": "Nguyen",
        "status": "ACTIVE",
        "coverage_start": 19723,
        "deductible": Decimal("3000.00"),
        "balance": None,
        "enrolled_at": 1702632600123456,
        "updated_at": "2024-11-04T17:30:05Z",
        "notes": None,
        "photo": None,
        "tags": ["hsa"],
    }


@pytest.fixture
def registry() -> Any:
    with SchemaRegistryServer() as server:
        yield server


def register_over_http(url: str) -> tuple[int, int]:
    """Register as a producer would, with confluent_kafka's own client."""
    client = SchemaRegistryClient({"url": url})
    key_id = client.register_schema("carecloud.public.families-key", Schema(json.dumps(KEY_SCHEMA), "AVRO"))
    value_id = client.register_schema(
        "carecloud.public.families-value", Schema(json.dumps(VALUE_SCHEMA), "AVRO")
    )
    return key_id, value_id


def test_decodes_messages_registered_over_http(registry: SchemaRegistryServer) -> None:
    key_id, value_id = register_over_http(registry.url)
    assert register_over_http(registry.url) == (key_id, value_id)  # same schema, same id
    decoder = make_decoder("debezium-avro", schema_registry_url=registry.url)
    for id_, op in ((1, "c"), (2, "u"), (1, "d")):
        event = decoder.decode(
            frame(key_id, KEY_SCHEMA, {"id": id_}),
            frame(value_id, VALUE_SCHEMA, envelope(op, row(id_))),
            None,
            POSITION,
        )
        assert event is not None
        assert event.key == {"id": id_}
        assert event.row["coverage_start"] == dt.date(2024, 1, 1)
        assert event.row["deductible"] == Decimal("3000.00")
    assert event.op is Op.DELETE
    with urllib.request.urlopen(f"{registry.url}/subjects") as response:
        assert json.load(response) == ["carecloud.public.families-key", "carecloud.public.families-value"]


def test_unknown_id_is_bad_input_over_http(registry: SchemaRegistryServer) -> None:
    key_id, _ = register_over_http(registry.url)
    decoder = make_decoder("debezium-avro", schema_registry_url=registry.url)
    with pytest.raises(UnknownSchemaError) as info:
        decoder.decode(
            frame(key_id, KEY_SCHEMA, {"id": 1}),
            frame(77, VALUE_SCHEMA, envelope("c", row(1))),
            None,
            POSITION,
        )
    assert info.value.reason == "unknown_schema_id"
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(f"{registry.url}/schemas/ids/77")
    assert http.value.code == 404
    assert json.load(http.value)["error_code"] == 40403


def test_stopped_registry_is_transient_then_recovers(registry: SchemaRegistryServer) -> None:
    key_id, value_id = register_over_http(registry.url)
    key, value = frame(key_id, KEY_SCHEMA, {"id": 5}), frame(value_id, VALUE_SCHEMA, envelope("c", row(5)))
    decoder = make_decoder(
        "debezium-avro", schema_registry_url=registry.url, schema_registry_config={"max.retries": 0}
    )
    registry.stop()
    with pytest.raises(SchemaRegistryUnavailable) as info:
        decoder.decode(key, value, None, POSITION)
    assert isinstance(info.value, TransientError)
    assert not isinstance(info.value, (DecodeError, BadInputError))
    registry.start()  # same port, same schemas: the retry succeeds
    event = decoder.decode(key, value, None, POSITION)
    assert event is not None
    assert event.key == {"id": 5}
    registry.stop()
    assert decoder.decode(key, value, None, POSITION) is not None  # cached per id: no registry needed
