"""Source schema changes over real PostgreSQL, real Debezium and the real broker (issue 20).

While Debezium streams, the source's DDL changes: a column added to ``claim`` (the mapping does
not read it), ``payment.reference`` dropped (the mapping's nullable ``EOP.PaymentReference``
reads it: without the check its rows would be delivered with an empty reference and no error at
all), and, when the messages carry schemas, ``provider.in_network`` retyped from boolean to
text. Ingest must report the dropped and retyped columns at once, by table and column
(``carecloud_source_schema_mismatch`` and its log line), ``status`` run as a process must list
them from the topics' newest messages, and the added column must change nothing: the delivered
Claims equal ``SELECT *`` of the table mapped by ``test_source_postgres``'s own functions.

Without schemas (``schemas.enable=false``) the types are unknown and only the drop is seen; 150
payments follow it, so the sampled check (one message in 100) meets the new shape.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from connector.devtools.debezium import ConnectWorker
from connector.devtools.postgres import PostgresServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.ops.metrics import Metrics
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.pg_source import (
    DAY,
    TABLES,
    claim_record,
    end_offsets,
    ingest_to_end,
    mapping_for,
    record_id,
    seeded_connector,
    wait_for_message,
)
from tests.integration.snapshot_helpers import published, snapshot_run
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

CHANGES = """
ALTER TABLE {s}.claim ADD COLUMN fax text;
UPDATE {s}.claim SET fax = '555-0100', status = 'APPROVED', updated_at = '2024-06-01 00:00:00'
  WHERE claim_id = 1000;
INSERT INTO {s}.claim VALUES
  (1003, 101, 2, 'C-1003', 'SUBMITTED', '2024-06-01', 10.00, NULL, NULL, NULL, NULL, '2024-06-01 00:00:00',
   '555');
ALTER TABLE {s}.payment DROP COLUMN reference;
INSERT INTO {s}.payment
  SELECT 6000 + i, 1000, 'ISSUED', '2024-06-02', 'PROVIDER', 'ACH', i, 0.00, '2024-06-02 00:00:00'
  FROM generate_series(1, 150) AS i;
"""
RETYPE = "ALTER TABLE {s}.provider ALTER COLUMN in_network TYPE text USING in_network::text;"
LAST = "UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = 1;"


def _mismatch(metrics: Metrics, table: str, column: str, problem: str) -> float | None:
    labels = {"table": table, "column": column, "problem": problem}
    value: float | None = metrics.registry.get_sample_value("carecloud_source_schema_mismatch", labels)
    return value


@pytest.mark.parametrize("schemas", [False, True], ids=["json", "json-with-schemas"])
def test_a_dropped_or_retyped_mapped_column_is_reported_at_once_and_an_added_one_changes_nothing(
    kafka: KafkaTestCluster,
    postgres: PostgresServer,
    debezium: ConnectWorker,
    schema: str,
    schemas: bool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database, prefix, sentinel = "source", f"pg{uuid.uuid4().hex[:8]}", f"SENTINEL-{uuid.uuid4().hex}"
    connector = seeded_connector(postgres, database, schema, prefix, schemas=schemas)
    debezium.add_connector(connector)
    try:
        wait_for_message(kafka, f"{prefix}.{schema}.payment", b"R-5000", 120)  # the initial snapshot is in
        statements = CHANGES + (RETYPE if schemas else "") + LAST
        postgres.execute(statements.format(s=schema, sentinel=sentinel), database)
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
    finally:
        debezium.remove_connector(prefix)
    topics = [f"{prefix}.{schema}.{t}" for t in TABLES]
    ends = end_offsets(kafka, topics)

    mapping_text = mapping_for(prefix, schema)
    names = ingest_names()
    metrics = Metrics()
    settings = ingest_settings(kafka, tmp_path, names, batch_max_events=50, batch_max_ms=200)
    service = IngestService(settings, parse_mapping(mapping_text), metrics=metrics)
    service.start()
    try:
        with caplog.at_level(logging.INFO, logger="connector.ingest.schema_watch"):
            counts = ingest_to_end(service, kafka, names["group"], ends)
    finally:
        service.close()

    # Reported by table and column, once each, never with a value.
    assert _mismatch(metrics, f"{schema}.payment", "reference", "dropped") == 1
    reported = sorted(
        (r.__dict__["table"], r.__dict__["what"], r.__dict__["reason"])
        for r in caplog.records
        if r.levelno == logging.ERROR
    )
    expected = [(f"{schema}.payment", "reference", "dropped")]
    if schemas:
        assert _mismatch(metrics, f"{schema}.provider", "in_network", "retyped") == 1
        expected.append((f"{schema}.provider", "in_network", "retyped"))
    assert reported == sorted(expected)
    assert sentinel not in caplog.text
    assert "555-0100" not in caplog.text
    # The added column is not reported: every claim series (one per mapped column, from the
    # start) stays at 0, and the unmapped column has none.
    claim = [
        s for f in metrics.registry.collect() for s in f.samples if s.labels.get("table") == f"{schema}.claim"
    ]
    assert claim
    assert [s for s in claim if s.value != 0 or s.labels.get("column") == "fax"] == []
    # The retyped column's changes are dead letters (wrong_type); nothing else is.
    dead = {k: v for k, v in counts.items() if k.startswith("dlq.")}
    assert set(dead) <= ({"dlq.wrong_type"} if schemas else set()), dead

    # status, as an operator runs it: the same columns, from the topics' newest messages.
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(mapping_text)
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("CARECLOUD_")},
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping_file),
        "CARECLOUD_INGEST_GROUP_ID": names["group"],
    }
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    problems = json.loads(done.stdout)["source_schema"]["problems"]
    assert sorted((p["table"], p["column"], p["problem"]) for p in problems) == sorted(expected), problems
    text = subprocess.run(
        [sys.executable, "-m", "connector.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"{schema}.payment.reference dropped (EOP.PaymentReference reads it)" in text.stdout, text.stdout

    # The added column changes nothing: the delivered Claims equal SELECT * of the table.
    storage = LocalStorage(tmp_path / "bucket")
    result = snapshot_run(kafka, names["state"], storage, work_dir=tmp_path).run(DAY)
    assert result.outcome in (Outcome.PUBLISHED, Outcome.PARTIAL)
    assert result.manifest is not None
    files = published(storage, result.manifest)
    expected_claims = sorted(
        (claim_record(r) for r in postgres.rows(f"{schema}.claim", database)), key=record_id
    )
    assert [record_id(r) for r in expected_claims] == ["CLM-1000", "CLM-1001", "CLM-1002", "CLM-1003"]
    assert sorted(files["Claim"], key=record_id) == expected_claims
