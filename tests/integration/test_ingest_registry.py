"""The Schema Registry being down is not bad input: offsets stay put until it is back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.config import load_settings
from connector.devtools.schema_registry import SchemaRegistryServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from tests.integration.state_helpers import committed
from tests.integration.test_schema_registry_http import KEY_SCHEMA, VALUE_SCHEMA, envelope, frame, row
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

MAPPING = """\
version: 1
topics:
  {topic}: {{format: debezium-avro}}
tables:
  public.families:
    entity: Family
    entity_id: "FAM-{{id}}"
    fields:
      FamilyName: family_name
      Status: status
      PlanCode: {{const: PPO-500}}
      CoverageStartDate: coverage_start
      DeductibleAmount: deductible
      UpdatedAt: updated_at
"""
EVENTS = 40


def test_registry_outage_backs_off_without_advancing_then_recovers(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, prefix="avro")
    with SchemaRegistryServer() as registry:
        client = SchemaRegistryClient({"url": registry.url})
        key_id = client.register_schema(f"{topic}-key", Schema(json.dumps(KEY_SCHEMA), "AVRO"))
        value_id = client.register_schema(f"{topic}-value", Schema(json.dumps(VALUE_SCHEMA), "AVRO"))
        records: list[tuple[bytes | None, bytes | None]] = [
            (frame(key_id, KEY_SCHEMA, {"id": i}), frame(value_id, VALUE_SCHEMA, envelope("c", row(i))))
            for i in range(EVENTS)
        ]
        kafka.seed_topic(topic, records)
        registry.stop()

        group = unique("avro")
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
                "batch_max_ms": 100,
            },
        )
        service = IngestService(settings, parse_mapping(MAPPING.format(topic=topic)))
        service.start()
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,))
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while service.counts["transient_errors"] < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert service.counts["transient_errors"] >= 2  # retried, backing off
            assert service.counts["events"] == 0
            assert committed(kafka, group, topic) == 0  # nothing dead-lettered, nothing skipped

            registry.start()  # same port, same schemas
            deadline = time.monotonic() + 60
            while service.counts["events"] < EVENTS and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(30)
        counts: dict[str, Any] = dict(service.counts)
    assert counts["events"] == EVENTS
    assert counts["applied"] == EVENTS
    assert not any(key.startswith("dlq.") for key in counts)
    assert committed(kafka, group, topic) == EVENTS
