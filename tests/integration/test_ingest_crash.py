"""SIGKILL inside open transactions, then restart: state and committed offsets come out exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, TopicPartition

from connector.devtools.generator import family_events
from connector.mapping import parse_mapping
from connector.replay import RawMessage, replay
from connector.source import Position
from connector.state.codec import decode_row, split_key
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

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


def _env(
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
        **{f"CARECLOUD_INGEST_{key}": value for key, value in ingest.items()},
    }


def _committed(kafka: KafkaTestCluster, group: str, topic: str) -> int:
    """Committed offsets; -1 while a transaction's offsets are pending (KIP-447 stable read)."""
    consumer = kafka.consumer(group, {"enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=5)
    except KafkaException:
        return -1
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in parts)


def _state(kafka: KafkaTestCluster, topic: str) -> dict[tuple[str, str], object]:
    """The latest committed row per key, read up to the high watermark of every partition.

    Waiting for the high watermark (not the first end-of-partition) waits out a transaction
    a killed replica left open, which holds read-committed readers back until it times out.
    """
    consumer = kafka.consumer(None, {"isolation.level": "read_committed"})
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    rows = {}
    deadline = time.monotonic() + 90
    while True:
        positions = consumer.position([TopicPartition(topic, p) for p in range(PARTITIONS)])
        if all(tp.offset >= ends[tp.partition] for tp in positions):
            break
        assert time.monotonic() < deadline, "state topic read timed out"
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        entity, entity_id = split_key(msg.key())
        rows[(entity, entity_id)] = decode_row(entity, msg.value())
    consumer.close()
    return rows


def test_sigkill_mid_stream_then_restart_gives_exact_state_and_offsets(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(2000, 5, deletes_every=7))
    kafka.seed_topic(topic, events)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.format(topic=topic))
    group, state_topic = unique("crash"), unique("state")
    env = _env(
        kafka,
        mapping,
        group,
        state_topic,
        STATE_DIR=str(tmp_path / "store"),
        TRANSACTIONAL_ID=unique("txn"),
        BATCH_MAX_EVENTS="400",
    )
    cmd = [sys.executable, "-m", "connector.cli", "ingest"]
    log = (tmp_path / "ingest.log").open("w")
    kills = 0
    progress = 0
    while kills < 3:
        # Each start fences the killed predecessor (same transactional.id) and resumes.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        now = _committed(kafka, group, topic)
        while time.monotonic() < deadline and now <= progress:
            time.sleep(0.05)
            now = _committed(kafka, group, topic)
        assert now > progress, "the restarted process made no progress"
        progress = now
        proc.send_signal(signal.SIGKILL)  # mid-stream: most likely inside an open transaction
        proc.wait(10)
        kills += 1
    if progress >= len(events):
        pytest.fail("the stream finished before the kills; seed more events")  # keeps the test honest
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _committed(kafka, group, topic) < len(events):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert _committed(kafka, group, topic) == len(events)

    messages = [RawMessage(Position(topic, 0, i), k, v, None) for i, (k, v) in enumerate(events)]
    expected = replay(parse_mapping(MAPPING.format(topic=topic)), messages)
    state = _state(kafka, state_topic)
    live = sorted((e, i, r.values) for (e, i), r in state.items() if r.complete)  # type: ignore[attr-defined]
    assert live == expected.live
    assert len(live) == 2000 - 2000 // 7


def test_two_processes_split_the_partitions_and_survive_one_stopping(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(4000, 5, seed=11, deletes_every=9))
    kafka.seed_topic(topic, events)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.format(topic=topic))
    group, state_topic = unique("scale"), unique("state")
    base = _env(
        kafka,
        mapping,
        group,
        state_topic,
        BATCH_MAX_EVENTS="300",
        SESSION_TIMEOUT_MS="6000",
        TRANSACTION_TIMEOUT_MS="8000",  # the killed replica's open transaction is aborted after this
    )
    cmd = [sys.executable, "-m", "connector.cli", "ingest"]
    log = (tmp_path / "ingest.log").open("w")
    procs = [
        subprocess.Popen(
            cmd,
            env={
                **base,
                "CARECLOUD_INGEST_STATE_DIR": str(tmp_path / f"store{i}"),
                "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique(f"txn{i}"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    stores = (tmp_path / "store0", tmp_path / "store1")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (
        all(p.exists() for p in stores) and _committed(kafka, group, topic) > 0
    ):
        time.sleep(0.05)
    assert all(p.exists() for p in stores), "both replicas should have owned partitions"
    assert _committed(kafka, group, topic) < len(events), "the stream finished before the kill; seed more"
    procs[0].send_signal(signal.SIGKILL)  # one replica vanishes mid-stream
    procs[0].wait(10)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _committed(kafka, group, topic) < len(events):
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    assert procs[1].wait(30) == 0
    assert _committed(kafka, group, topic) == len(events)

    messages = [RawMessage(Position(topic, 0, i), k, v, None) for i, (k, v) in enumerate(events)]
    expected = replay(parse_mapping(MAPPING.format(topic=topic)), messages)
    state = _state(kafka, state_topic)
    live = sorted((e, i, r.values) for (e, i), r in state.items() if r.complete)  # type: ignore[attr-defined]
    assert live == expected.live
