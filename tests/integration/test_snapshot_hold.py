"""Same-night recovery over moto's S3 server and the Portal simulator (issue 17).

A date with an entity blocked by a gate or refused by the Portal is held open until the decision
time: nothing tells CareCloud the date exists (no manifest), what could be delivered is
delivered once, and an override or a fixed key before the decision time makes the date complete.
At the decision time the manifest is written without the entity, once and for good. The clock
is the run's own (the lease and the decision read it); everything else is real.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from connector.model import ENTITY_NAMES
from connector.sinks.keys import control_key, manifest_key
from connector.sinks.s3 import S3Storage
from connector.snapshot.run import Outcome
from connector.snapshot.schedule import Schedule, run_window
from tests.integration.portal_sim import Simulator, next_day
from tests.integration.snapshot_helpers import delete_rows, record, seed_state, snapshot_run, tree
from tests.integration.test_snapshot_api import Route
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

PREFIX = "carecloud"
SCHEDULE = Schedule(decision=dt.time(2, 30))
CHILDREN = ["FamilyMember", "Care", "Claim", "EOP"]


class Clock:
    def __init__(self, day: dt.date) -> None:
        self.start = run_window(SCHEDULE, day)[0]  # 00:30 Pacific
        self.now = self.start

    def at(self, hour: int, minute: int) -> None:
        self.now = self.start + dt.timedelta(hours=hour, minutes=minute - 30)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def storage(moto_storage: S3Storage) -> S3Storage:
    return moto_storage


def _keys(storage: S3Storage, day: dt.date) -> set[str]:
    return set(storage.list_keys(f"{PREFIX}/{day.isoformat()}/"))


def test_a_blocked_entity_overridden_before_the_decision_time_makes_the_date_complete(
    kafka: KafkaTestCluster, storage: S3Storage, sim: Simulator, tmp_path: Path
) -> None:
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(10))
    day = next_day()
    clock = Clock(day)
    run = snapshot_run(
        kafka,
        topic,
        storage,
        api=Route(sim.url),
        work_dir=tmp_path,
        prefix=PREFIX,
        schedule=SCHEDULE,
        clock=clock,
    )
    assert run.run(day - dt.timedelta(days=1)).outcome is Outcome.PUBLISHED  # its decision time is past
    delete_rows(kafka, topic, [("Family", f"FAM-{n:07d}") for n in range(3, 11)])  # 10 -> 2 families

    clock.at(0, 40)
    held = run.run(day)

    assert held.outcome is Outcome.HELD
    assert held.decide_by == run_window(SCHEDULE, day)[0] + dt.timedelta(hours=2)
    assert held.manifest is None
    assert storage.stat(manifest_key(PREFIX, day)) is None  # CareCloud sees no date yet
    assert control_key(PREFIX, day, "_pending.json") in _keys(storage, day)
    status = {r.entity: r.status for r in held.pending}
    assert status == {"Provider": "delivered", **dict.fromkeys(("Family", *CHILDREN), "blocked")}
    provider = sim.accepted("Provider", day)
    assert provider["record_count"] == 3  # delivered at once: a complete set of its own

    clock.at(1, 5)  # on-call looked at the report and decides the drop is real
    done = run.run(day, overrides=["Family", *CHILDREN])

    assert done.outcome is Outcome.PUBLISHED
    assert done.manifest is not None
    assert {r.entity: r.status for r in done.manifest.entities} == dict.fromkeys(ENTITY_NAMES, "delivered")
    kept = done.manifest.entity("Provider")
    assert kept is not None
    assert kept.api is not None
    assert kept.api["session_id"] == provider["session_id"]  # not sent again
    assert sim.accepted("Family", day)["record_count"] == 2
    assert sim.stats()["duplicate_applications"] == 0
    assert run.run(day).outcome is Outcome.ALREADY_PUBLISHED


def test_a_refused_key_fixed_before_the_decision_time_delivers_the_entity_that_night(
    kafka: KafkaTestCluster, storage: S3Storage, sim: Simulator, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    families = {f"FAM-{n:07d}": record("Family", n) for n in range(6)}
    seed_state(kafka, topic, {entity: {} for entity in ENTITY_NAMES} | {"Family": families})
    day = next_day()
    clock = Clock(day)
    config = {
        "work_dir": tmp_path,
        "prefix": PREFIX,
        "schedule": SCHEDULE,
        "clock": clock,
        "file_threshold": 5,
    }
    clock.at(0, 45)
    refused = snapshot_run(kafka, topic, storage, api=Route(sim.url, "rotated-key"), **config).run(day)

    assert refused.outcome is Outcome.HELD
    status = {r.entity: r.status for r in refused.pending}
    assert status["Family"] == "delivered"  # 6 records: a file
    assert all(status[e] == "failed" for e in ("Provider", *CHILDREN))  # 0 records, by API: refused
    file_key = next(r.key for r in refused.pending if r.entity == "Family")
    assert file_key is not None
    written = storage.stat(file_key)
    assert written is not None

    clock.at(1, 10)  # the key is corrected (the Secret updated, the pod restarted)
    fixed = snapshot_run(kafka, topic, storage, api=Route(sim.url), **config).run(day)

    assert fixed.outcome is Outcome.PUBLISHED
    assert fixed.manifest is not None
    assert all(r.status == "delivered" for r in fixed.manifest.entities)
    assert sim.accepted("Provider", day)["record_count"] == 0  # an empty set is a complete set too
    again = storage.stat(file_key)
    assert again is not None
    assert (again.etag, again.sha256) == (written.etag, written.sha256)  # the file was not written again


def test_at_the_decision_time_the_date_is_published_without_the_entity_once_and_for_good(
    kafka: KafkaTestCluster, storage: S3Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(10))
    day = next_day()
    clock = Clock(day)
    run = snapshot_run(
        kafka, topic, storage, work_dir=tmp_path, prefix=PREFIX, schedule=SCHEDULE, clock=clock
    )
    assert run.run(day - dt.timedelta(days=1)).outcome is Outcome.PUBLISHED
    delete_rows(kafka, topic, [("Family", f"FAM-{n:07d}") for n in range(3, 11)])
    clock.at(0, 40)
    assert run.run(day).outcome is Outcome.HELD

    clock.at(2, 30)  # nobody decided: the date goes without the blocked entities
    final = run.run(day)

    assert final.outcome is Outcome.PARTIAL
    assert final.manifest is not None
    assert {r.entity for r in final.manifest.entities if r.status == "blocked"} == {"Family", *CHILDREN}
    assert storage.stat(manifest_key(PREFIX, day)) is not None
    clock.at(2, 40)  # an override after the manifest changes nothing: the manifest is final
    late = run.run(day, overrides=["Family", *CHILDREN])
    assert late.outcome is Outcome.ALREADY_PUBLISHED
    assert late.manifest == final.manifest
