"""Re-snapshots converge (issue 19, RELIABILITY row 23): real PostgreSQL, real Debezium.

The replication slot is lost while the database keeps changing, Debezium takes a new initial
snapshot, streaming goes on, and an incremental snapshot (a signal row) runs on top. The
delivered snapshot must equal ``SELECT *`` of every table: rows changed during the gap take the
re-snapshot's values, rows deleted during the gap are gone (swept: the re-snapshot did not read
them), and what streaming changed after the re-snapshot is never regressed by it. The oracle is
the database mapped by the test's own functions (``test_source_postgres``), never by the
connector's code or by ``replay``.

The ingest runs twice, as a deployment would: caught up before the slot is lost, then restarted
after the re-snapshot, so each partition's generation comes back from its committed offset's
metadata (``connector.ingest.generations``), which is checked here over the real broker.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from connector.config import Settings
from connector.devtools.debezium import ConnectWorker, postgres_connector
from connector.devtools.postgres import PostgresServer
from connector.ingest.generations import parse_metadata
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.pg_source import (
    BIG,
    DAY,
    DDL,
    ORACLE,
    PARTITIONS,
    SEED,
    TABLES,
    committed_partitions,
    end_offsets,
    expected_records,
    ingest_to_end,
    mapping_for,
    record_id,
    wait_for_message,
)
from tests.integration.snapshot_helpers import published, snapshot_run
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

SIGNAL_DDL = (
    "CREATE TABLE {s}.debezium_signal (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data text);"
)

# Streamed by the first connector, before the slot is lost.
BEFORE_GAP = """
UPDATE {s}.family SET email = 'before-gap@example.com', updated_at = '2024-05-01 00:00:00'
  WHERE family_id = 1;
UPDATE {s}.claim SET status = 'APPROVED', allowed = billed, updated_at = '2024-05-03 00:00:00'
  WHERE claim_id IN (1000, 1001, 1002);
UPDATE {s}.family_member SET first_name = 'Gracie' WHERE member_id = 20;
UPDATE {s}.family_member SET first_name = 'Ada L.' WHERE member_id = 10;
UPDATE {s}.care_episode SET status = 'IN_PROGRESS' WHERE episode_id = 101;
UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = 1;
"""

# While no slot exists: none of this is streamed; the re-snapshot reads what is left.
GAP = """
UPDATE {s}.family SET plan_code = 'GAP', updated_at = '2024-06-01 00:00:00' WHERE family_id = 1;
UPDATE {s}.claim SET status = 'DENIED', denial_code = 'CO-97', updated_at = '2024-06-01 00:00:00'
  WHERE claim_id = 1002;
UPDATE {s}.family_member SET last_name = 'Gap', updated_at = '2024-06-01 00:00:00' WHERE member_id = 10;
UPDATE {s}.care_episode SET status = 'COMPLETED', service_end = '2024-06-01' WHERE episode_id = 101;
DELETE FROM {s}.payment WHERE payment_id IN (5000, 5001);
DELETE FROM {s}.family_member WHERE member_id = 20;
INSERT INTO {s}.provider VALUES
  (3, '3234567890', 'Gap Clinic', 'CLINIC', NULL, true, 'A', 'WA', '98101', '2024-06-02 00:00:00');
DELETE FROM {s}.family_member WHERE member_id = {big};
INSERT INTO {s}.family_member VALUES
  ({big}, {big}, 'M-BIG', 'Big', 'Again', '1970-01-01', 'U', 'self', '2024-06-03', NULL,
   '2024-06-03 00:00:00');
"""

# Streamed by the second connector after its snapshot; an incremental snapshot of two tables
# runs among them, and changes follow it.
AFTER = """
UPDATE {s}.claim SET status = 'PAID', paid = 1.00, updated_at = '2024-07-01 00:00:00' WHERE claim_id = 1000;
INSERT INTO {s}.payment VALUES
  (5003, 1000, 'ISSUED', '2024-07-02', 'PROVIDER', 'ACH', 1.00, 0.00, 'R-5003', '2024-07-02 00:00:00');
UPDATE {s}.family SET status = 'S', updated_at = '2024-07-03 00:00:00' WHERE family_id = 1;
INSERT INTO {s}.debezium_signal VALUES ('incremental-1', 'execute-snapshot',
  '{{"data-collections": ["{s}.claim", "{s}.family"], "type": "incremental"}}');
