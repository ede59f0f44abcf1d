"""A mapping change rolled out over the real source: PostgreSQL, Debezium, the re-mapping pass
killed part-way, and a snapshot that waits for the pass (issue 20, RELIABILITY row 26;
docs/decisions/0025).

The example mapping's six tables are seeded with a few hundred families and members on top of
the shared seed, captured by Debezium and ingested under the *current* mapping, together with
the shared change script (TOASTed names left unchanged, primary-key updates of two families, one
of whose keys moves across partitions, so its name reaches the new key through the carry topic).
The *new* mapping changes two enum maps (Family T is now SUSPENDED, FamilyMember X now
UNDISCLOSED) and maps a column the current one leaves out (Family's PostalCode).

Then, as an operator would:

1. ``validate --mapping NEW --preview --json`` (the command itself, read-only) says how many
   records and fields change; its counts must equal the oracle's: ``SELECT *`` mapped by hand
   under the current and the new mapping (``pg_source``'s functions, no connector code).
2. The new mapping is rolled out as a new ``ingest`` process while SQL keeps writing; the
   process is SIGKILLed while its re-mapping pass is part-way (both versions in the state).
3. A snapshot with ``CARECLOUD_SNAPSHOT_MAPPING_POLICY=wait`` starts while the pass is stopped:
   it waits. The ingest is started again, resumes the pass and finishes it; the snapshot then
   cuts and delivers.
4. What it delivers equals ``SELECT *`` of every table mapped by the new mapping: never a mix.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.config import load_settings
from connector.devtools.debezium import ConnectWorker
from connector.devtools.postgres import PostgresServer
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.mapping.versions import entity_versions
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome
from connector.snapshot.run_config import RunResult
from connector.snapshot.service import build_run
from connector.state.mapping_registry import read_registry
from tests.integration.family_ingest import ingest_env, ingest_names, ingest_settings, wait_until
from tests.integration.pg_source import (
    BIG,
    CHANGES,
    FAMILY_STATUS,
    GENDER,
    MAPPING,
    ORACLE,
    PARTITIONS,
    TABLES,
    end_offsets,
    expected_records,
    family_record,
    ingest_to_end,
    key_moves,
    mapping_for,
    member_record,
    record_id,
    seeded_connector,
    wait_for_message,
)
from tests.integration.snapshot_helpers import published
from tests.integration.state_helpers import read_state
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

_CLI = [sys.executable, "-m", "connector.cli"]
FAMILIES = 600  # on top of the shared seed: enough rows that a slow pass is caught part-way

BULK = """
INSERT INTO {s}.family
SELECT 100 + i, 'Family ' || i, (ARRAY['A', 'P', 'S', 'T'])[1 + i % 4], 'GOLD', DATE '2024-01-01' + i % 300,
  NULL, CASE WHEN i % 3 = 0 THEN NULL ELSE jsonb_build_object('state', 'CA', 'zip', (90000 + i)::text) END,
  NULL, 100.00 + i, NULL, TIMESTAMP '2024-01-01 00:00:00' + i * INTERVAL '1 minute'
FROM generate_series(1, {n}) AS i;
INSERT INTO {s}.family_member
SELECT 100 + i, 100 + i, 'M-' || i, 'First ' || i, 'Last ' || i, DATE '1980-01-01' + i,
  (ARRAY['F', 'M', 'X', 'U'])[1 + i % 4], 'self', DATE '2024-01-01', NULL, TIMESTAMP '2024-01-02 00:00:00'
FROM generate_series(1, {n}) AS i;
"""

# What SQL keeps doing while the new mapping rolls out: statuses and genders move (so rows the
# pass has not reached yet change under it), a family and its member are added, one is deleted.
LOAD = """
UPDATE {s}.family SET status = (ARRAY['A', 'P', 'S', 'T'])[1 + (family_id + {k}) % 4],
  updated_at = updated_at + INTERVAL '1 day' WHERE family_id BETWEEN {lo} AND {lo} + 9;
UPDATE {s}.family_member SET gender = (ARRAY['F', 'M', 'X', 'U'])[1 + (member_id + {k}) % 4]
  WHERE member_id BETWEEN {lo} + 300 AND {lo} + 304;
