"""Crafted messages mid-stream over the real broker: each is a dead letter, the ingest never stops.

Before issue 16, any one of these stopped the ingest on every restart (an uncaught
``TypeError`` from a deep schema, a ``produce()`` error for a row over the topic's limit) or
cost it seconds of CPU per message. The oracle is the synthetic generator's expected state,
computed without the connector's code, compared with the files a real snapshot delivered.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import NewTopic

from connector.devtools._demo_check import check_entity
from connector.devtools.poison import Poison, family_template, poison_set
from connector.devtools.s3_server import S3Endpoint
from connector.devtools.synthetic import generate
from connector.model import ENTITY_NAMES
from connector.snapshot.manifest import Manifest
from tests.integration.ops_helpers import ConnectorProcess, local_today, produce, s3_env, wait_caught_up
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3
TOPIC_LIMIT = 262_144
"""max.message.bytes of the state and dead-letter topics: small, so a legitimate event's state
row can exceed it."""
SOURCE_LIMIT = 4 * 1024 * 1024
"""max.message.bytes of the source topics: they take a 2 MB key, as a misconfigured producer's
topic might."""
MESSAGE_LIMIT = 3_000_000


def _produce_poison(kafka: KafkaTestCluster, topic: str, poison: list[Poison]) -> None:
    producer = Producer(kafka.config({"message.max.bytes": SOURCE_LIMIT + 1024, "enable.idempotence": True}))
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    for item in poison:
        producer.produce(topic, item.value, item.key, headers=item.headers or None, on_delivery=delivered)
    assert producer.flush(60) == 0
    assert not failures, failures


def test_a_poison_set_mid_stream_is_dead_lettered_and_the_ingest_never_stops(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, tmp_path: Path
) -> None:
    prefix = unique("poison") + ".public."
    stream = generate(30, seed=16, topic_prefix=prefix)
    admin = kafka.admin()
    sources = [
        NewTopic(t, PARTITIONS, 1, config={"max.message.bytes": str(SOURCE_LIMIT)}) for t in stream.topics
    ]
    for future in admin.create_topics(sources).values():
        future.result(60)
    state, dlq = unique("state"), unique("dlq")
    limited = {"max.message.bytes": str(TOPIC_LIMIT)}
    own = [
        NewTopic(state, PARTITIONS, 1, config={**limited, "cleanup.policy": "compact"}),
        NewTopic(dlq, 1, 1, config=limited),
    ]
    for future in admin.create_topics(own).values():
        future.result(60)

    events = list(stream)
    family = family_template(events)
    poison = poison_set(
        family.key,
        family.value or b"",
        family_id=9_000_000,
        state_row_limit=TOPIC_LIMIT - 1024,
        key_limit=65_536,
        message_limit=MESSAGE_LIMIT,
        dlq_limit=TOPIC_LIMIT,
    )
    half = len(events) // 2
    produce(kafka.config(), events[:half])

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text((ROOT / "examples" / "mapping.yaml").read_text().replace("benefits.public.", prefix))
    bucket = unique("poison")
    s3_server.client().create_bucket(Bucket=bucket)
    env = {
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_GROUP_ID": unique("poison"),
        "CARECLOUD_INGEST_STATE_TOPIC": state,
        "CARECLOUD_INGEST_DLQ_TOPIC": dlq,
        "CARECLOUD_INGEST_STATE_DIR": str(tmp_path / "store"),
        "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique("txn"),
        "CARECLOUD_INGEST_MAX_MESSAGE_BYTES": str(MESSAGE_LIMIT),
        "CARECLOUD_OPS_HTTP_HOST": "127.0.0.1",
        "CARECLOUD_OPS_HTTP_PORT": "0",
        "CARECLOUD_SNAPSHOT_SINK": "s3",
        "CARECLOUD_SNAPSHOT_WORK_DIR": str(tmp_path / "work"),
        "CARECLOUD_SNAPSHOT_LAG_POLICY": "go",
        **s3_env(s3_server, bucket),
    }
    ingest = ConnectorProcess(["ingest"], env, tmp_path, "ingest")
    try:
        ingest.wait_for_port()
        _produce_poison(kafka, family.topic, poison)
        produce(kafka.config(), events[half:])
        wait_caught_up(
            kafka.config(), env["CARECLOUD_INGEST_GROUP_ID"], stream.topics, PARTITIONS, ingest, 180
        )
        assert ingest.process.poll() is None, ingest.output()  # never exited, so never restarted
        assert "Traceback" not in ingest.stderr

        # Each poison message is a dead letter with its reason; the stream's own bad events too.
        letters = kafka.read_topic(
            dlq, stream.expected_dead_letters + len(poison), overrides={"isolation.level": "read_committed"}
        )
        reasons = Counter(dict(m.headers() or [])["carecloud.reason"].decode() for m in letters)
        assert reasons == Counter([*stream.dead_letter_reasons(), *(p.reason for p in poison)])
        crafted = [m for m in letters if dict(m.headers() or [])["carecloud.topic"].decode() == family.topic]
        by_reason = {dict(m.headers() or [])["carecloud.reason"].decode(): m for m in crafted}
        for item in poison:
            if item.by_reference:
                assert by_reason[item.reason].value() is None, item.name

        # The delivered snapshot is the generator's expected state: no poison reached it.
        day = local_today("America/Los_Angeles")
        snapshot = ConnectorProcess(["snapshot", "--date", day.isoformat()], env, tmp_path, "snapshot")
        assert snapshot.process.wait(300) == 0, snapshot.output()
        s3 = s3_server.client()
        manifest_key = f"carecloud/{day.isoformat()}/_manifest.json"
        manifest = Manifest.from_bytes(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        expected = stream.expected_state()
        for entity in ENTITY_NAMES:
            entry = manifest.entity(entity)
            assert entry is not None
            assert entry.key is not None, f"{entity} did not go as a file"
            body = s3.get_object(Bucket=bucket, Key=entry.key)["Body"].read()
            check = check_entity(entity, entry, expected[entity], gzip.decompress(body))
            assert check.ok, check.as_json()
    finally:
        code, _ = ingest.terminate(60) if ingest.process.poll() is None else (ingest.process.returncode, 0.0)
    assert code == 0, ingest.output()
