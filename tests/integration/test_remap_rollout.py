"""A mapping change rolled out under load, its re-mapping pass killed part-way and restarted, over
the real broker (issue 20, RELIABILITY row 26; docs/decisions/0025).

The Family ingest runs the current mapping to the end of its first events; the new mapping (an
enum map change, T now SUSPENDED, and a column newly mapped: PostalCode from address.zip) is
rolled out as a new ``carecloud-connector ingest`` process while the rest of the stream
arrives. Its re-mapping pass brings the rows already held to the new mapping from their stored
source columns, a few rows per transaction; the process is SIGKILLed while the pass is part-way
and started again. The next snapshot delivers Family, and what it delivers equals the expected
state computed here from the events themselves (the test's own oracle, not connector code):
every family's last event under the new mapping, never a mix.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connector.devtools.generator import family_events
from connector.ingest.mapping_diff import EntityDiff, ExactRows, state_diff
from connector.ingest.remap import PROGRESS_PREFIX, Progress
from connector.mapping import Mapper, parse_mapping
from connector.mapping.versions import describe, entity_versions
from connector.sinks.local import LocalStorage
from connector.state.codec import is_deleted, split_key, stored_values
from connector.state.mapping_registry import read_latest, read_registry
from tests.integration.family_ingest import MAPPING, PARTITIONS, committed_events, ingest_env, wait_until
from tests.integration.snapshot_helpers import published, snapshot_run
from tests.integration.state_helpers import read_state, state_records
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

_INGEST = [sys.executable, "-m", "connector.cli", "ingest"]
OLD = MAPPING.replace("PostalCode: {{path: address.zip}}", "PostalCode: {{const: null}}")
NEW = MAPPING.replace("S: SUSPENDED, T: TERMINATED}}", "S: SUSPENDED, T: SUSPENDED}}")
NEW_STATUS = {"A": "ACTIVE", "P": "PENDING", "S": "SUSPENDED", "T": "SUSPENDED"}
OLD_STATUS = {**NEW_STATUS, "T": "TERMINATED"}


def _expected(
    events: list[tuple[bytes, bytes | None]], *, old: bool = False
) -> dict[str, tuple[str, str, str | None]]:
    """The oracle: per EntityId, (FamilyName, Status, PostalCode) of the family's last event
    under the new mapping (or the old one: T was TERMINATED, PostalCode not mapped), read from
    the Debezium JSON directly."""
    out = {}
    for _, value in events:
        assert value is not None
        after = json.loads(value)["after"]
        address = json.loads(after["address"]) if after["address"] else {}
        out[f"FAM-{after['family_id']}"] = (
            after["family_name"],
            (OLD_STATUS if old else NEW_STATUS)[after["status"]],
            None if old else address.get("zip"),
        )
    return out


def _progress(kafka: KafkaTestCluster, state_topic: str) -> dict[int, Progress]:
    """The pass's committed progress record of each state partition."""
    found = {}
    for msg in state_records(kafka, state_topic, PARTITIONS):
        key = msg.key() or b""
        if key.startswith(PROGRESS_PREFIX):
            found[int(key[len(PROGRESS_PREFIX) :])] = Progress.decode(msg.value())
    return found


def _by_version(kafka: KafkaTestCluster, state_topic: str) -> Counter[str | None]:
    return Counter(
        r.mapping_version for r in read_state(kafka, state_topic, PARTITIONS).values() if r.complete
    )


def _preview(kafka: KafkaTestCluster, state_topic: str, mapping: Path) -> EntityDiff:
    """``preview_mapping``'s computation over this test's topics (it reads them from settings)."""
    spec = parse_mapping(mapping.read_text())
    latest = read_latest(kafka.config(), state_topic, [b"Family/"])
    live = {split_key(k)[1]: v for k, v in sorted(latest.items()) if not is_deleted(v)}
    rows = {"Family": [(entity_id, stored_values(raw)) for entity_id, raw in live.items()]}
    registry = read_registry(kafka.config(), f"{state_topic}.mappings")
    diff = state_diff(registry, describe(spec), rows, ExactRows(Mapper(spec), {"Family": live}))
    return diff.entities["Family"]