BEGIN;
INSERT INTO {s}.family VALUES ({new}, '{canary} {k}', 'T', 'SILVER', '2024-07-01', NULL,
  '{{"state": "OR", "zip": "97201"}}', NULL, 5.00, NULL, '2024-07-01 00:00:00');
INSERT INTO {s}.family_member VALUES ({new}, {new}, 'M-N{k}', '{canary}', 'Comer', '2001-02-03', 'X', 'self',
  '2024-07-01', NULL, '2024-07-01 00:00:00');
COMMIT;
DELETE FROM {s}.family_member WHERE member_id = {lo} + 5;
"""
LOAD_ROUNDS = 30
CANARY = "Quillon Canarywick"
"""A name only the load writes: delivered, and in no log line of any process."""

OLD = MAPPING.replace("PostalCode: {path: address.zip}", "PostalCode: {const: null}")
NEW = MAPPING.replace("S: SUSPENDED, T: TERMINATED}", "S: SUSPENDED, T: SUSPENDED}").replace(
    "X: NON_BINARY", "X: UNDISCLOSED"
)
NEW_STATUS = {**FAMILY_STATUS, "T": "SUSPENDED"}
NEW_GENDER = {**GENDER, "X": "UNDISCLOSED"}


def _old_family(r: dict[str, Any]) -> dict[str, str]:
    return {**family_record(r), "PostalCode": ""}


def _new_family(r: dict[str, Any]) -> dict[str, str]:
    return {**family_record(r), "Status": NEW_STATUS[r["status"]]}


def _new_member(r: dict[str, Any]) -> dict[str, str]:
    return {**member_record(r), "Gender": NEW_GENDER[r["gender"]]}


Oracle = dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, str]]]]
OLD_ORACLE: Oracle = {**ORACLE, "Family": ("family", _old_family)}
NEW_ORACLE: Oracle = {
    **ORACLE,
    "Family": ("family", _new_family),
    "FamilyMember": ("family_member", _new_member),
}


def _changes(before: list[dict[str, str]], after: list[dict[str, str]]) -> tuple[int, dict[str, int]]:
    """(records that differ, per field how many) between two mappings of the same rows."""
    assert [record_id(r) for r in before] == [record_id(r) for r in after]
    fields: Counter[str] = Counter()
    for old, new in zip(before, after, strict=True):
        fields.update(name for name in new if old[name] != new[name])
    return sum(old != new for old, new in zip(before, after, strict=True)), dict(fields)


def _versions(kafka: KafkaTestCluster, state_topic: str) -> dict[str, Counter[str | None]]:
    """Per entity, live complete rows per mapping version, as committed in the state topic."""
    found: dict[str, Counter[str | None]] = {}
    for (entity, _), row in read_state(kafka, state_topic, PARTITIONS).items():
        if row.complete:
            found.setdefault(entity, Counter())[row.mapping_version] += 1
    return found


def _remap(kafka: KafkaTestCluster, state_topic: str) -> dict[int, dict[str, Any]]:
    """The pass's progress per state partition, as the mapping registry holds it."""
    return dict(read_registry(kafka.config(), f"{state_topic}.mappings").remap)


def _remapped(kafka: KafkaTestCluster, state_topic: str) -> int:
    """Rows the pass has committed under the new mapping so far, over every partition."""
    return sum(d.get("counts", {}).get("remapped", 0) for d in _remap(kafka, state_topic).values())


