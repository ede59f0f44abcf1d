"""The compiled fast path changes nothing but the speed: same state, same dead letters.

The synthetic stream of all six tables (creates, updates, deletes and their tombstones,
unchanged-TOAST updates, swapped and duplicated deliveries, malformed events; every third
message with its Connect schema in front, as JsonConverter writes it by default) is ingested
through the real broker twice, once with ``ingest.fast_path=on`` and once with ``off``: the
state topics must hold the same rows and the dead-letter topics the same messages, while the
fast path took the bulk of the events.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import NewTopic

from connector.devtools.debezium_schema import column_schemas, wrap
from connector.devtools.synthetic import generate
from connector.ingest.service import IngestService
from connector.mapping import Mapper, parse_mapping
from connector.ops.metrics import Metrics
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.integration.state_helpers import read_state
from tests.kafka_helpers import KafkaTestCluster, unique

ROOT = Path(__file__).parents[2]
MAPPING = (ROOT / "examples" / "mapping.yaml").read_text()

pytestmark = [pytest.mark.integration, pytest.mark.fastpath]


def _ingest(
    kafka: KafkaTestCluster, tmp_path: Path, prefix: str, events: int, fast_path: str
) -> IngestService:
    """An ingest service run until it has committed ``events``; its metrics on their own registry."""
    settings = ingest_settings(
        kafka,
        tmp_path / fast_path,
        ingest_names(),
        batch_max_events=500,
        batch_max_ms=200,
        fast_path=fast_path,
    )
    spec = parse_mapping(MAPPING.replace("benefits.public.", prefix))
    service = IngestService(settings, spec, metrics=Metrics())
    service.start()
    seen = 0
    for _ in range(500):
        seen += service.run_batch()
        if seen >= events:
            return service
    raise AssertionError(f"consumed {seen} of {events} events")


def test_the_fast_path_ends_in_the_same_state_and_dead_letters_as_the_python_path(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    prefix = unique("fp") + "."
    stream = generate(60, seed=7, topic_prefix=prefix)
    for topic in stream.topics:
        kafka.admin().create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = kafka.producer({"enable.idempotence": True})
    mapper = Mapper(parse_mapping(MAPPING.replace("benefits.public.", prefix)))
    typed = {topic: column_schemas(mapper, topic) for topic in stream.topics}
    events = 0
    for event in stream:
        value = event.value
        if events % 3 == 0 and value is not None and value.startswith(b"{") and value.endswith(b"}"):
            value = orjson.dumps(wrap(orjson.loads(value), typed[event.topic]))  # schemas.enable=true
        producer.produce(event.topic, value, event.key)
        events += 1
    assert producer.flush(30) == 0

    fast = _ingest(kafka, tmp_path, prefix, events, "on")
    slow = _ingest(kafka, tmp_path, prefix, events, "off")
    try:
        taken = [
            s.metrics.registry.get_sample_value("carecloud_fast_path_events_total") for s in (fast, slow)
        ]
        assert taken == [fast.counts["fast_path"], 0]
        assert taken[0] > 0.8 * events  # the bulk; TOAST, tombstones and bad input decline
        for service in (fast, slow):
            assert service.counts["events"] == events
            assert service.counts["aborted_batches"] == 0

        fast_rows = read_state(kafka, fast.ingest.state_topic)
        assert fast_rows == read_state(kafka, slow.ingest.state_topic)
        assert sum(row.complete for row in fast_rows.values()) == sum(stream.expected_counts().values())

        dead = [
            sorted(
                (dict(m.headers() or [])["carecloud.reason"], m.value())
                for m in kafka.read_topic(
                    s.ingest.dlq_topic,
                    stream.expected_dead_letters,
                    overrides={"isolation.level": "read_committed"},
                )
            )
            for s in (fast, slow)
        ]
        assert len(dead[0]) == stream.expected_dead_letters
        assert dead[0] == dead[1]
    finally:
        fast.close()
        slow.close()
