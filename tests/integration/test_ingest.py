"""The Kafka ingest path ends in the same state as the offline replay of the same events."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from connector.ingest.replay import read_events, replay
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.state_helpers import live_rows, read_state, state_records
from tests.kafka_helpers import KafkaTestCluster, unique

ROOT = Path(__file__).parents[2]
EVENTS = ROOT / "examples" / "events.jsonl"
MAPPING = (ROOT / "examples" / "mapping.yaml").read_text()

pytestmark = pytest.mark.integration


def _setup(kafka: KafkaTestCluster, tmp_path: Path) -> tuple[IngestService, Any, str, dict[str, Any]]:
    prefix = unique("bn") + "."
    spec = parse_mapping(MAPPING.replace("benefits.public.", prefix))
    topics = {name: name for name in spec.topics}
    for name in topics:
        kafka.admin().create_topics([NewTopic(name, 1, 1)])[name].result(30)
    producer = kafka.producer({"enable.idempotence": True})
    for msg in read_events(EVENTS):
        producer.produce(
            msg.position.topic.replace("benefits.public.", prefix), msg.value, msg.key, headers=msg.headers
        )
    assert producer.flush(30) == 0
    # several transactions over the 38 events
    settings = ingest_settings(kafka, tmp_path, ingest_names(), batch_max_events=7, batch_max_ms=200)
    expected = replay(parse_mapping(MAPPING), read_events(EVENTS))
    return IngestService(settings, spec), settings, prefix, {"expected": expected}


def _run_until(service: IngestService, events: int) -> None:
    service.start()
    seen = 0
    for _ in range(200):
        seen += service.run_batch()
        if seen >= events:
            return
    raise AssertionError(f"consumed {seen} of {events} events")


def test_kafka_ingest_equals_offline_replay_and_dead_letters_keep_bytes(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    service, settings, prefix, ctx = _setup(kafka, tmp_path)
    _run_until(service, 38)
    expected = ctx["expected"]
    assert live_rows(read_state(kafka, settings.ingest.state_topic)) == expected.live
    assert service.counts["aborted_batches"] == 0

    dlq = kafka.read_topic(settings.ingest.dlq_topic, 5, overrides={"isolation.level": "read_committed"})
    reasons = sorted(dict(m.headers())["carecloud.reason"].decode() for m in dlq)
    assert reasons == sorted(d.reason for d in expected.dead_letters if d.error != "IncompleteRow")
    bad_json = next(m for m in dlq if dict(m.headers())["carecloud.reason"] == b"invalid_json")
    assert bad_json.value() == b'{"before": null, "after": {'  # original bytes kept for replay
    assert dict(bad_json.headers())["carecloud.topic"] == f"{prefix}family".encode()
    service.close()


def test_local_store_deleted_is_rebuilt_from_the_state_topic(kafka: KafkaTestCluster, tmp_path: Path) -> None:
    service, settings, _, _ = _setup(kafka, tmp_path)
    _run_until(service, 38)
    store_rows = dict(service.stores[0].items())
    service.close()
    shutil.rmtree(settings.ingest.state_dir)
    again = IngestService(settings, service.mapper.spec)
    again.start()
    # The assignment (and with it the restore) happens inside consume: batches until it has,
    # against a deadline rather than a count of 200 ms batches (issue 22 sweep).
    deadline = time.monotonic() + 60
    while not again.ready.is_set() and time.monotonic() < deadline:
        again.run_batch()
    assert again.ready.is_set()
    assert dict(again.stores[0].items()) == store_rows
    # Every committed state record is read again (a row changed twice in a batch is two records).
    assert again.counts["restored_records"] == len(state_records(kafka, settings.ingest.state_topic))
    assert again.run_batch() == 0  # offsets were committed with the state: nothing is re-read
    again.close()


def test_stop_event_ends_the_loop_cleanly(kafka: KafkaTestCluster, tmp_path: Path) -> None:
    service, _, _, _ = _setup(kafka, tmp_path)
    service.start()
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    while service.counts["events"] < 38:
        thread.join(0.1)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert service.stores == {}  # closed: partitions released, stores flushed