def test_a_re_mapping_pass_killed_part_way_resumes_and_the_snapshot_is_the_new_mapping_s_state(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(1500, 2, seed=21))
    first = len(events) * 2 // 3  # the creates and an update of every family
    old_file, new_file = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_file.write_text(OLD.format(topic=topic))
    new_file.write_text(NEW.format(topic=topic))
    v1 = entity_versions(parse_mapping(old_file.read_text()))["Family"]
    v2 = entity_versions(parse_mapping(new_file.read_text()))["Family"]
    assert v1 != v2
    group, state_topic = unique("remap"), unique("state")
    common = {
        "STATE_DIR": str(tmp_path / "store"),
        "TRANSACTIONAL_ID": unique("txn"),
        "DLQ_TOPIC": unique("dlq"),
        "BATCH_MAX_EVENTS": "300",
        "BATCH_MAX_MS": "200",
        "REMAP_ROWS_PER_BATCH": "10",  # a slow pass: about 50 transactions per partition
    }
    log = (tmp_path / "ingest.log").open("w")

    def start(mapping: Path) -> subprocess.Popen[bytes]:
        env = ingest_env(kafka, mapping, group, state_topic, **common)
        return subprocess.Popen(_INGEST, env=env, stdout=log, stderr=subprocess.STDOUT)

    # Under the current mapping: every row written with v1 and its source columns.
    kafka.seed_topic(topic, events[:first])
    proc = start(old_file)
    assert wait_until(lambda: committed_events(kafka, group, topic) >= first, 120, 0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert _by_version(kafka, state_topic) == {v1: 1500}

    # The preview an operator runs first (validate --preview's computation, read-only): over
    # rows that keep their source columns it maps them as the pass will, so its counts are
    # exact; the oracle's old and new states of the same events say what changes.
    preview = _preview(kafka, state_topic, new_file)
    before, after = _expected(events[:first], old=True), _expected(events[:first])
    assert before.keys() == after.keys()
    status = sum(before[i][1] != after[i][1] for i in before)
    postal = sum(before[i][2] != after[i][2] for i in before)
    assert status
    assert postal
    assert dict(preview.changed_fields) == {"Status": status, "PostalCode": postal}
    assert preview.changed_records == sum(before[i] != after[i] for i in before)
    assert (dict(preview.failing), preview.to_remap) == ({}, 0)

    # The rollout, under load: the rest of the stream arrives while the pass runs.
    rest = events[first:]
    stop = threading.Event()

    def publish() -> None:
        for at in range(0, len(rest), 50):
            kafka.seed_topic(topic, rest[at : at + 50])
            if stop.wait(0.2):
                return

    feeder = threading.Thread(target=publish, name="publisher")
    proc = start(new_file)
    feeder.start()
    try:
        # Killed once the pass has committed some rows and before it is done anywhere.
        assert wait_until(lambda: _by_version(kafka, state_topic)[v2] >= 200, 120, 0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = _by_version(kafka, state_topic)
        progress = _progress(kafka, state_topic)
        if not at_kill[v1] or all(p.done for p in progress.values()):
            pytest.fail("the pass finished before the kill; slow it down")  # keeps the test honest
        assert set(at_kill) == {v1, v2}  # part-way: both versions in the state
        registry = read_registry(kafka.config(), f"{state_topic}.mappings")
        assert registry.remap_pending(PARTITIONS)  # what the snapshot's wait policy would wait for

        proc = start(new_file)  # fences the killed one (same transactional.id) and resumes
        feeder.join(120)
        assert wait_until(lambda: committed_events(kafka, group, topic) >= len(events), 120, 0.2)
        done = wait_until(
            lambda: (
                len(_progress(kafka, state_topic)) == PARTITIONS
                and all(p.done for p in _progress(kafka, state_topic).values())
            ),
            120,
            0.5,
        )
        assert done, _progress(kafka, state_topic)
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0

    progress = _progress(kafka, state_topic)
    # The registry's copy, committed with the same transactions, says the same: wait would cut now.
    registry = read_registry(kafka.config(), f"{state_topic}.mappings")
    assert registry.remap_pending(PARTITIONS) == []
    assert {p: d["done"] for p, d in registry.remap.items()} == dict.fromkeys(range(PARTITIONS), True)
    assert sum(p.counts["failed"] + p.counts["no_source"] for p in progress.values()) == 0  # no dead letter
    assert _by_version(kafka, state_topic) == {v2: 1500}  # every row under the new mapping

    storage = LocalStorage(tmp_path / "out")
    run = snapshot_run(kafka, state_topic, storage, mapping_topic=f"{state_topic}.mappings")
    result = run.run(dt.date(2026, 12, 6))
    assert result.manifest is not None
    family = {r.entity: r for r in result.manifest.entities}["Family"]
    assert family.status == "delivered"
    assert result.manifest.checks["mapping"]["Family"]["versions"] == {v2: 1500}
    rows: list[dict[str, Any]] = published(storage, result.manifest)["Family"]
    delivered = {r["EntityId"]: (r["FamilyName"], r["Status"], r["PostalCode"] or None) for r in rows}
    expected = _expected(events)
    assert delivered == expected
    assert Counter(status for _, status, _ in expected.values())["SUSPENDED"] > 0
    assert all(postal for _, _, postal in expected.values())  # the newly mapped column, filled
