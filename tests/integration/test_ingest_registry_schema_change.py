"""A Debezium Avro subject's new schema version is checked against the mapping when first seen
(issue 20): the project's Schema Registry over HTTP, the real broker, the ingest service.

Version 1 of the value subject fits the mapping. Version 2 drops ``family_name`` (which the
mapping's required ``Family.FamilyName`` reads) and adds ``fax`` (which it does not read). The
ingest runs one small batch at a time: the mismatch metric must be absent while only version-1
messages have been consumed and at 1 from the batch that holds the first version-2 message,
before the dead letters pile up; ``fax`` is never reported.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.config import load_settings
from connector.devtools.schema_registry import SchemaRegistryServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.ops.metrics import Metrics
from tests.integration.state_helpers import committed
from tests.integration.test_ingest_registry import MAPPING
from tests.integration.test_schema_registry_http import KEY_SCHEMA, VALUE_SCHEMA, envelope, frame, row
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

PER_VERSION = 20


def _version_2() -> dict[str, Any]:
    """VALUE_SCHEMA with ``family_name`` dropped from the row record and ``fax`` added."""
    schema = copy.deepcopy(VALUE_SCHEMA)
    record = schema["fields"][0]["type"][1]  # before: ["null", Value]; after refers to Value
    record["fields"] = [f for f in record["fields"] if f["name"] != "family_name"]
    record["fields"].append({"name": "fax", "type": ["null", "string"], "default": None})
    return schema


def _mismatch(metrics: Metrics, column: str) -> float | None:
    labels = {"table": "public.families", "column": column, "problem": "dropped"}
    value: float | None = metrics.registry.get_sample_value("carecloud_source_schema_mismatch", labels)
    return value


def test_a_subjects_new_version_that_drops_a_mapped_column_is_reported_when_first_seen(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, prefix="avro")
    v2 = _version_2()
    with SchemaRegistryServer() as registry:
        client = SchemaRegistryClient({"url": registry.url})
        key_id = client.register_schema(f"{topic}-key", Schema(json.dumps(KEY_SCHEMA), "AVRO"))
        v1_id = client.register_schema(f"{topic}-value", Schema(json.dumps(VALUE_SCHEMA), "AVRO"))
        v2_id = client.register_schema(f"{topic}-value", Schema(json.dumps(v2), "AVRO"))
        assert v2_id != v1_id
        v2_row = {k: v for k, v in row(0).items() if k != "family_name"} | {"fax": "555-0100"}
        records: list[tuple[bytes | None, bytes | None]] = [
            (frame(key_id, KEY_SCHEMA, {"id": i}), frame(v1_id, VALUE_SCHEMA, envelope("c", row(i))))
            for i in range(PER_VERSION)
        ] + [
            (frame(key_id, KEY_SCHEMA, {"id": i}), frame(v2_id, v2, envelope("u", {**v2_row, "id": i})))
            for i in range(PER_VERSION)
        ]
        kafka.seed_topic(topic, records)

        group = unique("avro-schema")
        settings = load_settings(
            kafka={"bootstrap_servers": kafka.bootstrap},
            ingest={
                "mapping_file": "unused.yaml",
                "group_id": group,
                "state_topic": unique("state"),
                "dlq_topic": unique("dlq"),
                "state_dir": tmp_path / "store",
                "transactional_id": unique("txn"),
                "schema_registry_url": registry.url,
                "batch_max_events": 3,
                "batch_max_ms": 100,
            },
        )
        metrics = Metrics()
        service = IngestService(settings, parse_mapping(MAPPING.format(topic=topic)), metrics=metrics)
        service.start()
        seen: list[tuple[int, float | None, int]] = []  # (committed, metric, dead letters) per batch
        try:
            while committed(kafka, group, topic) < 2 * PER_VERSION:
                assert len(seen) < 200, seen
                service.run_batch()
                dead = sum(v for k, v in service.counts.items() if k.startswith("dlq."))
                seen.append((committed(kafka, group, topic), _mismatch(metrics, "family_name"), dead))
        finally:
            service.close()

    before = [s for s in seen if s[0] <= PER_VERSION]
    after = [s for s in seen if s[0] > PER_VERSION]
    assert before
    assert all(metric == 0 for _, metric, _ in before), before  # every mapped column's series starts at 0
    assert after
    first = after[0]
    assert first[1] == 1, after  # the batch with the first version-2 message raised it
    assert first[2] <= 3, first  # at once: not after a stream of dead letters
    assert after[-1][1] == 1
    assert after[-1][2] == PER_VERSION  # the required field's column is gone: each one dead-lettered
    assert service.counts["dlq.required_field_missing"] == PER_VERSION
    assert _mismatch(metrics, "fax") is None  # an added column is never reported
    assert [(p.column, p.problem) for p in service.schema_watch.current()] == [("family_name", "dropped")]
