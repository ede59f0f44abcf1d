"""The daily snapshot run over a real state topic, publishing to a real storage server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from connector.model import ENTITY_NAMES, fingerprint
from connector.sinks.local import LocalStorage
from connector.sinks.storage import Storage
from connector.snapshot.checks import OrphanPolicy
from connector.snapshot.exceptions import LeaseBusyError
from connector.snapshot.run import Outcome
from tests.integration.snapshot_helpers import (
    children_point_at_parents,
    delete_rows,
    expected_ids,
    ids,
    published,
    seed_state,
    snapshot_run,
    tree,
)
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 25)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return LocalStorage(tmp_path / "bucket")


def test_the_full_state_is_published_with_a_manifest_written_last(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(3, {"cleanup.policy": "compact"}, prefix="state")
    state = tree(40)
    seed_state(kafka, topic, state)
    delete_rows(kafka, topic, [("EOP", "EOP-0000001")])
    del state["EOP"]["EOP-0000001"]

    result = snapshot_run(kafka, topic, storage, prefix="cc", work_dir=tmp_path).run(DAY)

    assert result.outcome is Outcome.PUBLISHED
    manifest = result.manifest
    assert manifest is not None
    assert [r.entity for r in manifest.entities] == list(ENTITY_NAMES)  # parents first
    files = published(storage, manifest)
    for entity in ENTITY_NAMES:
        assert ids(files[entity]) == expected_ids(state, entity)
        entry = manifest.entity(entity)
        assert entry is not None
        assert (entry.records, entry.route, entry.status) == (len(state[entity]), "file", "delivered")
        assert entry.schema_fingerprint == fingerprint(entity)
        assert entry.key == f"cc/2026-11-25/{entity}.csv.gz"
    assert children_point_at_parents(files)
    assert set(manifest.cut["end_offsets"]) == {"0", "1", "2"}
    assert sum(manifest.cut["end_offsets"].values()) == sum(len(v) for v in tree(40).values()) + 1
    assert manifest.lag["total"] == 0
    assert manifest.checks["orphans"]["EOP"] == {"checked": 79, "orphans": 0, "blocked": False}
    listed = storage.list_keys("cc/2026-11-25/")
    assert "cc/2026-11-25/_manifest.json" in listed
    assert "cc/2026-11-25/_report.json" in listed


def test_a_rerun_of_a_published_date_changes_nothing(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(5))
    run = snapshot_run(kafka, topic, storage, work_dir=tmp_path)
    first = run.run(DAY)
    before = {key: storage.stat(key) for key in storage.list_keys("")}
    seed_state(kafka, topic, tree(9), version=3)  # the state moved on; the date is published

    again = run.run(DAY)

    assert again.outcome is Outcome.ALREADY_PUBLISHED
    assert again.manifest == first.manifest
    assert {key: storage.stat(key) for key in storage.list_keys("")} == before


def test_orphans_are_held_out_with_their_descendants_and_listed_in_the_report(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    state = tree(6)
    seed_state(kafka, topic, state)
    delete_rows(kafka, topic, [("FamilyMember", "MEM-0000003")])  # its care, claim and EOP dangle

    result = snapshot_run(kafka, topic, storage, work_dir=tmp_path).run(DAY)

    manifest = result.manifest
    assert manifest is not None
    assert result.outcome is Outcome.PUBLISHED
    files = published(storage, manifest)
    assert "CAR-0000003" not in ids(files["Care"])
    assert "CLM-0000003" not in ids(files["Claim"])
    assert "EOP-0000003" not in ids(files["EOP"])
    assert children_point_at_parents(files)
    assert manifest.checks["orphans"]["Care"]["orphans"] == 1
    report_bytes = storage.get(manifest.report)
    assert report_bytes is not None
    report = orjson.loads(report_bytes[0])
    care = next(e for e in report["orphans"]["entities"] if e["entity"] == "Care")
    assert care["orphans"][0]["entity_id"] == "CAR-0000003"
    assert care["orphans"][0]["missing"][0]["parent_id"] == "MEM-0000003"
    assert b"MEM-0000003" not in storage.get(result.manifest_key)[0]  # type: ignore[index]


def test_orphans_block_the_entity_and_its_children_under_the_block_policy(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(4))
    delete_rows(kafka, topic, [("Care", "CAR-0000002")])

    run = snapshot_run(kafka, topic, storage, work_dir=tmp_path, orphan_policy=OrphanPolicy.BLOCK)
    manifest = run.run(DAY).manifest

    assert manifest is not None
    status = {r.entity: (r.status, r.reason) for r in manifest.entities}
    assert status["Claim"] == ("blocked", "orphans")
    assert status["EOP"] == ("blocked", "parent Claim blocked")
    assert status["Care"][0] == "delivered"
    assert set(published(storage, manifest)) == {"Family", "Provider", "FamilyMember", "Care"}


def test_a_count_drop_blocks_the_entity_until_an_operator_overrides_it(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    state = tree(10)
    seed_state(kafka, topic, state)
    run = snapshot_run(kafka, topic, storage, work_dir=tmp_path)
    assert run.run(DAY - dt.timedelta(days=1)).outcome is Outcome.PUBLISHED
    # Six of ten families vanish overnight (with everything below them).
    gone = [("Family", f"FAM-{f:07d}") for f in range(1, 7)]
    delete_rows(kafka, topic, gone)

    blocked = run.run(DAY)

    assert blocked.outcome is Outcome.PARTIAL
    assert blocked.manifest is not None
    family = blocked.manifest.entity("Family")
    assert family is not None
    assert family.status == "blocked"
    check = next(c for c in blocked.manifest.checks["count_change"] if c["entity"] == "Family")
    assert (check["previous"], check["current"], check["exceeded"]) == (10, 4, True)
    assert {r.entity for r in blocked.manifest.entities if r.status == "blocked"} == {
        "Family",
        "FamilyMember",
        "Care",
        "Claim",
        "EOP",
    }

    overridden = run.run(DAY + dt.timedelta(days=1), overrides=["Family"])
    assert overridden.manifest is not None
    family = overridden.manifest.entity("Family")
    assert family is not None
    assert (family.status, family.records) == ("delivered", 4)


def test_without_the_portal_route_every_entity_goes_as_a_file(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(5))  # 5 families, 10 members, 3 providers

    manifest = snapshot_run(kafka, topic, storage, work_dir=tmp_path, file_threshold=5).run(DAY).manifest

    assert manifest is not None
    routes = {r.entity: (r.records, r.route) for r in manifest.entities}
    assert routes["Family"] == (5, "file")
    assert routes["FamilyMember"] == (10, "file")
    assert set(published(storage, manifest)) == set(ENTITY_NAMES)


def test_two_runs_of_one_date_never_run_at_once(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    from connector.snapshot.lease import Lease

    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(2))
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    other = Lease(storage, "carecloud/2026-11-25/_lease.json", "pod-b", dt.timedelta(minutes=5), clock)
    assert other.acquire()

    with pytest.raises(LeaseBusyError, match="pod-b"):
        snapshot_run(kafka, topic, storage, work_dir=tmp_path).run(DAY)

    other.release()
    assert snapshot_run(kafka, topic, storage, work_dir=tmp_path).run(DAY).outcome is Outcome.PUBLISHED


def test_a_blocked_entity_and_its_children_stay_blocked_on_every_later_date_until_overridden(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    """Issue 17: the baseline is the last *delivered* count, however many dates back, so a
    gate never lifts itself the day after it held an entity back."""
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(10))
    run = snapshot_run(kafka, topic, storage, work_dir=tmp_path)
    day = DAY
    assert run.run(day).outcome is Outcome.PUBLISHED
    delete_rows(kafka, topic, [("Family", f"FAM-{n:07d}") for n in range(3, 11)])  # 10 -> 2

    statuses = []
    for offset in (1, 2, 3):  # three consecutive dates, none overridden
        result = run.run(day + dt.timedelta(days=offset))
        assert result.outcome is Outcome.PARTIAL
        assert result.manifest is not None
        statuses.append({r.entity: r.status for r in result.manifest.entities})
    held = {
        "Family": "blocked",
        "FamilyMember": "blocked",
        "Care": "blocked",
        "Claim": "blocked",
        "EOP": "blocked",
    }
    for status in statuses:
        assert status == {**held, "Provider": "delivered"}

    # A person decides per entity: Family goes; its children, whose own counts fell (their
    # orphans are held out), stay blocked until they are overridden too.
    overridden = run.run(day + dt.timedelta(days=4), overrides=["Family"])
    assert overridden.manifest is not None
    family = overridden.manifest.entity("Family")
    assert family is not None
    assert (family.status, family.records) == ("delivered", 2)
    assert {r.entity for r in overridden.manifest.entities if r.status == "blocked"} == set(held) - {"Family"}
    children = ["FamilyMember", "Care", "Claim", "EOP"]
    assert run.run(day + dt.timedelta(days=5), overrides=children).outcome is Outcome.PUBLISHED
