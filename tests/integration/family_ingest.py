"""The family-table ingest the process-level tests run: its mapping, its environment, its check.

The crash, broker-restart, purge, bad-input and CLI tests all drive the real ``ingest`` command
over one Family source topic, and the send-timeout and corrupt-store tests the same ingest in
process; this is what they share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from connector.config import Settings, load_settings
from connector.ingest.replay import RawMessage, replay
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.ops.metrics import Metrics
from connector.source import Position
from tests.integration.state_helpers import committed, live_rows, read_state
from tests.kafka_helpers import KafkaTestCluster, unique

__all__ = [
    "MAPPING",
    "PARTITIONS",
    "assert_state_equals_replay",
    "committed_events",
    "ingest_env",
    "ingest_group",
    "ingest_names",
    "ingest_service",
    "ingest_settings",
    "wait_until",
]

PARTITIONS = 3
MAPPING = """\
version: 1
topics:
  {topic}: {{format: debezium-json}}
tables:
  public.family:
    entity: Family
    entity_id: "FAM-{{family_id}}"
    fields:
      FamilyName: family_name
      Status: {{column: status, enum: {{A: ACTIVE, P: PENDING, S: SUSPENDED, T: TERMINATED}}}}
      PlanCode: plan_code
      CoverageStartDate: coverage_start
      CoverageEndDate: coverage_end
      StateCode: {{path: address.state}}
      PostalCode: {{path: address.zip}}
      PrimaryEmail: email
      DeductibleAmount: deductible
      OutOfPocketMaximum: oop_max
      UpdatedAt: updated_at
"""


def ingest_env(
    kafka: KafkaTestCluster, mapping: Path, group: str, state_topic: str, **ingest: str
) -> dict[str, str]:
    """The environment of one `carecloud-connector ingest` process (CARECLOUD_INGEST_<KEY>)."""
    return {
        **os.environ,
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_GROUP_ID": group,
        "CARECLOUD_INGEST_STATE_TOPIC": state_topic,
        "CARECLOUD_INGEST_DLQ_TOPIC": unique("dlq"),
        "CARECLOUD_OPS_HTTP_PORT": "0",  # two replicas on one machine: each picks a free port
        **{f"CARECLOUD_INGEST_{key}": value for key, value in ingest.items()},
    }


def ingest_group(
    kafka: KafkaTestCluster, tmp_path: Path, topic: str, name: str, **ingest: str
) -> tuple[str, str, dict[str, str]]:
    """(group, state topic, environment) of an ingest group over the Family ``topic``."""
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.format(topic=topic))
    group, state_topic = unique(name), unique("state")
    return group, state_topic, ingest_env(kafka, mapping, group, state_topic, **ingest)


def ingest_names() -> dict[str, str]:
    """Fresh group, state topic, dead-letter topic and transactional id for one in-process ingest
    (a second ``ingest_service`` with the same names is the same replica restarted)."""
    return {k: unique(k) for k in ("group", "state", "dlq", "txn")}


def ingest_service(
    kafka: KafkaTestCluster,
    tmp_path: Path,
    topic: str,
    names: dict[str, str],
    metrics: Metrics | None = None,
    **ingest: object,
) -> IngestService:
    """An in-process ingest of the Family ``topic``; ``ingest`` overrides its settings."""
    settings = ingest_settings(kafka, tmp_path, names, **ingest)
    return IngestService(settings, parse_mapping(MAPPING.format(topic=topic)), metrics=metrics)


def ingest_settings(
    kafka: KafkaTestCluster, tmp_path: Path, names: dict[str, str], **ingest: object
) -> Settings:
    """The settings of one in-process ingest named by ``names`` (``ingest_names``), its store
    under ``tmp_path``; ``ingest`` overrides them."""
    return load_settings(
        kafka={"bootstrap_servers": kafka.bootstrap},
        ingest={
            "mapping_file": "unused.yaml",
            "group_id": names["group"],
            "state_topic": names["state"],
            "dlq_topic": names["dlq"],
            "state_dir": tmp_path / "store",
            "transactional_id": names["txn"],
            **ingest,
        },
    )


def committed_events(kafka: KafkaTestCluster, group: str, topic: str) -> int:
    """Events of ``topic`` the group has committed, over all partitions."""
    return committed(kafka, group, topic, PARTITIONS)


def wait_until(check: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    """Poll ``check`` until it holds or ``timeout_s`` passes; whether it held. The caller asserts
    what it needs, so a timeout fails on the test's own words."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)
    return True


def assert_state_equals_replay(
    kafka: KafkaTestCluster, state_topic: str, topic: str, events: list[tuple[bytes, bytes | None]]
) -> None:
    """The live state in Kafka equals the offline replay of the same events."""
    messages = [RawMessage(Position(topic, 0, i), k, v, None) for i, (k, v) in enumerate(events)]
    expected = replay(parse_mapping(MAPPING.format(topic=topic)), messages)
    assert live_rows(read_state(kafka, state_topic, PARTITIONS)) == expected.live
