"""SQL in, whole transactions out: real PostgreSQL, real Debezium with its transaction metadata
(issue 19, RELIABILITY row 25, docs/decisions/0020).

A connector of the test's own (``provide.transaction.metadata=true``, so Debezium writes
``<prefix>.transaction`` and a ``transaction`` block on every streamed event) captures the
example schema; SQL pays claims in multi-table transactions (a claim and its EOPs, a family and
its members). Ingest runs with the mapping's ``transactions.topic`` set, the snapshot with the
transaction check on: it must publish every table exactly as ``SELECT *`` has it, with every
transaction complete in the ledger. Then the capture, transaction topic included, goes through
``replay``: its BEGIN/END records are tallied, not one is a dead letter, and every transaction
is whole.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from connector.devtools.debezium import ConnectWorker
from connector.devtools.postgres import PostgresServer
from connector.ingest.replay import RawMessage, replay
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from connector.source import Position
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.pg_source import (
    ORACLE,
    TABLES,
    end_offsets,
    expected_records,
    ingest_to_end,
    mapping_for,
    record_id,
    seeded_connector,
    wait_for_message,
)
from tests.integration.snapshot_helpers import published, snapshot_run
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 25)

# Streamed after the snapshot: claims paid with their EOPs in one transaction each, a family and
# a member changed together, a claim denied on its own; the sentinel last.
CHANGES = """
BEGIN;
UPDATE {s}.claim SET status = 'PAID', allowed = 180.00, paid = 144.00, member_owes = 36.00,
  updated_at = '2024-06-01 00:00:00' WHERE claim_id = 1000;
INSERT INTO {s}.payment VALUES
  (6000, 1000, 'ISSUED', '2024-06-01', 'PROVIDER', 'ACH', 100.00, 36.00, 'R-6000', '2024-06-01 00:00:00'),
  (6001, 1000, 'ISSUED', '2024-06-01', 'PROVIDER', 'ACH', 44.00, 0.00, 'R-6001', '2024-06-01 00:00:00');
UPDATE {s}.payment SET status = 'VOIDED', updated_at = '2024-06-01 00:00:00' WHERE payment_id = 5000;
COMMIT;
BEGIN;
INSERT INTO {s}.claim VALUES
  (1003, 101, 2, 'C-1003', 'PAID', '2024-06-02', 50.00, 50.00, 50.00, 0.00, NULL, '2024-06-02 00:00:00');
INSERT INTO {s}.payment VALUES
  (6002, 1003, 'ISSUED', '2024-06-02', 'MEMBER', 'CHECK', 50.00, 0.00, NULL, '2024-06-02 00:00:00');
COMMIT;
BEGIN;
UPDATE {s}.family SET status = 'S', updated_at = '2024-06-03 00:00:00' WHERE family_id = 1;
UPDATE {s}.family_member SET terminated_on = '2024-06-03', updated_at = '2024-06-03 00:00:00'
  WHERE family_id = 1;
COMMIT;
UPDATE {s}.claim SET status = 'DENIED', denial_code = 'CO-97' WHERE claim_id = 1002;
UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = 1;
"""


@pytest.fixture
def schema(postgres: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    postgres.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE", "source")


def _capture(kafka: KafkaTestCluster, ends: dict[tuple[str, int], int]) -> list[RawMessage]:
    """Every message of the captured topics up to ``ends``, as ``replay`` input."""
    consumer = kafka.consumer(None, {"enable.auto.commit": False})
    out: list[RawMessage] = []
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
        wanted = sum(ends.values())
        deadline = time.monotonic() + 60
        while len(out) < wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            position = Position(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            headers = [(k, v) for k, v in (msg.headers() or [])]
            out.append(RawMessage(position, msg.key(), msg.value(), headers or None))
    finally:
        consumer.close()
    assert len(out) == sum(ends.values())
    return sorted(out, key=lambda m: (m.position.offset, m.position.topic, m.position.partition))


def test_claims_paid_with_their_eops_arrive_whole_and_the_transaction_topic_replays_cleanly(
    kafka: KafkaTestCluster, postgres: PostgresServer, debezium: ConnectWorker, schema: str, tmp_path: Path
) -> None:
    database, prefix, sentinel = "source", f"pgtx{uuid.uuid4().hex[:8]}", f"SENTINEL-{uuid.uuid4().hex}"
    connector = seeded_connector(
        postgres, database, schema, prefix, **{"provide.transaction.metadata": "true"}
    )
    debezium.add_connector(connector)
    try:
        postgres.execute(CHANGES.format(s=schema, sentinel=sentinel), database)
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
        # The sentinel's own END is written after its event: wait for it too.
        wait_for_message(kafka, f"{prefix}.transaction", b'"END"', 30)
        time.sleep(2)
    finally:
        debezium.remove_connector(prefix)
    topics = [f"{prefix}.{schema}.{table}" for table in TABLES]
    transaction_topic = f"{prefix}.transaction"
    ends = end_offsets(kafka, [*topics, transaction_topic])

    mapping = mapping_for(prefix, schema)
    mapping += f"transactions:\n  topic: {transaction_topic}\n"
    spec = parse_mapping(mapping)
    names = ingest_names()
    service = IngestService(
        ingest_settings(kafka, tmp_path, names, batch_max_events=5, batch_max_ms=200), spec
    )  # small batches: a transaction's events land in several Kafka transactions
    service.start()
    try:
        counts = ingest_to_end(service, kafka, names["group"], ends)
    finally:
        service.close()
    assert {k: v for k, v in counts.items() if k.startswith("dlq.")} == {}
    assert counts["transaction_ends"] >= 5
    assert counts["ledger_records"] >= 5

    storage = LocalStorage(tmp_path / "bucket")
    run = snapshot_run(
        kafka,
        names["state"],
        storage,
        work_dir=tmp_path,
        transaction_tables=frozenset(spec.tables),
        transaction_horizon_s=7 * 86400,
    )
    result = run.run(DAY)
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    checks = result.manifest.checks["transactions"]
    assert checks["incomplete"] == 0
    assert checks["tracked"] >= 5
    files = published(storage, result.manifest)
    delivered = {entity: sorted(files.get(entity, []), key=record_id) for entity in ORACLE}
    assert delivered == expected_records(postgres, database, schema)

    captured = replay(spec, _capture(kafka, ends))
    assert captured.dead_letters == []
    tally = captured.transactions
    assert tally.begins == tally.ends >= 5
    assert tally.incomplete == []
    assert tally.complete >= 5
