"""The snapshot reads the state exactly as of its cut, while ingest goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.devtools.generator import family_events
from connector.snapshot.cut import StateReader, take_cut
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.resolve import StateRow
from tests.integration.test_ingest import _run_until, _setup
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration


def test_reader_returns_the_state_at_the_cut_not_what_came_after(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    service, settings, prefix, ctx = _setup(kafka, tmp_path)
    _run_until(service, 38)
    cut = take_cut(kafka.config(), settings.ingest.state_topic)
    assert cut.end_offsets[0] > 0

    # Ingest goes on after the cut: FAM-1..3 change, FAM-4 and FAM-5 appear.
    kafka.seed_topic(f"{prefix}family", list(family_events(5, 1)))
    for _ in range(100):
        if service.run_batch() == 0 and service.counts["events"] >= 38 + 10:
            break
    assert service.counts["events"] == 38 + 10

    expected = {i: r for e, i, r in ctx["expected"].live if e == "Family"}
    with StateReader(kafka.config(), cut, tmp_path) as reader:
        reader.load()
        assert dict(reader.entities("Family")) == expected
        assert [i for i, _ in reader.entities("Claim")] == ["CLM-1", "CLM-3", "CLM-4"]  # sorted, live only
        assert reader.incomplete("EOP") == ["EOP-2"]  # held out: TOAST value never seen

    later = take_cut(kafka.config(), settings.ingest.state_topic)
    with StateReader(kafka.config(), later, tmp_path) as reader:
        reader.load()
        families = dict(reader.entities("Family"))
    assert sorted(families) == ["FAM-1", "FAM-2", "FAM-3", "FAM-4", "FAM-5"]
    assert families["FAM-1"]["FamilyName"] == "Family 0000001"
    service.close()


def test_a_key_in_two_partitions_resolves_by_version(kafka: KafkaTestCluster, tmp_path: Path) -> None:
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    newer = StateRow(Version(1, 9, 0, 0, 0), False, {"EntityId": "CLM-7", "Status": "PAID"})
    older = StateRow(Version(1, 5, 0, 0, 99), False, {"EntityId": "CLM-7", "Status": "PENDING"})
    gone = StateRow(Version(1, 8, 0, 0, 0), True, {}, delete_floor=Version(1, 8, 0, 0, 0))
    kafka.seed_topic(topic, [(state_key("Claim", "CLM-7"), encode_row(newer))], partition=0)
    kafka.seed_topic(topic, [(state_key("Claim", "CLM-7"), encode_row(older))], partition=1)
    kafka.seed_topic(topic, [(state_key("Claim", "CLM-8"), encode_row(older))], partition=0)
    kafka.seed_topic(topic, [(state_key("Claim", "CLM-8"), encode_row(gone))], partition=1)
    with StateReader(kafka.config(), take_cut(kafka.config(), topic), tmp_path) as reader:
        assert reader.load() == 4
        rows = list(reader._rows("Claim"))
    assert [(i, r.values.get("Status"), r.deleted) for i, r in rows] == [
        ("CLM-7", "PAID", False),
        ("CLM-8", None, True),
    ]


def test_a_key_seen_again_batches_later_resolves_by_version(kafka: KafkaTestCluster, tmp_path: Path) -> None:
    """Loading writes a key it has not seen without parsing it; a key already in the spill
    (from an earlier consumed batch, or earlier in the same one) is compared by version,
    whether its twin is in the same partition or another."""
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")

    def row(entity_id: str, major: int, status: str) -> tuple[bytes, bytes]:
        values = {"EntityId": entity_id, "Status": status}
        return state_key("Claim", entity_id), encode_row(StateRow(Version(1, major, 0, 0, 0), False, values))

    filler = [row(f"CLM-F{i:05d}", 1, "PENDING") for i in range(25_000)]  # more than one consumed batch
    kafka.seed_topic(topic, [row("CLM-1", 9, "PAID"), row("CLM-2", 3, "PENDING")], partition=0)
    kafka.seed_topic(topic, filler[:12_500], partition=0)
    kafka.seed_topic(topic, filler[12_500:], partition=1)
    kafka.seed_topic(topic, [row("CLM-2", 4, "DENIED"), row("CLM-2", 4, "APPROVED")], partition=0)
    kafka.seed_topic(topic, [row("CLM-1", 5, "DENIED"), row("CLM-3", 2, "PENDING")], partition=1)
    kafka.seed_topic(topic, [row("CLM-3", 1, "DENIED")], partition=0)
    with StateReader(kafka.config(), take_cut(kafka.config(), topic), tmp_path) as reader:
        assert reader.load() == 25_007
        found = {i: r["Status"] for i, r in reader.entities("Claim") if not i.startswith("CLM-F")}
        assert reader.count("Claim") == 25_003
        assert reader.has("Claim", "CLM-F24999")
        assert not reader.has("Claim", "CLM-4")
    # A higher version wins across partitions; an equal one later in its partition wins.
    assert found == {"CLM-1": "PAID", "CLM-2": "APPROVED", "CLM-3": "PENDING"}
