"""SQL in, snapshot out: real PostgreSQL, real Debezium, the connector's ingest and snapshot (issue 19).

The example mapping's six tables are created in a schema of the test's own, filled with SQL
(an initial snapshot, then inserts, updates that leave a TOASTed text column unchanged,
several rows in one statement, deletes, a delete and re-insert of one key, an insert deleted in
its own transaction, a date before 1970, a timestamp after 2038, ids above 2^53), captured by
Debezium, ingested and delivered as today's snapshot. The oracle is the database itself:
``SELECT *`` of every table, mapped by ``_expected`` below, which shares no code with the
connector's mapping, must equal the delivered files exactly.

Primary-key updates of two families in one statement (families 2 and 3 become 22 and 35), whose
TOASTed name is unchanged, so Debezium's create under the new key carries its placeholder: the
name must reach the new key whether the two keys sit in one partition or in two (the carry
topic). Without schemas the keys' partitions are fixed by their bytes (Kafka's murmur2), and
the test checks that one move crosses partitions and the other does not; with schemas the key
bytes name the random topic prefix, so either may happen.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from connector.devtools.debezium import ConnectWorker
from connector.devtools.postgres import PostgresServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.pg_source import (
    BIG,
    CHANGES,
    DAY,
    ORACLE,
    PARTITIONS,
    TABLES,
    end_offsets,
    expected_records,
    ingest_to_end,
    key_moves,
    mapping_for,
    record_id,
    run_facts,
    seeded_connector,
    state_history,
    wait_for_message,
)
from tests.integration.snapshot_helpers import published, snapshot_run
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("schemas", [False, True], ids=["json", "json-with-schemas"])
def test_the_delivered_snapshot_equals_select_star_of_every_table(
    kafka: KafkaTestCluster,
    postgres: PostgresServer,
    debezium: ConnectWorker,
    schema: str,
    schemas: bool,
    tmp_path: Path,
) -> None:
    database, prefix, sentinel = "source", f"pg{uuid.uuid4().hex[:8]}", f"SENTINEL-{uuid.uuid4().hex}"
    connector = seeded_connector(postgres, database, schema, prefix, schemas=schemas)
    debezium.add_connector(connector)
    try:
        postgres.execute(CHANGES.format(s=schema, big=BIG, sentinel=sentinel), database)
        topics = [f"{prefix}.{schema}.{table}" for table in TABLES]
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
        # The unchanged TOAST case really happened: Debezium sent its placeholder.
        wait_for_message(kafka, f"{prefix}.{schema}.family", b"__debezium_unavailable_value", 10)
    finally:
        debezium.remove_connector(prefix)
    ends = end_offsets(kafka, topics)  # the connector has stopped: every event it sent is in
    moves = key_moves(kafka, f"{prefix}.{schema}.family")
    if not schemas:
        assert sorted(old != new for old, new in moves) == [False, True], moves

    names = ingest_names()
    service = IngestService(
        ingest_settings(kafka, tmp_path, names, batch_max_events=50, batch_max_ms=200),
        parse_mapping(mapping_for(prefix, schema)),
    )
    service.start()
    try:
        # The primary-key updates' offers went to the carry topic in those batches: ingest
        # runs on until it has taken them in, as it would in production.
        counts = ingest_to_end(service, kafka, names["group"], ends, carry=True)
    finally:
        service.close()
    assert counts.get("aborted_batches", 0) == 0
    assert {k: v for k, v in counts.items() if k.startswith("dlq.")} == {}
    assert counts["carry_offers"] == 2 * PARTITIONS  # each update offered to every partition

    storage = LocalStorage(tmp_path / "bucket")
    result = snapshot_run(kafka, names["state"], storage, work_dir=tmp_path).run(DAY)
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    files = published(storage, result.manifest)
    delivered = {entity: sorted(files.get(entity, []), key=record_id) for entity in ORACLE}
    expected = expected_records(postgres, database, schema)
    for entity in ORACLE:  # entity by entity, EntityIds first: a failure then says what differs
        got, wanted = [record_id(r) for r in delivered[entity]], [record_id(r) for r in expected[entity]]
        if got != wanted:
            differing = set(got) ^ set(wanted)
            pytest.fail(
                f"{entity}: delivered {got}, the database has {wanted}; ingest counts {counts}; "
                f"the run said {run_facts(result.manifest, entity)}; the state topic's records of "
                f"{sorted(differing)}: {state_history(kafka, names['state'], entity, differing)}"
            )
        assert delivered[entity] == expected[entity], entity
