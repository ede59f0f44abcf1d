"""CareCloud's routing rule end to end: over 5000 records as a file, 5000 or fewer through the
Portal simulator (a real HTTP server, started as the CLI command) in batches of at most 1000."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from connector.model import ENTITY_NAMES
from connector.sinks.local import LocalStorage
from connector.sinks.portal import ApiDelivery, PortalClient
from connector.snapshot.run import Outcome
from tests.integration.portal_sim import KEY, Simulator, next_day
from tests.integration.snapshot_helpers import delete_rows, record, seed_state, snapshot_run
from tests.kafka_helpers import KafkaTestCluster
from tests.portal_helpers import expected_json

pytestmark = pytest.mark.integration


class Route:
    """The Portal route as the service builds it, pointed at the simulator."""

    def __init__(self, url: str, key: str = KEY) -> None:
        self.url, self.key = url, key

    def deliver(
        self, entity: str, day: dt.date, records: Iterable[Mapping[str, Any]], count: int, *, snapshot_id: str
    ) -> ApiDelivery:
        with PortalClient(self.url, self.key, backoff_base=0.05) as client:
            return client.deliver(entity, day, records, count, snapshot_id=snapshot_id)


def test_routing_on_both_sides_of_5000(
    kafka: KafkaTestCluster,
    sim: Simulator,
    tmp_path: Path,
) -> None:
    day = next_day()
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    state: dict[str, dict[str, dict[str, Any]]] = {entity: {} for entity in ENTITY_NAMES}
    for n in range(5001):
        family = record("Family", n)
        state["Family"][family["EntityId"]] = family
    for n in range(5000):
        provider = record("Provider", n)
        state["Provider"][provider["EntityId"]] = provider
    for n in range(3):
        member = record("FamilyMember", n, FamilyId=f"FAM-{n:07d}")
        state["FamilyMember"][member["EntityId"]] = member
    seed_state(kafka, topic, state)
    storage = LocalStorage(tmp_path / "bucket")
    run = snapshot_run(kafka, topic, storage, api=Route(sim.url), work_dir=tmp_path)

    result = run.run(day)

    assert result.outcome is Outcome.PUBLISHED
    manifest = result.manifest
    assert manifest is not None
    routes = {r.entity: (r.route, r.records) for r in manifest.entities}
    assert routes == {
        "Family": ("file", 5001),
        "Provider": ("api", 5000),
        "FamilyMember": ("api", 3),
        "Care": ("api", 0),
        "Claim": ("api", 0),
        "EOP": ("api", 0),
    }
    family = manifest.entity("Family")
    assert family is not None
    assert family.key is not None
    assert storage.stat(family.key) is not None
    provider = manifest.entity("Provider")
    assert provider is not None
    assert provider.api is not None
    assert (provider.api["batch_count"], provider.api["record_count"]) == (5, 5000)
    accepted = sim.accepted("Provider", day)
    assert accepted["session_id"] == provider.api["session_id"]
    assert accepted["checksum"] == provider.api["checksum"]
    assert accepted["records"] == expected_json(
        "Provider", [state["Provider"][i] for i in sorted(state["Provider"])]
    )
    assert sim.accepted("FamilyMember", day)["record_count"] == 3
    assert sim.stats()["duplicate_applications"] == 0


def test_a_refused_key_fails_the_api_entities_and_delivers_the_files(
    kafka: KafkaTestCluster,
    sim: Simulator,
    tmp_path: Path,
) -> None:
    day = next_day()
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    state: dict[str, dict[str, dict[str, Any]]] = {entity: {} for entity in ENTITY_NAMES}
    for n in range(6):
        state["Family"][f"FAM-{n:07d}"] = record("Family", n)
        state["Provider"][f"PRV-{n:07d}"] = record("Provider", n)
    seed_state(kafka, topic, state)
    storage = LocalStorage(tmp_path / "bucket")
    run = snapshot_run(
        kafka, topic, storage, api=Route(sim.url, "not-the-key"), work_dir=tmp_path, file_threshold=5
    )

    result = run.run(day)

    assert result.outcome is Outcome.PARTIAL
    assert result.manifest is not None
    status = {r.entity: (r.route, r.status) for r in result.manifest.entities}
    assert status["Family"] == ("file", "delivered")
    assert status["Provider"] == ("file", "delivered")
    assert all(status[e] == ("api", "failed") for e in ("FamilyMember", "Care", "Claim", "EOP"))
    reason = result.manifest.entity("FamilyMember").reason  # type: ignore[union-attr]
    assert reason is not None
    assert "(401 Unauthorized, problem type unauthorized)" in reason
    assert "CARECLOUD_PORTAL_API_KEY" in reason
    assert "header is required" not in reason  # the problem's detail is the Portal's text: not kept
    assert sim.stats()["unauthorized"] >= 1


def test_an_entity_that_went_as_a_file_stays_a_file_until_it_falls_below_the_lower_bound(
    kafka: KafkaTestCluster, sim: Simulator, tmp_path: Path
) -> None:
    """Routing hysteresis (issue 17) over three consecutive dates: 12 records go as a file
    (threshold 10), 9 stay a file (lower bound 8) instead of moving to the Portal, 7 go by API."""
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    families = {f"FAM-{n:07d}": record("Family", n) for n in range(12)}
    seed_state(kafka, topic, {entity: {} for entity in ENTITY_NAMES} | {"Family": families})
    storage = LocalStorage(tmp_path / "bucket")
    run = snapshot_run(
        kafka, topic, storage, api=Route(sim.url), work_dir=tmp_path, file_threshold=10, api_return_below=8
    )
    first = next_day()
    seen = []
    for offset, keep in ((0, 12), (1, 9), (2, 7)):
        delete_rows(kafka, topic, [("Family", i) for i in sorted(families)[keep:]], version=2 + offset)
        result = run.run(first + dt.timedelta(days=offset))
        assert result.outcome is Outcome.PUBLISHED
        assert result.manifest is not None
        family = result.manifest.entity("Family")
        assert family is not None
        seen.append((family.records, family.route))
    assert seen == [(12, "file"), (9, "file"), (7, "api")]
    assert len(sim.accepted("Family", first + dt.timedelta(days=2))["records"]) == 7
