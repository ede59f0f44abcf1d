"""Backfill of a new source table through Debezium's Kafka signal channel (issue 20): real
PostgreSQL, real Debezium, the ``backfill`` command as an operator runs it (a process).

The runbook's "a new source table", step by step: ``payment`` has rows before anyone captures
it (some changed and deleted meanwhile); it is then added to Debezium's include list and its
publication, and to the mapping; ``backfill`` asks Debezium for an incremental snapshot of it
through the Kafka signal topic. Debezium reads the table as ``op=r`` events marked
``source.snapshot="incremental"``, ingest applies them beside the streamed changes, and the
delivered snapshot equals ``SELECT *`` of every table mapped by ``test_source_postgres``'s own
functions (never by the connector's code, never by ``replay``).

Before the real signal, a ``--dry-run`` and a refused table (not in the mapping) are run as
processes too, and the signal topic must still be empty after them: they touch nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from connector.devtools.debezium import ConnectWorker, postgres_connector
from connector.devtools.postgres import PostgresServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from connector.source.exceptions import SignalError
from connector.source.signal import SnapshotSignal, send_signal
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.pg_source import (
    BIG,
    DAY,
    DDL,
    ORACLE,
    PARTITIONS,
    SEED,
    TABLES,
    end_offsets,
    expected_records,
    ingest_to_end,
    mapping_for,
    record_id,
    wait_for_message,
)
from tests.integration.snapshot_helpers import published, snapshot_run
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

SIGNAL_DDL = (
    "CREATE TABLE {s}.debezium_signal (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data text);"
)

# While payment is not captured: none of its changes reach Kafka.
UNCAPTURED = """
INSERT INTO {s}.payment VALUES
  (5003, 1001, 'ISSUED', '2024-06-01', 'PROVIDER', 'ACH', 12.50, 0.00, 'R-5003', '2024-06-01 00:00:00'),
  (5004, 1002, 'VOIDED', '2024-06-02', 'MEMBER', 'CHECK', 3.00, 1.00, NULL, '2024-06-02 00:00:00');
UPDATE {s}.payment SET amount = 150.00, updated_at = '2024-06-03 00:00:00' WHERE payment_id = 5000;
DELETE FROM {s}.payment WHERE payment_id = 5001;
UPDATE {s}.claim SET status = 'APPROVED', allowed = billed, updated_at = '2024-06-04 00:00:00'
  WHERE claim_id = 1000;
UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = 1;
"""

# Streamed once payment is captured, before the backfill: the backfill must not regress it.
CAPTURED = """
UPDATE {s}.payment SET status = 'DELIVERED', updated_at = '2024-07-01 00:00:00' WHERE payment_id = 5003;
UPDATE {s}.payment SET reference = '{sentinel}' WHERE payment_id = 5004;
"""

AFTER = """
UPDATE {s}.payment SET member_owes = 2.00, updated_at = '2024-08-01 00:00:00' WHERE payment_id = 5004;
UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = 2;
"""


def _backfill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", "backfill", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _signal_end(kafka: KafkaTestCluster, topic: str) -> int:
    consumer = kafka.consumer(None)
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def _incremental_reads(kafka: KafkaTestCluster, topic: str) -> dict[int, dict[str, object]]:
    """payment_id -> the source block of each ``op=r`` incremental read on ``topic``."""
    consumer = kafka.consumer(None, {"enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    reads: dict[int, dict[str, object]] = {}
    eof: set[int] = set()
    try:
        while len(eof) < PARTITIONS:
            msg = consumer.poll(5)
            assert msg is not None, f"{topic} did not reach its end"
            if msg.error() is not None:
                eof.add(msg.partition() or 0)
                continue
            doc = json.loads(msg.value() or b"null")
            if doc and doc.get("op") == "r" and doc["source"].get("snapshot") == "incremental":
                reads[int(doc["after"]["payment_id"])] = doc["source"]
    finally:
        consumer.close()
    return reads


def _ingest(service: IngestService, kafka: KafkaTestCluster, group: str, topics: list[str]) -> dict[str, int]:
    ends = end_offsets(kafka, topics)
    service.start()
    try:
        return ingest_to_end(service, kafka, group, ends)
    finally:
        service.close()


def test_a_new_table_backfilled_through_the_kafka_signal_channel_equals_select_star(
    kafka: KafkaTestCluster,
    postgres: PostgresServer,
    debezium: ConnectWorker,
    schema: str,
    tmp_path: Path,
) -> None:
    database, prefix = "source", f"pg{uuid.uuid4().hex[:8]}"
    signal_topic = f"{prefix}-signal"  # Debezium's default name, and the command's
    kafka.admin().create_topics([NewTopic(signal_topic, 1, 1)])[signal_topic].result(timeout=30)
    postgres.execute(DDL.format(s=schema) + SIGNAL_DDL.format(s=schema), database)
    postgres.execute(SEED.format(s=schema, big=BIG), database)
    old_tables = [t for t in TABLES if t != "payment"]

    def connector(tables: list[str], **extra: str) -> dict[str, str]:
        return postgres_connector(
            prefix,
            port=postgres.port,
            database=database,
            topic_prefix=prefix,
            tables=[f"{schema}.{t}" for t in (*tables, "debezium_signal")],
            partitions=PARTITIONS,
            **{
                "signal.enabled.channels": "source,kafka",
                "signal.kafka.topic": signal_topic,
                "signal.kafka.bootstrap.servers": kafka.bootstrap,
                "signal.data.collection": f"{schema}.debezium_signal",
                **extra,
            },
        )

    # 1. Five tables captured; payment changes meanwhile without being captured.
    debezium.add_connector(connector(old_tables))
    try:
        sentinel = f"SENTINEL-{uuid.uuid4().hex}"
        postgres.execute(UNCAPTURED.format(s=schema, sentinel=sentinel), database)
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)

        # 2. Runbook: payment into the publication and Debezium's include list (same connector,
        # its offsets kept), then into the mapping; its streamed changes start arriving.
        postgres.execute(f"ALTER PUBLICATION {prefix}_pub ADD TABLE {schema}.payment", database)
        # (The first configuration keeps its slot when Connect stops it for the new one.)
        debezium.add_connector(connector(list(TABLES), **{"slot.drop.on.stop": "true"}))
        sentinel = f"SENTINEL-{uuid.uuid4().hex}"
        postgres.execute(CAPTURED.format(s=schema, sentinel=sentinel), database)
        payment_topic = f"{prefix}.{schema}.payment"
        wait_for_message(kafka, payment_topic, sentinel.encode(), 120)
        assert _incremental_reads(kafka, payment_topic) == {}  # only streamed changes so far

        mapping_file = tmp_path / "mapping.yaml"
        mapping_file.write_text(mapping_for(prefix, schema))
        env = {
            **{k: v for k, v in os.environ.items() if not k.upper().startswith("CARECLOUD_")},
            "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "CARECLOUD_INGEST_MAPPING_FILE": str(mapping_file),
        }

        # 3. A dry run and a refused table send nothing.
        dry = _backfill(env, f"{schema}.payment", "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert f"key:   {prefix}\n" in dry.stdout, dry.stdout
        assert "nothing sent" in dry.stdout, dry.stdout
        assert f'"data-collections":["{schema}\\\\.payment"]' in dry.stdout, dry.stdout
        refused = _backfill(env, f"{schema}.payment", f"{schema}.debezium_signal")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"{schema}.debezium_signal not in the mapping" in refused.stderr
        assert _signal_end(kafka, signal_topic) == 0

        # 4. The backfill: one signal, then Debezium's incremental reads of every row.
        done = _backfill(env, f"{schema}.payment")
        assert done.returncode == 0, done.stdout + done.stderr
        assert _signal_end(kafka, signal_topic) == 1
        rows = {int(r["payment_id"]) for r in postgres.rows(f"{schema}.payment", database)}
        deadline = time.monotonic() + 120
        while set(reads := _incremental_reads(kafka, payment_topic)) != rows:
            assert time.monotonic() < deadline, (sorted(reads), sorted(rows), debezium.log_tail(20))
            time.sleep(1)
        # Debezium's own facts (no lsn; a sequence at the stream position, usually [X, X] but
        # [X, Y] when a transaction is in flight) are not asserted: the oracle below judges.

        sentinel = f"SENTINEL-{uuid.uuid4().hex}"
        postgres.execute(AFTER.format(s=schema, sentinel=sentinel), database)
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
    finally:
        debezium.remove_connector(prefix)

    # 5. Ingest under the new mapping, then today's snapshot: equal to the database.
    names = ingest_names()
    settings = ingest_settings(kafka, tmp_path, names, batch_max_events=50, batch_max_ms=200)
    topics = [f"{prefix}.{schema}.{t}" for t in TABLES]
    counts = _ingest(
        IngestService(settings, parse_mapping(mapping_file.read_text())), kafka, names["group"], topics
    )
    assert counts.get("aborted_batches", 0) == 0
    assert {k: v for k, v in counts.items() if k.startswith("dlq.")} == {}

    storage = LocalStorage(tmp_path / "bucket")
    result = snapshot_run(kafka, names["state"], storage, work_dir=tmp_path).run(DAY)
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    files = published(storage, result.manifest)
    delivered = {entity: sorted(files.get(entity, []), key=record_id) for entity in ORACLE}
    expected = expected_records(postgres, database, schema)
    assert [record_id(r) for r in expected["EOP"]] == ["EOP-5000", "EOP-5003", "EOP-5004"]
    for entity in ORACLE:
        assert [record_id(r) for r in delivered[entity]] == [record_id(r) for r in expected[entity]], (
            entity,
            counts,
        )
        assert delivered[entity] == expected[entity], entity


def test_a_missing_signal_topic_is_refused_and_not_created(kafka: KafkaTestCluster) -> None:
    """Debezium reads partition 0 of a topic it expects to exist: producing to a missing one
    would at best create it with the broker's defaults, where no connector listens."""
    topic = unique("no-signal")
    with pytest.raises(SignalError, match=f"signal topic {topic} does not exist"):
        send_signal(kafka.config(), SnapshotSignal(topic, "pgx", ("public.family",)), timeout_s=10)
    assert topic not in kafka.admin().list_topics(timeout=10).topics
