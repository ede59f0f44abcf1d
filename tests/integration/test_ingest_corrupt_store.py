"""A corrupted local store (RELIABILITY row 8): rebuilt from the state topic, nothing lost.

The ingest works through half a stream and stops; bytes of its stores' table files are then
damaged on disk, as a failing volume would, and the ingest is started again on the rest of the
stream. Where the damage is decides when it is found:

- the block that holds the store's own offset: on opening the store, which starts it again;
- blocks of rows, damaged while the ingest was down: by the count of live entities when the
  partition is assigned, which starts the store again there and then. Both used to fail the
  assignment instead, and every restart met the same damage: a crash loop;
- blocks of rows, damaged under a running ingest: by a batch's version check; the batch is
  aborted and rewound, the store rebuilt, and the batch consumed again.

Either way the state equals the offline replay of the whole stream, and each rebuilt store
holds exactly the state topic's latest record per key.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connector.devtools.generator import family_events
from connector.ingest.service import IngestService
from tests.integration.family_ingest import (
    PARTITIONS,
    assert_state_equals_replay,
    committed_events,
    ingest_names,
    ingest_service,
)
from tests.integration.state_helpers import state_records
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration


def _ingest(service: IngestService, kafka: KafkaTestCluster, group: str, topic: str, events: int) -> None:
    service.start()
    for _ in range(2000):
        service.run_batch()
        if committed_events(kafka, group, topic) >= events:
            return
    raise AssertionError(f"committed {committed_events(kafka, group, topic)} of {events}")


def _damage(store_dir: Path, region: str) -> int:  # region: "offset" or "rows"
    """Flip bytes in every table file of every partition's store; the number of files damaged."""
    files = sorted(store_dir.glob("p*/*.sst"))
    for sst in files:
        data = bytearray(sst.read_bytes())
        # The offset key sorts first, so it lives in the first data block; rows fill the rest.
        # Footer and index (the end of the file) stay readable: the store still opens.
        start, stop = (16, 3000) if region == "offset" else (4096, len(data) // 2)
        for i in range(start, stop, 64):
            data[i] ^= 0xFF
        sst.write_bytes(bytes(data))
    return len(files)


@pytest.mark.parametrize("case", ["offset block", "row blocks", "row blocks while running"])
def test_a_corrupt_store_is_rebuilt_from_the_state_topic_and_nothing_is_lost(
    kafka: KafkaTestCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(3000, 3, seed=13, deletes_every=11))
    half = len(events) // 2  # the second half updates families the first half created
    names = ingest_names()
    kafka.seed_topic(topic, events[:half])
    first = ingest_service(kafka, tmp_path, topic, names, batch_max_events=500)
    _ingest(first, kafka, names["group"], topic, half)
    caplog.set_level(logging.WARNING, logger="connector")
    if case == "row blocks while running":  # the volume fails under a running ingest
        for store in first.stores.values():
            store.flush()  # rows into table files, none of their blocks read (cached) since
        assert _damage(tmp_path / "store", "rows") >= PARTITIONS, "no table files to damage"
        again = first
    else:  # damaged while the ingest was down
        first.close()
        assert _damage(tmp_path / "store", case.split()[0]) >= PARTITIONS, "no table files to damage"
        again = ingest_service(kafka, tmp_path, topic, names, batch_max_events=500)
    kafka.seed_topic(topic, events[half:])
    _ingest(again, kafka, names["group"], topic, len(events))

    rebuilding = [r for r in caplog.records if r.getMessage().startswith("local store corrupt; rebuilding")]
    if case == "offset block":  # the store cannot say where it stands: started again on opening
        assert all(store.rebuilt for store in again.stores.values())
    elif case == "row blocks":  # found by the live-entity count at assignment: started again there
        assert len(rebuilding) == PARTITIONS
    else:  # found by a batch's version check: that batch aborted, the store rebuilt, the batch redone
        assert again.counts["aborted_batches"] >= 1
        assert rebuilding
    assert again.counts["restored_records"] >= half // 2
    assert_state_equals_replay(kafka, names["state"], topic, events)
    # Each store is an exact cache again: the state topic's last record of each of its keys.
    latest: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
    for msg in state_records(kafka, names["state"], PARTITIONS):
        key, value = msg.key(), msg.value()
        assert key is not None
        if value is None:
            latest[msg.partition() or 0].pop(key, None)
        else:
            latest[msg.partition() or 0][key] = value
    for p, store in again.stores.items():
        assert dict(store.items()) == latest[p], f"partition {p}"
    again.close()
