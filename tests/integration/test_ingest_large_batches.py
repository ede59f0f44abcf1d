"""Many legitimate near-limit events: batches bounded by bytes, every one applied (RELIABILITY 21).

Before issue 16 a batch was bounded by count and time only, so 5000 messages of 1 MB made one
batch of 5 GB against a 2 GiB pod. Here 40 Family events of about 900 KB each go through the
in-process service over the real broker with a 4 MiB byte budget: every batch stays within the
budget plus one message, every event is applied, and nothing is dead-lettered.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from connector.devtools.generator import family_events
from tests.integration.family_ingest import PARTITIONS, ingest_names, ingest_service
from tests.integration.state_helpers import live_rows, read_state
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

BUDGET = 4 * 1024 * 1024
NAME_BYTES = 900_000


def test_near_limit_events_are_all_applied_in_batches_bounded_by_bytes(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="large")
    events = []
    for key, value in family_events(40, 0):
        doc = orjson.loads(value or b"")
        doc["after"]["family_name"] = "N" * NAME_BYTES
        events.append((key, orjson.dumps(doc)))
    kafka.seed_topic(topic, events)
    sizes = {key: len(key) + len(value) for key, value in events}
    service = ingest_service(
        kafka, tmp_path, topic, ingest_names(), batch_max_bytes=BUDGET, batch_max_ms=2000
    )
    service.start()
    batches: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while service.counts["events"] < len(events):
            assert time.monotonic() < deadline, f"{service.counts['events']} of {len(events)} events in 120 s"
            handled = service.run_batch()
            if handled:
                batches.append(handled)
    finally:
        service.close()

    largest = max(sizes.values())
    assert max(batches) * min(sizes.values()) <= BUDGET + largest, batches  # budget plus one message
    assert len(batches) >= sum(sizes.values()) // (BUDGET + largest), batches
    assert service.counts["applied"] == len(events)
    assert not [k for k in service.counts if k.startswith("dlq.")]
    assert len(live_rows(read_state(kafka, service.ingest.state_topic, PARTITIONS))) == len(events)