def test_a_mapping_rollout_over_postgres_killed_part_way_delivers_the_new_mapping_of_select_star(
    kafka: KafkaTestCluster,
    postgres: PostgresServer,
    debezium: ConnectWorker,
    schema: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database, prefix = "source", f"pg{uuid.uuid4().hex[:8]}"
    topics = [f"{prefix}.{schema}.{table}" for table in TABLES]
    old_file, new_file = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_file.write_text(mapping_for(prefix, schema, OLD))
    new_file.write_text(mapping_for(prefix, schema, NEW))
    v1 = entity_versions(parse_mapping(old_file.read_text()))
    v2 = entity_versions(parse_mapping(new_file.read_text()))
    changed = {"Family", "FamilyMember"}
    assert {e for e in v1 if v1[e] != v2[e]} == changed

    connector = seeded_connector(postgres, database, schema, prefix)
    postgres.execute(BULK.format(s=schema, n=FAMILIES), database)
    names = ingest_names()
    debezium.add_connector(connector)
    try:
        sentinel = f"SENTINEL-{uuid.uuid4().hex}"
        postgres.execute(CHANGES.format(s=schema, big=BIG, sentinel=sentinel), database)
        wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)
        moves = key_moves(kafka, f"{prefix}.{schema}.family")
        assert sorted(old != new for old, new in moves) == [False, True], moves  # one crosses

        # Under the current mapping, to the end of what Debezium sent (carried names included).
        service = IngestService(
            ingest_settings(kafka, tmp_path, names, batch_max_events=300, batch_max_ms=200),
            parse_mapping(old_file.read_text()),
        )
        service.start()
        try:
            ingest_to_end(service, kafka, names["group"], end_offsets(kafka, topics), carry=True)
        finally:
            service.close()
        before = expected_records(postgres, database, schema, OLD_ORACLE)
        after = expected_records(postgres, database, schema, NEW_ORACLE)
        at_rollout = _versions(kafka, names["state"])
        assert {e: dict(c) for e, c in at_rollout.items() if e in changed} == {
            e: {v1[e]: len(before[e])} for e in changed
        }

        # 1. The preview, the operator's own command, read-only; its counts are the oracle's.
        env = ingest_env(
            kafka,
            new_file,
            names["group"],
            names["state"],
            STATE_DIR=str(tmp_path / "store"),
            TRANSACTIONAL_ID=names["txn"],
            DLQ_TOPIC=names["dlq"],
            BATCH_MAX_EVENTS="50",
            BATCH_MAX_MS="200",
            REMAP_ROWS_PER_BATCH="5",  # a slow pass: tens of transactions per partition
        )
        shown = subprocess.run(
            [*_CLI, "validate", "--mapping", str(new_file), "--preview", "--json"],
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        assert shown.returncode == 0, shown.stderr.decode()
        preview = json.loads(shown.stdout)["preview"]["entities"]
        for entity in changed:
            records, fields = _changes(before[entity], after[entity])
            assert records, entity  # the change really touches this entity
            assert fields, entity
            got = preview[entity]
            assert (got["records"], got["changed_records"], got["changed_fields"]) == (
                len(before[entity]),
                records,
                fields,
            ), entity
            assert (got["failing"], got["to_remap"], got["entity_ids"]) == ({}, 0, {"removed": 0, "added": 0})
        assert _versions(kafka, names["state"]) == at_rollout  # the preview wrote nothing

        # 2. The rollout, under load, killed while the pass is part-way.
        log = (tmp_path / "ingest.log").open("w")

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen([*_CLI, "ingest"], env=env, stdout=log, stderr=subprocess.STDOUT)

        def load() -> None:
            for k in range(LOAD_ROUNDS):
                statements = LOAD.format(s=schema, k=k, lo=101 + 10 * k, new=5000 + k, canary=CANARY)
                postgres.execute(statements, database)

        writer = threading.Thread(target=load, name="sql-load")
        stopping = threading.Event()  # set if the test fails first: the snapshot leaves
        proc = start()
        writer.start()
        try:
            assert wait_until(lambda: _remapped(kafka, names["state"]) >= 60, 120, 0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            writer.join(120)
            assert not writer.is_alive()
            at_kill = _versions(kafka, names["state"])
            if not at_kill["Family"][v1["Family"]] or all(
                p.get("done") for p in _remap(kafka, names["state"]).values()
            ):
                pytest.fail("the pass finished before the kill; slow it down")  # keeps the test honest
            assert set(at_kill["Family"]) == {v1["Family"], v2["Family"]}  # part-way: a mix in the state
            sentinel = f"SENTINEL-{uuid.uuid4().hex}"
            postgres.execute(
                f"UPDATE {schema}.provider SET display_name = '{sentinel}' WHERE provider_id = 2", database
            )
            wait_for_message(kafka, f"{prefix}.{schema}.provider", sentinel.encode(), 120)

            # 3. Tomorrow's snapshot (its window still ahead), policy wait, while the pass is stopped.
            settings = load_settings(
                kafka={"bootstrap_servers": kafka.bootstrap},
                ingest={
                    "mapping_file": new_file,
                    "group_id": names["group"],
                    "state_topic": names["state"],
                    "dlq_topic": names["dlq"],
                },
                snapshot={"mapping_policy": "wait", "work_dir": tmp_path / "work"},
            )
            day = dt.datetime.now(ZoneInfo(settings.snapshot.zone)).date() + dt.timedelta(days=1)
            storage = LocalStorage(tmp_path / "bucket")
            results: list[RunResult | BaseException] = []

            def snapshot() -> None:
                try:
                    results.append(build_run(settings, storage=storage, stop=stopping).run(day))
                except BaseException as exc:  # the test thread reports it
                    results.append(exc)

            runner = threading.Thread(target=snapshot, name="snapshot", daemon=True)
            with caplog.at_level(logging.INFO, logger="connector"):
                runner.start()
                waiting = "waiting for the re-mapping pass before the cut"
                assert wait_until(lambda: any(r.getMessage() == waiting for r in caplog.records), 60, 0.2)
                assert not results  # it waits: nothing cut, nothing out
                assert [k for k in storage.list_keys("") if not k.endswith("/_lease.json")] == []

                proc = start()  # fences the killed one (same transactional.id) and resumes the pass
                runner.join(300)
            assert not runner.is_alive(), "the snapshot did not finish after the pass did"
        finally:
            stopping.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            if writer.is_alive():
                writer.join(120)
    finally:
        debezium.remove_connector(prefix)
    assert proc.returncode == 0, (tmp_path / "ingest.log").read_text()[-3000:]

    # The pass finished everywhere before the cut: nothing refused, nothing left without its source.
    progress = _remap(kafka, names["state"])
    assert {p: d["done"] for p, d in progress.items()} == dict.fromkeys(range(PARTITIONS), True)
    counts = Counter[str]()
    for d in progress.values():
        counts.update(d.get("counts", {}))
    assert counts["remapped"] > 0
    assert (counts["failed"], counts["no_source"]) == (0, 0), counts

    # 4. The delivery: SELECT * under the new mapping, every entity, never a mix.
    [result] = results
    assert isinstance(result, RunResult), result
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    assert {r.entity: r.status for r in result.manifest.entities} == dict.fromkeys(ORACLE, "delivered")
    versions = result.manifest.checks["mapping"]
    for entity in changed:
        assert list(versions[entity]["versions"]) == [v2[entity]], versions[entity]
    files = published(storage, result.manifest)
    delivered = {entity: sorted(files.get(entity, []), key=record_id) for entity in ORACLE}
    expected = expected_records(postgres, database, schema, NEW_ORACLE)
    for entity in ORACLE:
        got, wanted = [record_id(r) for r in delivered[entity]], [record_id(r) for r in expected[entity]]
        assert got == wanted, entity
        assert delivered[entity] == expected[entity], entity
    statuses = Counter(r["Status"] for r in delivered["Family"])
    assert statuses["SUSPENDED"]
    assert not statuses["TERMINATED"]
    assert sum(bool(r["PostalCode"]) for r in delivered["Family"]) > FAMILIES // 2  # newly mapped, filled

    # An EntityId template change over the same state is refused at start-up, naming the table
    # and how many stored EntityIds would move (every provider the database has), and writes nothing.
    moved = tmp_path / "moved.yaml"
    moved.write_text(mapping_for(prefix, schema, NEW.replace('"PRV-{provider_id}"', '"PROV-{provider_id}"')))
    registry_before = read_registry(kafka.config(), f"{names['state']}.mappings").current
    refused = subprocess.run(
        [*_CLI, "ingest"],
        env={**env, "CARECLOUD_INGEST_MAPPING_FILE": str(moved)},
        capture_output=True,
        timeout=120,
    )
    said = refused.stdout.decode() + refused.stderr.decode()
    assert refused.returncode == 1, said[-3000:]
    providers = len(expected["Provider"])
    assert "entity_id template 'PRV-{provider_id}' -> 'PROV-{provider_id}'" in said, said[-3000:]
    assert f"{providers} of {providers} would change" in said
    assert read_registry(kafka.config(), f"{names['state']}.mappings").current == registry_before

    # The data stays in the sinks: the canary is delivered, and no process logged it.
    assert sum(r["FamilyName"].startswith(CANARY) for r in delivered["Family"]) == LOAD_ROUNDS
    logged = [
        (tmp_path / "ingest.log").read_text(),
        shown.stdout.decode() + shown.stderr.decode(),
        said,
        "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records),
    ]
    for text in logged:
        for spelling in (CANARY, "Canarywick", "Lovelace"):
            assert spelling not in text
