"""What changed since the last delivery, over moto's S3 server: counts, digests, gate (issue 17).

The oracle is the test's own dictionaries of records (what it seeded, updated and deleted),
compared in plain Python: it shares no code with the digests the run stores and compares.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from connector.model import ENTITY_NAMES
from connector.ops.metrics import Metrics
from connector.ops.status import find_deliveries
from connector.sinks.s3 import S3Storage
from connector.snapshot.digest import digest_key
from connector.snapshot.manifest import Manifest
from connector.snapshot.run import Outcome
from tests.integration.snapshot_helpers import State, delete_rows, record, seed_state, snapshot_run, tree
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 25)
PREFIX = "carecloud"


@pytest.fixture
def storage(moto_storage: S3Storage) -> S3Storage:
    return moto_storage


def _expected(before: State, after: State, entity: str, since: dt.date) -> dict[str, Any]:
    """The oracle: what a person comparing the two sets by EntityId and values would count."""
    old, new = before[entity], after[entity]
    both = old.keys() & new.keys()
    return {
        "since": since.isoformat(),
        "added": len(new.keys() - old.keys()),
        "removed": len(old.keys() - new.keys()),
        "changed": sum(1 for k in both if old[k] != new[k]),
        "unchanged": sum(1 for k in both if old[k] == new[k]),
    }


def _copy(state: State) -> State:
    return {entity: {k: dict(v) for k, v in rows.items()} for entity, rows in state.items()}


def _changes(manifest: Manifest | None) -> dict[str, Any]:
    assert manifest is not None
    return {r.entity: r.changes for r in manifest.entities}


def _gauge(metrics: Metrics, entity: str, change: str) -> float | None:
    return metrics.registry.get_sample_value(
        "carecloud_snapshot_changed_records", {"entity": entity, "change": change}
    )


def test_each_delivery_says_what_changed_and_a_jump_is_held_until_overridden(
    kafka: KafkaTestCluster, storage: S3Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    day1 = _copy(tree(10))
    seed_state(kafka, topic, day1)
    metrics = Metrics()
    run = snapshot_run(kafka, topic, storage, work_dir=tmp_path, prefix=PREFIX, metrics=metrics)

    first = run.run(DAY)
    assert first.outcome is Outcome.PUBLISHED
    assert _changes(first.manifest) == dict.fromkeys(ENTITY_NAMES)  # a first delivery: nothing to compare
    for entity in ENTITY_NAMES:
        assert storage.stat(digest_key(PREFIX, DAY, entity)) is not None

    # Overnight: two families change, one arrives, an EOP goes; the rest is rewritten unchanged.
    day2 = _copy(day1)
    for n in (1, 2):
        day2["Family"][f"FAM-{n:07d}"]["FamilyName"] = f"Renamed {n}"
    day2["Family"]["FAM-0000011"] = record("Family", 11)
    gone = sorted(day2["EOP"])[0]
    del day2["EOP"][gone]
    seed_state(kafka, topic, day2, version=2)  # every row a newer version, most with equal values
    delete_rows(kafka, topic, [("EOP", gone)], version=3)

    second = run.run(DAY + dt.timedelta(days=1))
    assert second.outcome is Outcome.PUBLISHED
    changes = _changes(second.manifest)
    for entity in ENTITY_NAMES:
        assert changes[entity] == _expected(day1, day2, entity, DAY), entity
    assert changes["Family"]["changed"] == 2  # a newer version with equal values is not a change
    assert (_gauge(metrics, "Family", "changed"), _gauge(metrics, "Family", "added")) == (2, 1)
    assert _gauge(metrics, "EOP", "removed") == 1
    _, deliveries = find_deliveries(storage, PREFIX, DAY + dt.timedelta(days=1))
    shown = {d.entity: d.changes for d in deliveries}
    assert shown["Family"] == _expected(day1, day2, "Family", DAY)

    # Then eight of eleven families are rewritten at once: the count is level, the values are not.
    day3 = _copy(day2)
    for n in range(1, 9):
        day3["Family"][f"FAM-{n:07d}"]["PlanCode"] = "HMO-BRONZE-2026"
    seed_state(kafka, topic, day3, version=4)
    for offset in (2, 3):  # it stays held on every later date: the baseline is the last delivery
        held = run.run(DAY + dt.timedelta(days=offset))
        assert held.outcome is Outcome.PARTIAL
        assert held.manifest is not None
        status = {r.entity: (r.status, r.reason) for r in held.manifest.entities}
        assert status["Family"] == ("blocked", "changed records beyond the allowed ratio")
        assert {e for e, (s, _) in status.items() if s == "blocked"} == {
            "Family",
            "FamilyMember",
            "Care",
            "Claim",
            "EOP",
        }
        assert _changes(held.manifest)["Family"] == _expected(
            day2, day3, "Family", DAY + dt.timedelta(days=1)
        )
        assert _gauge(metrics, "Family", "changed") == 8

    overridden = run.run(DAY + dt.timedelta(days=4), overrides=["Family"])
    assert overridden.outcome is Outcome.PUBLISHED
    changes = _changes(overridden.manifest)
    assert changes["Family"] == _expected(day2, day3, "Family", DAY + dt.timedelta(days=1))
    assert changes["FamilyMember"]["since"] == (DAY + dt.timedelta(days=1)).isoformat()
