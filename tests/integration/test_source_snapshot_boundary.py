"""A transaction in flight as Debezium's snapshot begins (real PostgreSQL, real Debezium).

Debezium reads the snapshot's LSN (``L_snap``) in its snapshot transaction and streams what
commits after it. A transaction that wrote before that moment and commits after it is not in
the snapshot, and is streamed first, as ``sequence`` ``[null, lsn]`` with ``lsn`` *below*
``L_snap``. In a source partition the snapshot read nothing from, the position was all the sweep
(docs/decisions/0019) had to go on, so the row that transaction inserted was taken for one
deleted before the snapshot and swept from every delivery, though the database has it.

The choreography is driven by what PostgreSQL reports, not by sleeps: creating a logical slot
waits for the transactions running when it starts (X), then for those that began while it
waited (Y); a transaction that begins after X ends and is still open when Y ends (Z) is decoded
whole, and is still open when the snapshot's reads begin. Z inserts provider 3, whose key
hashes to a partition with no read (providers 1 and 2 sit in the other two). The test first
checks that the boundary case really happened (Z streamed first, below ``L_snap``), then that
the delivered snapshot equals ``SELECT *`` of every table (the database as the oracle).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from connector.devtools.debezium import ConnectWorker
from connector.devtools.postgres import PostgresServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.pg_source import (
    DAY,
    ORACLE,
    PARTITIONS,
    TABLES,
    end_offsets,
    expected_records,
    ingest_to_end,
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

PROVIDER_3 = """INSERT INTO {s}.provider VALUES
  (3, '3234567890', 'Straddle Clinic', 'CLINIC', NULL, true, 'A', 'WA', '98101', '2024-06-02 00:00:00');"""


class Session:
    """One psql session held open: statements are sent one at a time, so a transaction stays
    open between them; ``application_name`` lets the test find its backend."""

    def __init__(self, postgres: PostgresServer, database: str, name: str) -> None:
        self.postgres, self.database, self.name = postgres, database, name
        self._proc = subprocess.Popen(
            [
                str(postgres.bin_dir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                postgres.dsn(database),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PGAPPNAME": name},
        )

    def send(self, sql: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(sql + "\n")
        self._proc.stdin.flush()

    def xid(self) -> str:
        """The session's transaction id once its first write has one."""
        sql = f"SELECT backend_xid FROM pg_stat_activity WHERE application_name = '{self.name}'"
        found = _until(lambda: self.postgres.execute(sql, self.database).strip(), f"{self.name} has an xid")
        return found

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        assert self._proc.wait(30) == 0, self._proc.stderr.read() if self._proc.stderr else ""


def _until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
    return found


def _slot_waits_for(postgres: PostgresServer, database: str, session: Session) -> None:
    """Until the walsender creating the slot waits on ``session``'s transaction."""
    xid = session.xid()
    sql = (
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE a.backend_type = 'walsender' AND NOT l.granted AND l.locktype = 'transactionid' "
        f"AND l.transactionid = '{xid}'"
    )
    _until(lambda: postgres.execute(sql, database).strip() == "1", f"the slot waits for {session.name}")


def _source_records(kafka: KafkaTestCluster, topic: str) -> list[dict[str, Any]]:
    """Every record of a source topic, as Debezium's JSON payloads."""
    consumer = kafka.consumer(None, {"enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found, eof = [], set()
    try:
        while len(eof) < PARTITIONS:
            msg = consumer.poll(5)
            assert msg is not None, f"{topic} did not reach its end"
            if msg.error() is not None:
                eof.add(msg.partition())
            elif msg.value():
                found.append(json.loads(msg.value() or b"null"))
    finally:
        consumer.close()
    return found


def test_a_row_inserted_by_a_transaction_in_flight_as_the_snapshot_began_is_delivered(
    kafka: KafkaTestCluster,
    postgres: PostgresServer,
    debezium: ConnectWorker,
    schema: str,
    tmp_path: Path,
) -> None:
    database, prefix, sentinel = "source", f"pg{uuid.uuid4().hex[:8]}", f"SENTINEL-{uuid.uuid4().hex}"
    connector = seeded_connector(postgres, database, schema, prefix)
    topics = [f"{prefix}.{schema}.{table}" for table in TABLES]
    x, y, z = (Session(postgres, database, f"{name}_{prefix}") for name in "xyz")
    registering = threading.Thread(target=debezium.add_connector, args=(connector,))
    try:
        x.send(f"BEGIN; UPDATE {schema}.claim SET paid = paid WHERE claim_id = 1000;")
        x.xid()
        registering.start()
        _slot_waits_for(postgres, database, x)
        y.send(f"BEGIN; UPDATE {schema}.family_member SET first_name = first_name WHERE member_id = 10;")
        y.xid()
        x.send("COMMIT;")
        _slot_waits_for(postgres, database, y)
        z.send("BEGIN; " + PROVIDER_3.format(s=schema))
        z.xid()
        y.send("COMMIT;")
        # The snapshot's reads have begun (its LSN is read before them): Z is still open.
        wait_for_message(kafka, f"{prefix}.{schema}.family", b'"snapshot":"first', 60)
        z.send("COMMIT;")
        for session in (x, y, z):
            session.close()
        registering.join(60)
        postgres.execute(
            f"UPDATE {schema}.provider SET display_name = '{sentinel}' WHERE provider_id = 1", database
        )
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
    finally:
        debezium.remove_connector(prefix)

    # The boundary case happened: provider 3 was streamed first after the snapshot, below it.
    records = _source_records(kafka, f"{prefix}.{schema}.provider")
    l_snap = next(r["source"]["lsn"] for r in records if r["op"] == "r")
    [inserted] = [r for r in records if r["op"] == "c" and r["after"]["provider_id"] == 3]
    assert json.loads(inserted["source"]["sequence"])[0] is None
    assert inserted["source"]["lsn"] < l_snap

    ends = end_offsets(kafka, topics)
    mapping = mapping_for(prefix, schema)
    names = ingest_names()
    service = IngestService(ingest_settings(kafka, tmp_path, names), parse_mapping(mapping))
    service.start()
    try:
        ingest_to_end(service, kafka, names["group"], ends)
    finally:
        service.close()

    storage = LocalStorage(tmp_path / "bucket")
    result = snapshot_run(kafka, names["state"], storage, work_dir=tmp_path).run(DAY)
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    files = published(storage, result.manifest)
    expected = expected_records(postgres, database, schema)
    for entity in ORACLE:
        got = [record_id(r) for r in sorted(files.get(entity, []), key=record_id)]
        wanted = [record_id(r) for r in expected[entity]]
        assert got == wanted, (
            entity,
            run_facts(result.manifest, entity),
            state_history(kafka, names["state"], entity, set(got) ^ set(wanted)),
        )
        assert sorted(files.get(entity, []), key=record_id) == expected[entity], entity
