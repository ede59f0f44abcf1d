"""A live database: the initial snapshot taken while writes go on, a long transaction interleaved
with short ones, text primary keys moved with their TOASTed column unchanged, and the result
delivered through the Portal API (issue 19).

The same six tables as ``test_source_postgres`` but with text provider keys (one with a ``/``
and a non-ASCII letter). A writer thread keeps committing small transactions while Debezium
registers and takes its initial snapshot; a ``psql`` session holds a transaction open across
several of those commits (its rows become visible only at its commit, after the others); one
transaction moves provider ``1`` to ``P/9 ü`` and repoints its care episode and claims, while
the provider's TOASTed display name stays unchanged. Every set is below 5000 records, so every
entity goes to the Portal simulator; the oracle is ``SELECT *`` mapped by the other module's
hand-written functions (no connector code), turned into the JSON the Portal holds.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from connector.devtools.debezium import ConnectWorker, postgres_connector
from connector.devtools.postgres import PostgresServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.pg_source import (
    BIG,
    DDL,
    ORACLE,
    PARTITIONS,
    SEED,
    TABLES,
    end_offsets,
    expected_records,
    ingest_to_end,
    key_moves,
    mapping_for,
    record_id,
    wait_for_message,
)
from tests.integration.portal_sim import Simulator, next_day
from tests.integration.snapshot_helpers import snapshot_run
from tests.integration.test_snapshot_api import Route
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

TEXT_KEYS = DDL.replace("provider_id bigint", "provider_id text")
MOVED = "P/9 ü"  # a text key with a slash and a non-ASCII letter

# Before Debezium starts: provider 1's display name becomes ~10 kB (TOASTed out of line).
PREPARE = """
UPDATE {s}.provider
  SET display_name = (SELECT string_agg(md5((i * 3)::text), '') FROM generate_series(1, 320) AS i)
  WHERE provider_id = '1';
"""

# The long transaction, in its own psql session: its first statements run before the short
# transactions below commit, its commit comes after them.
LONG = """
BEGIN;
UPDATE {s}.claim SET status = 'APPROVED', allowed = billed, updated_at = '2024-06-01 00:00:00'
  WHERE claim_id = 1000;
INSERT INTO {s}.payment VALUES
  (6000, 1000, 'ISSUED', '2024-06-01', 'PROVIDER', 'ACH', 144.00, 36.00, 'LONG-1', '2024-06-01 00:00:00');
