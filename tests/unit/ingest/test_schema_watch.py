"""Source schema changes reported when first seen (issue 20): JSON with schemas, JSON without,
and Debezium Avro through a Schema Registry; a metric per mapped column, a log line naming
table and column (never a value), and nothing the watch does decides a message's fate."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.ingest.schema_watch import SAMPLE_EVERY, SchemaWatch
from connector.mapping import load_mapping, parse_mapping
from connector.ops.metrics import Metrics
from connector.source.avro import RegistrySchemas
from connector.source.schema_probe import json_columns

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_mapping(ROOT / "examples" / "mapping.yaml")
TOPIC = "benefits.public.claim"
CANARY = "Zyx-CANARY-9931"

CONNECT = {  # column -> (Connect type, logical name)
    "claim_id": ("int64", None),
    "episode_id": ("int64", None),
    "provider_id": ("int64", None),
    "claim_number": ("string", None),
    "status": ("string", None),
    "submitted_on": ("int32", "io.debezium.time.Date"),
    "billed": ("bytes", "org.apache.kafka.connect.data.Decimal"),
    "allowed": ("bytes", "org.apache.kafka.connect.data.Decimal"),
    "paid": ("bytes", "org.apache.kafka.connect.data.Decimal"),
    "member_owes": ("bytes", "org.apache.kafka.connect.data.Decimal"),
    "denial_code": ("string", None),
    "updated_at": ("int64", "io.debezium.time.MicroTimestamp"),
}
ROW = {
    "claim_id": 1,
    "episode_id": 2,
    "provider_id": 3,
    "claim_number": CANARY,
    "status": "PAID",
    "submitted_on": 19000,
    "billed": "AQ==",
    "allowed": None,
    "paid": None,
    "member_owes": None,
    "denial_code": None,
    "updated_at": 1,
}


def wrapped(
    columns: dict[str, tuple[str, str | None]], row: dict[str, Any] | None = None, ts_ms: int = 1
) -> bytes:
    struct = {
        "type": "struct",
        "optional": True,
        "name": "benefits.public.claim.Value",
        "fields": [
            {"field": c, "type": t, **({"name": n} if n else {}), "optional": True}
            for c, (t, n) in columns.items()
        ],
    }
    schema = {
        "type": "struct",
        "name": "benefits.public.claim.Envelope",
        "fields": [
            {**struct, "field": "before"},
            {**struct, "field": "after"},
            {"field": "op", "type": "string"},
        ],
    }
    after = {c: (row or ROW).get(c) for c in columns}
    source = {"schema": "public", "table": "claim", "ts_ms": ts_ms}
    payload = {"before": None, "after": after, "op": "u", "source": source}
    return orjson.dumps({"schema": schema, "payload": payload})


def schemaless(row: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"before": None, "after": row, "op": "c", "source": {"schema": "public", "table": "claim"}}
    )


def mismatch(metrics: Metrics, column: str, problem: str) -> float | None:
    value = metrics.registry.get_sample_value(
        "carecloud_source_schema_mismatch", {"table": "public.claim", "column": column, "problem": problem}
    )
    return value


def test_the_probe_reads_columns_and_families_from_a_wrapped_value() -> None:
    found = json_columns(wrapped(CONNECT))
    assert found is not None
    assert (found.table, found.record, found.typed) == ("public.claim", "benefits.public.claim", True)
    assert found.columns["billed"] == "decimal"
    assert found.columns["submitted_on"] == "date"
    assert found.columns["updated_at"] == "timestamp"
    assert found.columns["claim_id"] == "integer"


def test_json_with_schemas_a_dropped_column_is_reported_once_and_cleared_when_it_fits_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    watch = SchemaWatch(SPEC, metrics=metrics)
    watch.observe(TOPIC, wrapped({**CONNECT, "fax": ("string", None)}))  # an added column: nothing
    assert watch.current() == []
    dropped = wrapped({k: v for k, v in CONNECT.items() if k != "paid"})
    with caplog.at_level(logging.INFO, logger="connector.ingest.schema_watch"):
        for _ in range(3):
            watch.observe(TOPIC, dropped)
    assert [(p.column, p.problem, p.field) for p in watch.current()] == [
        ("paid", "dropped", "Claim.PaidAmount")
    ]
    assert mismatch(metrics, "paid", "dropped") == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # at once, and once: not per message
    assert "public.claim.paid dropped" in errors[0].getMessage()
    assert CANARY not in caplog.text
    watch.observe(TOPIC, wrapped(CONNECT))  # the column is back
    assert watch.current() == []
    assert mismatch(metrics, "paid", "dropped") == 0


def test_an_older_schema_met_late_does_not_undo_a_newer_ones_verdict_and_a_restore_clears_it() -> None:
    """A backlog across partitions: the new schema (column dropped) is read before a partition
    still holding the old one; the old schema's first sight must not clear the problem. The
    column restored later gives the old schema's very bytes again, newer this time: cleared."""
    metrics = Metrics()
    watch = SchemaWatch(SPEC, metrics=metrics)
    without_paid = {k: v for k, v in CONNECT.items() if k != "paid"}
    watch.observe(TOPIC, wrapped(without_paid, ts_ms=2_000))
    watch.observe(TOPIC, wrapped(CONNECT, ts_ms=1_000))  # first seen, but older
    assert [p.column for p in watch.current()] == ["paid"]
    watch.observe(TOPIC, wrapped(without_paid, ts_ms=2_001))
    watch.observe(TOPIC, wrapped(CONNECT, ts_ms=3_000))  # seen before; newer now: the restore
    assert watch.current() == []
    assert mismatch(metrics, "paid", "dropped") == 0


