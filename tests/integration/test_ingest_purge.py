"""Delete markers past the purge horizon become tombstones in the state topic, in a batch's
transaction; the local store drops them, a rebuilt store never sees them, and the snapshot
reader treats the keys as absent. Before the horizon nothing is purged."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from connector.config import load_settings
from connector.devtools.generator import family_events
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from connector.snapshot.cut import StateReader, take_cut
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.purge import MarkerPurge
from connector.state.resolve import StateRow
from tests.integration.family_ingest import MAPPING
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

HORIZON_S = 3
DELETED = [b"Family/FAM-3", b"Family/FAM-6", b"Family/FAM-9"]


def _drain(service: IngestService, events: int) -> None:
    seen = 0
    for _ in range(200):
        seen += service.run_batch()
        if seen >= events:
            return
    raise AssertionError(f"consumed {seen} of {events} events")


def _state_records(kafka: KafkaTestCluster, topic: str) -> list[tuple[bytes, bytes | None]]:
    """Every committed record of the one-partition state topic, in offset order."""
    consumer = kafka.consumer(None, {"isolation.level": "read_committed", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records: list[tuple[bytes, bytes | None]] = []
    try:
        while True:
            msg = consumer.poll(5)
            assert msg is not None, "state topic read timed out"
            if msg.error() is not None:
                return records  # end of partition: the test has stopped writing
            records.append((msg.key() or b"", msg.value()))
    finally:
        consumer.close()


def test_expired_markers_become_tombstones_and_vanish_from_store_and_snapshot(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, prefix="family")
    events = list(family_events(10, 1, deletes_every=3))  # FAM-3, 6, 9 deleted at the end
    kafka.seed_topic(topic, events)
    spec = parse_mapping(MAPPING.format(topic=topic))
    settings = load_settings(
        kafka={"bootstrap_servers": kafka.bootstrap},
        ingest={
            "mapping_file": "unused.yaml",
            "group_id": unique("purge"),
            "state_topic": unique("state"),
            "dlq_topic": unique("dlq"),
            "state_dir": tmp_path / "store",
            "transactional_id": unique("txn"),
            "batch_max_ms": 200,
            "marker_purge_after_s": HORIZON_S,
        },
    )
    state_topic = settings.ingest.state_topic
    service = IngestService(settings, spec)
    # The purge reads the test's clocks, stopped while batches run and moved on between them:
    # the markers' age is set, not measured against a loaded runner's wall clock (issue 22
    # sweep). Wall clock for the markers' stamps and age, monotonic for its scan interval.
    wall, mono = time.time(), time.monotonic()
    moved = [0.0]
    service.purge = MarkerPurge(HORIZON_S, clock=lambda: wall + moved[0], monotonic=lambda: mono + moved[0])
    service.start()
    _drain(service, len(events))
    store = service.stores[0]
    assert all(store.get(key) is not None for key in DELETED)  # markers, not yet purged

    # Within the horizon (and past the scan interval, so the batch looks): the markers stay.
    moved[0] = HORIZON_S / 2
    kafka.seed_topic(topic, list(family_events(1, 0, seed=99)))  # an older FAM-1: stale, but a batch
    _drain(service, 1)
    assert service.counts["purged_markers"] == 0
    assert all(store.get(key) is not None for key in DELETED)

    # Past the horizon: the next batch carries a tombstone for each marker.
    moved[0] = HORIZON_S + 0.5
    kafka.seed_topic(topic, list(family_events(1, 0, seed=98)))
    _drain(service, 1)
    assert service.counts["purged_markers"] == len(DELETED)
    assert all(store.get(key) is None for key in DELETED)
    live_in_store = sorted(k for k, _ in store.items() if not k.startswith(b"~"))  # entities only
    assert live_in_store == sorted(f"Family/FAM-{i}".encode() for i in range(1, 11) if i % 3)

    records = _state_records(kafka, state_topic)
    tombstones = [k for k, v in records if v is None]
    assert sorted(tombstones) == DELETED
    for key in DELETED:  # each tombstone follows its key's marker
        marker = max(i for i, (k, v) in enumerate(records) if k == key and v is not None)
        assert json.loads(records[marker][1] or b"")["d"] == 1
        assert records.index((key, None)) > marker

    # The snapshot reader: the purged keys are absent, as their markers were.
    with StateReader(kafka.config(), take_cut(kafka.config(), state_topic), tmp_path) as reader:
        reader.load()
        families = [entity_id for entity_id, _ in reader.entities("Family")]
        assert families == sorted(f"FAM-{i}" for i in range(1, 11) if i % 3)
        assert not any(reader.has("Family", f"FAM-{i}") for i in (3, 6, 9))
        assert reader.count("Family") == 7
    service.close()

    # A store rebuilt from the state topic applies the tombstones: it agrees with the topic.
    shutil.rmtree(settings.ingest.state_dir)
    again = IngestService(settings, spec)
    again.start()
    deadline = time.monotonic() + 60  # the restore runs at the assignment, inside consume
    while not again.ready.is_set() and time.monotonic() < deadline:
        again.run_batch()
    assert again.ready.is_set()
    assert sorted(k for k, _ in again.stores[0].items() if not k.startswith(b"~")) == live_in_store
    again.close()


def test_a_key_left_with_only_its_tombstone_is_absent_for_the_reader(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    """After compaction a purged key is a bare tombstone, then nothing: absent either way."""
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    live = StateRow(Version(1, 5, 0, 0, 0), False, {"EntityId": "CLM-1", "Status": "PAID"})
    kafka.seed_topic(
        topic, [(state_key("Claim", "CLM-2"), None), (state_key("Claim", "CLM-1"), encode_row(live))]
    )
    with StateReader(kafka.config(), take_cut(kafka.config(), topic), tmp_path) as reader:
        reader.load()
        assert [i for i, _ in reader.entities("Claim")] == ["CLM-1"]
        assert not reader.has("Claim", "CLM-2")
