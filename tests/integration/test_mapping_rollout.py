"""A mapping change rolled out under load, over the real broker (issue 20, RELIABILITY row 26).

The Family ingest runs under the current mapping (its rows written without source columns, so
the re-mapping pass cannot bring them over), a new mapping (an enum map change) is rolled
out while events keep arriving: the rows re-written since carry the new version, the others the
old one, and the snapshot delivers no mix — the entity is blocked with the versions and counts
as its reason, counted exactly as the state holds them. A mapping that changes the EntityId
template is refused at start-up with the number of EntityIds that would move, which is what the
preview computes against the same live state, and starts when explicitly allowed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.devtools.generator import family_events
from connector.errors import ConfigError
from connector.ingest.mapping_diff import state_diff
from connector.ingest.rollout import state_rows
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.mapping.versions import describe, entity_versions
from connector.sinks.local import LocalStorage
from connector.state.mapping_registry import read_registry
from tests.integration.family_ingest import (
    MAPPING,
    PARTITIONS,
    committed_events,
    ingest_names,
    ingest_settings,
)
from tests.integration.snapshot_helpers import snapshot_run
from tests.integration.state_helpers import read_state
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

NEW_ENUM = "S: SUSPENDED, T: TERMINATED}}}}", "S: SUSPENDED, T: SUSPENDED}}}}"
NEW_ID = '"FAM-{{family_id}}"', '"FAMILY-{{family_id}}"'


def _service(
    kafka: KafkaTestCluster, tmp_path: Path, names: dict[str, str], text: str, **ingest: object
) -> IngestService:
    settings = ingest_settings(kafka, tmp_path, names, batch_max_events=300, **ingest)
    return IngestService(settings, parse_mapping(text))


def _ingest(
    service: IngestService,
    kafka: KafkaTestCluster,
    names: dict[str, str],
    topic: str,
    until: int,
    feed: Callable[[], None] | None = None,
) -> None:
    """Run batches until ``until`` events are committed; ``feed()`` publishes more between batches
    (the load the rollout happens under)."""
    service.start()
    try:
        for _ in range(3000):
            if feed is not None:
                feed()
            service.run_batch()
            if committed_events(kafka, names["group"], topic) >= until:
                return
        raise AssertionError(f"committed {committed_events(kafka, names['group'], topic)} of {until}")
    finally:
        service.close()


def test_a_rollout_under_load_is_never_delivered_mixed_and_an_entity_id_change_is_refused(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(1500, 2, seed=21))
    first = len(events) * 2 // 3  # the creates and an update of every family
    events = events[: first + 500]  # then a second update of 500 of them, under the new mapping
    names = ingest_names()
    current, changed = MAPPING.format(topic=topic), MAPPING.replace(*NEW_ENUM).format(topic=topic)
    v1, v2 = (
        entity_versions(parse_mapping(current))["Family"],
        entity_versions(parse_mapping(changed))["Family"],
    )
    assert v1 != v2

    kafka.seed_topic(topic, events[:first])
    # Rows written without their source columns (as before rows kept them): the re-mapping pass
    # cannot bring them over (``no_source``), so the rollout leaves a mix for the snapshot to
    # refuse. The pass itself, killed part-way, is tests/integration/test_remap_rollout.py.
    _ingest(_service(kafka, tmp_path, names, current, source_columns=False), kafka, names, topic, first)
    registry = read_registry(kafka.config(), f"{names['state']}.mappings")
    assert registry.current["Family"].version == v1

    # The rollout: the new mapping starts while the rest of the stream arrives in slices.
    rest = events[first:]
    slices = [rest[i : i + 200] for i in range(0, len(rest), 200)]

    def feed() -> None:
        if slices:
            kafka.seed_topic(topic, slices.pop(0))

    _ingest(_service(kafka, tmp_path, names, changed), kafka, names, topic, len(events), feed)
    registry = read_registry(kafka.config(), f"{names['state']}.mappings")
    assert registry.current["Family"].version == v2
    assert registry.unversioned["Family"] == v1  # rows from before versions would be v1's

    rows = read_state(kafka, names["state"], PARTITIONS)
    by_version = Counter(row.mapping_version for row in rows.values() if row.complete)
    assert by_version == {v1: 1000, v2: 500}  # both mappings' rows side by side

    storage = LocalStorage(tmp_path / "out")
    run = snapshot_run(kafka, names["state"], storage, mapping_topic=f"{names['state']}.mappings")
    result = run.run(dt.date(2026, 12, 6))
    assert result.manifest is not None
    family = {r.entity: r for r in result.manifest.entities}["Family"]
    assert family.status != "delivered"  # never a mix
    checks = result.manifest.checks["mapping"]["Family"]
    assert checks["versions"] == dict(by_version)
    assert checks["older"] == by_version[v1]
    assert checks["mixed"] is True
    assert not list((tmp_path / "out").rglob("Family*.csv*"))

    # An EntityId template change: the preview's count is the refusal's, and both are every row.
    moved = MAPPING.replace(*NEW_ENUM).replace(*NEW_ID).format(topic=topic)
    live = state_rows(kafka.config(), names["state"], {"Family"})
    preview = state_diff(registry, describe(parse_mapping(moved)), live)
    assert preview.entities["Family"].removed == preview.entities["Family"].added == len(live["Family"]) > 0
    with pytest.raises(ConfigError) as refused:
        _service(kafka, tmp_path, names, moved).start()
    message = str(refused.value)
    assert "public.family (Family): entity_id template 'FAM-{family_id}' -> 'FAMILY-{family_id}'" in message
    assert f"{len(live['Family'])} of {len(live['Family'])} would change" in message
    assert "FAM-1" not in message.replace("FAM-{", "")
    assert read_registry(kafka.config(), f"{names['state']}.mappings").current["Family"].version == v2

    # The same preview through the command an operator runs (read-only: the registry unchanged).
    new_file = tmp_path / "moved.yaml"
    new_file.write_text(moved)
    env = {
        **os.environ,
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(new_file),
        "CARECLOUD_INGEST_STATE_TOPIC": names["state"],
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector.cli",
            "validate",
            "--mapping",
            str(new_file),
            "--preview",
            "--json",
        ],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout)["preview"]["entities"]["Family"]
    assert shown["entity_ids"] == {"removed": len(live["Family"]), "added": len(live["Family"])}
    assert shown["version"] == {"current": v2, "new": entity_versions(parse_mapping(moved))["Family"]}
    assert read_registry(kafka.config(), f"{names['state']}.mappings").current["Family"].version == v2

    allowed = _service(kafka, tmp_path, names, moved, allow_entity_id_change=True)
    allowed.start()
    allowed.close()
    after = read_registry(kafka.config(), f"{names['state']}.mappings").current["Family"].version
    assert after == entity_versions(parse_mapping(moved))["Family"]