def test_json_with_schemas_a_retyped_column_is_reported() -> None:
    metrics = Metrics()
    watch = SchemaWatch(SPEC, metrics=metrics)
    watch.observe(TOPIC, wrapped({**CONNECT, "billed": ("boolean", None)}, {**ROW, "billed": True}))
    assert [(p.column, p.problem, p.found) for p in watch.current()] == [("billed", "retyped", "boolean")]
    assert mismatch(metrics, "billed", "retyped") == 1


def test_json_without_schemas_drops_are_seen_on_the_first_message_then_by_sampling() -> None:
    watch = SchemaWatch(SPEC)
    without_paid = {k: v for k, v in ROW.items() if k != "paid"}
    watch.observe(TOPIC, schemaless(without_paid))
    assert [p.column for p in watch.current()] == ["paid"]
    for _ in range(SAMPLE_EVERY - 1):  # not looked at: the sample is one in SAMPLE_EVERY
        watch.observe(TOPIC, schemaless(ROW))
    assert [p.column for p in watch.current()] == ["paid"]
    watch.observe(TOPIC, schemaless(ROW))
    assert watch.current() == []
    watch.observe(TOPIC, orjson.dumps({"before": {"claim_id": 1}, "after": None, "op": "d"}))  # a delete
    assert watch.current() == []


def test_the_watch_never_raises_and_ignores_tables_and_topics_it_does_not_map(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = SchemaWatch(SPEC)
    for value in (b"", b"\x00\x01", b'{"schema":{"fields":7},"payload":', b"null", wrapped(CONNECT)[:-3]):
        watch.observe(TOPIC, value)
    watch.observe("not.a.mapped.topic", wrapped({}))
    spec = parse_mapping(
        (ROOT / "examples" / "mapping.yaml").read_text().replace("public.claim:", "public.claims:")
    )
    SchemaWatch(spec).observe(TOPIC, wrapped({}))  # the message's table is not mapped: dead letters say it
    assert watch.current() == []


AVRO_DECIMAL = {
    "type": "bytes",
    "scale": 2,
    "precision": 12,
    "connect.name": "org.apache.kafka.connect.data.Decimal",
    "logicalType": "decimal",
}
AVRO_COLUMNS: dict[str, Any] = {
    "claim_id": "long",
    "episode_id": "long",
    "provider_id": "long",
    "claim_number": "string",
    "status": "string",
    "submitted_on": {"type": "int", "connect.name": "io.debezium.time.Date"},
    "billed": AVRO_DECIMAL,
    "allowed": ["null", AVRO_DECIMAL],
    "paid": ["null", AVRO_DECIMAL],
    "member_owes": ["null", AVRO_DECIMAL],
    "denial_code": ["null", "string"],
    "updated_at": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"},
}


def avro_envelope(columns: dict[str, Any]) -> dict[str, Any]:
    value = {
        "type": "record",
        "name": "Value",
        "fields": [{"name": c, "type": t} for c, t in columns.items()],
    }
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": "benefits.public.claim",
        "fields": [
            {"name": "before", "type": ["null", value], "default": None},
            {"name": "after", "type": ["null", "Value"], "default": None},
            {"name": "op", "type": "string"},
        ],
    }


def frame(schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + b"\x02"  # the body is not read by the watch


def test_avro_a_subjects_new_version_is_checked_against_the_mapping_when_first_seen() -> None:
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})

    def register(columns: dict[str, Any]) -> int:
        schema = avro_envelope(columns)
        fastavro.parse_schema(schema)  # a valid Avro schema
        schema_id: int = client.register_schema(
            f"{TOPIC}-value", Schema(orjson.dumps(schema).decode(), "AVRO")
        )
        return schema_id

    v1 = register({**AVRO_COLUMNS, "fax": ["null", "string"]})
    v2 = register({**{k: v for k, v in AVRO_COLUMNS.items() if k != "paid"}, "billed": "boolean"})
    metrics = Metrics()
    registry = RegistrySchemas(client)
    watch = SchemaWatch(
        parse_mapping(
            (ROOT / "examples" / "mapping.yaml").read_text().replace("debezium-json", "debezium-avro")
        ),
        metrics=metrics,
        registry=registry,
    )
    watch.observe(TOPIC, frame(v1))
    assert watch.current() == []
    watch.observe(TOPIC, frame(v2))
    assert sorted((p.column, p.problem) for p in watch.current()) == [
        ("billed", "retyped"),
        ("paid", "dropped"),
    ]
    assert mismatch(metrics, "paid", "dropped") == 1
    assert mismatch(metrics, "billed", "retyped") == 1