"""

AFTER_INCREMENTAL = """
UPDATE {s}.claim SET paid = 2.00, updated_at = '2024-07-04 00:00:00' WHERE claim_id = 1000;
DELETE FROM {s}.payment WHERE payment_id = 5003;
UPDATE {s}.family SET email = 'after@example.com', updated_at = '2024-07-05 00:00:00' WHERE family_id = {big};
UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = 2;
"""


def _drop_slot(postgres: PostgresServer, database: str, slot: str, timeout: float = 60) -> None:
    """The slot lost: dropped once the stopped connector's walsender has let go of it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            postgres.execute(f"SELECT pg_drop_replication_slot('{slot}')", database)
            return
        except Exception:  # still active: the worker is stopping the task
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _ingest(
    settings: Settings, mapping: str, kafka: KafkaTestCluster, group: str, topics: list[str]
) -> dict[str, int]:
    """One ingest run (a fresh process) until every source partition is consumed to its end."""
    ends = end_offsets(kafka, topics)
    service = IngestService(settings, parse_mapping(mapping))
    service.start()
    try:
        return ingest_to_end(service, kafka, group, ends)
    finally:
        service.close()


def test_a_re_snapshot_after_a_lost_slot_and_an_incremental_snapshot_converge_on_the_database(
    kafka: KafkaTestCluster,
    postgres: PostgresServer,
    debezium: ConnectWorker,
    schema: str,
    tmp_path: Path,
) -> None:
    database, prefix = "source", f"pg{uuid.uuid4().hex[:8]}"
    first, second = f"{prefix}-first", f"{prefix}-second"
    postgres.execute(DDL.format(s=schema) + SIGNAL_DDL.format(s=schema), database)
    postgres.execute(SEED.format(s=schema, big=BIG), database)
    topics = [f"{prefix}.{schema}.{table}" for table in TABLES]
    captured = [f"{schema}.{table}" for table in (*TABLES, "debezium_signal")]

    def connector(name: str, **extra: str) -> dict[str, str]:
        return postgres_connector(
            name,
            port=postgres.port,
            database=database,
            topic_prefix=prefix,  # the same topics: the re-snapshot lands where the first did
            tables=captured,
            partitions=PARTITIONS,
            **{"signal.data.collection": f"{schema}.debezium_signal", **extra},
        )

    mapping = mapping_for(prefix, schema)
    names = ingest_names()
    settings = ingest_settings(kafka, tmp_path, names, batch_max_events=20, batch_max_ms=200)

    # 1. The initial snapshot and a few streamed changes, ingested.
    sentinel = f"SENTINEL-{uuid.uuid4().hex}"
    debezium.add_connector(connector(first))
    try:
        postgres.execute(BEFORE_GAP.format(s=schema, sentinel=sentinel), database)
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
    finally:
        debezium.remove_connector(first)
    counts = _ingest(settings, mapping, kafka, names["group"], topics)
    assert counts.get("aborted_batches", 0) == 0
    before = {
        k: parse_metadata(tp.metadata)
        for k, tp in committed_partitions(kafka, names["group"], topics).items()
    }
    assert max(before.values()) > 0, before  # the generation went with the offsets, through the broker

    # 2. The slot is lost; the database changes meanwhile; Debezium starts afresh (a new
    # connector name: no offsets) with the same topic prefix, so it takes a new snapshot.
    _drop_slot(postgres, database, first.replace("-", "_"))
    postgres.execute(GAP.format(s=schema, big=BIG), database)
    sentinel = f"SENTINEL-{uuid.uuid4().hex}"
    debezium.add_connector(connector(second, **{"slot.drop.on.stop": "true"}))
    try:
        postgres.execute(AFTER.format(s=schema), database)
        wait_for_message(kafka, f"{prefix}.{schema}.claim", b'"snapshot":"incremental"', 120)
        wait_for_message(kafka, f"{prefix}.{schema}.family", b'"snapshot":"incremental"', 60)
        postgres.execute(AFTER_INCREMENTAL.format(s=schema, big=BIG, sentinel=sentinel), database)
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
    finally:
        debezium.remove_connector(second)

    # 3. The ingest restarted: generations from the committed metadata, then the re-snapshot's.
    counts = _ingest(settings, mapping, kafka, names["group"], topics)
    assert counts.get("aborted_batches", 0) == 0
    assert {k: v for k, v in counts.items() if k.startswith("dlq.")} == {}
    after = {
        k: parse_metadata(tp.metadata)
        for k, tp in committed_partitions(kafka, names["group"], topics).items()
    }
    assert max(after.values()) > max(before.values()), (before, after)

    storage = LocalStorage(tmp_path / "bucket")
    result = snapshot_run(kafka, names["state"], storage, work_dir=tmp_path).run(DAY)
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    files = published(storage, result.manifest)
    delivered = {entity: sorted(files.get(entity, []), key=record_id) for entity in ORACLE}
    assert delivered == expected_records(postgres, database, schema)
    # Payments 5000 and 5001 and member 20 were deleted in the gap: swept, and said so.
    assert result.manifest.checks["sweep"]["swept"] == {"EOP": 2, "FamilyMember": 1}
    assert result.manifest.checks["sweep"]["waiting"] == {}