SELECT pg_sleep(4);
UPDATE {s}.claim SET status = 'PAID', paid = 144.00, updated_at = '2024-06-02 00:00:00' WHERE claim_id = 1000;
UPDATE {s}.payment SET status = 'VOIDED', updated_at = '2024-06-02 00:00:00' WHERE payment_id = 5000;
COMMIT;
"""

SHORT = [
    "UPDATE {s}.claim SET status = 'DENIED', denial_code = 'CO-1', updated_at = '2024-06-01 00:00:01' "
    "WHERE claim_id = 1002",
    "INSERT INTO {s}.payment VALUES (6001, 1001, 'ISSUED', '2024-06-01', 'MEMBER', 'CHECK', 5.00, 0.00, "
    "NULL, '2024-06-01 00:00:02')",
    "UPDATE {s}.payment SET amount = 6.00 WHERE payment_id = 6001",
    "DELETE FROM {s}.payment WHERE payment_id = 5001",
]

MOVE = """
BEGIN;
UPDATE {s}.provider SET provider_id = '{moved}', updated_at = '2024-06-03 00:00:00' WHERE provider_id = '1';
UPDATE {s}.care_episode SET provider_id = '{moved}' WHERE provider_id = '1';
UPDATE {s}.claim SET provider_id = '{moved}' WHERE provider_id = '1';
COMMIT;
UPDATE {s}.provider SET in_network = false WHERE provider_id = '{moved}';
UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = '2';
"""


def _writer(postgres: PostgresServer, database: str, schema: str, stop: threading.Event) -> list[int]:
    """Small transactions, one after another, until ``stop``: new families and members, updates
    and deletes of the newest ones. Returns the family ids written (for the test's own check)."""
    written: list[int] = []
    n = 100
    while not stop.is_set():
        family, member = n, n * 10
        postgres.execute(
            f"INSERT INTO {schema}.family VALUES ({family}, 'Live {n}', 'A', 'GOLD', '2024-01-01', NULL, "
            f"NULL, NULL, 1.00, NULL, '2024-07-01 00:00:00');"
            f"INSERT INTO {schema}.family_member VALUES ({member}, {family}, 'M-{member}', 'L', 'N', "
            f"'1990-01-01', 'F', 'self', '2024-01-01', NULL, '2024-07-01 00:00:00');"
            f"UPDATE {schema}.family SET plan_code = 'SILVER' WHERE family_id = {family - 1} AND {n} > 100;"
            + (f"DELETE FROM {schema}.family_member WHERE member_id = {(n - 2) * 10};" if n % 3 == 0 else "")
            + (f"DELETE FROM {schema}.family WHERE family_id = {n - 2};" if n % 3 == 0 else ""),
            database,
        )
        written.append(family)
        n += 1
        time.sleep(0.05)
    return written


def _as_portal_json(record: dict[str, str]) -> dict[str, Any]:
    """The oracle's CSV cells as the Portal's JSON: an empty optional cell is null, a boolean is
    a JSON boolean, everything else stays the string it is in the file."""
    out: dict[str, Any] = {}
    for name, cell in record.items():
        if cell == "":
            out[name] = None
        elif cell in ("true", "false"):
            out[name] = cell == "true"
        else:
            out[name] = cell
    return out


def test_live_writes_a_long_transaction_and_text_keys_reach_the_portal_as_select_star(
    kafka: KafkaTestCluster,
    postgres: PostgresServer,
    debezium: ConnectWorker,
    sim: Simulator,
    tmp_path: Path,
) -> None:
    database, prefix = "source", f"pl{uuid.uuid4().hex[:8]}"
    schema, sentinel = f"l_{uuid.uuid4().hex[:10]}", f"SENTINEL-{uuid.uuid4().hex}"
    postgres.execute(TEXT_KEYS.format(s=schema), database)
    postgres.execute(SEED.format(s=schema, big=BIG), database)
    postgres.execute(PREPARE.format(s=schema), database)
    stop = threading.Event()
    written: list[int] = []
    writer = threading.Thread(target=lambda: written.extend(_writer(postgres, database, schema, stop)))
    writer.start()
    try:
        time.sleep(0.5)  # writes are going on when Debezium opens its slot and snapshot
        debezium.add_connector(
            postgres_connector(
                prefix,
                port=postgres.port,
                database=database,
                topic_prefix=prefix,
                tables=[f"{schema}.{table}" for table in TABLES],
                partitions=PARTITIONS,
                **{"slot.drop.on.stop": "true"},
            )
        )
        try:
            debezium.wait_running(prefix)
            time.sleep(2.0)  # and go on while it streams
            long = subprocess.Popen(
                [str(postgres.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", postgres.dsn(database)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert long.stdin is not None
            long.stdin.write(LONG.format(s=schema))
            long.stdin.close()
            time.sleep(1.0)  # the long transaction has begun and holds its first changes
            for statement in SHORT:
                postgres.execute(statement.format(s=schema) + ";", database)
            assert long.poll() is None, "the long transaction ended before the short ones committed"
            assert long.wait(timeout=60) == 0, long.stderr.read() if long.stderr else ""
            stop.set()
            writer.join(timeout=30)
            postgres.execute(MOVE.format(s=schema, moved=MOVED, sentinel=sentinel), database)
            topics = [f"{prefix}.{schema}.{table}" for table in TABLES]
            wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
            # The move's create carried the placeholder for the unchanged, TOASTed name.
            wait_for_message(kafka, f"{prefix}.{schema}.provider", b"__debezium_unavailable_value", 10)
        finally:
            debezium.remove_connector(prefix)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert len(written) > 20, "the writer hardly ran while the snapshot was taken"
    ends = end_offsets(kafka, topics)
    [(old, new)] = key_moves(kafka, f"{prefix}.{schema}.provider", count=1)
    assert old != new, "the text key's move stayed in its partition: the carry is not exercised"

    mapping = mapping_for(prefix, schema)
    names = ingest_names()
    service = IngestService(
        ingest_settings(kafka, tmp_path, names, batch_max_events=200, batch_max_ms=200),
        parse_mapping(mapping),
    )
    service.start()
    try:
        counts = ingest_to_end(service, kafka, names["group"], ends, timeout_s=120, carry=True)
    finally:
        service.close()
    assert {k: v for k, v in counts.items() if k.startswith("dlq.")} == {}
    assert counts["carry_offers"] == PARTITIONS  # the provider's move, offered to every partition

    day = next_day()
    storage = LocalStorage(tmp_path / "bucket")
    result = snapshot_run(kafka, names["state"], storage, api=Route(sim.url), work_dir=tmp_path).run(day)
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    assert {e.entity: e.route for e in result.manifest.entities} == dict.fromkeys(ORACLE, "api")
    expected = expected_records(postgres, database, schema)
    assert any(r["EntityId"] == f"PRV-{MOVED}" for r in expected["Provider"])
    for entity in ORACLE:
        delivered = sorted(sim.accepted(entity, day)["records"], key=lambda r: str(r["EntityId"]))
        assert [r["EntityId"] for r in delivered] == [record_id(r) for r in expected[entity]], entity
        assert delivered == [_as_portal_json(r) for r in expected[entity]], entity
    postgres.execute(f"DROP SCHEMA {schema} CASCADE", database)
