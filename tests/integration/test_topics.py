"""The connector's own topics as ``ensure_topics`` creates them on the real broker: the
dead-letter topic's retention is the setting's (issue 16: dead letters are raw health data);
on this one-broker cluster the replication is lowered, loudly, and an existing state topic
that would lose data is refused naming the command that fixes it (issue 21)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from connector.state.exceptions import TopicConfigError
from connector.state.topics import ensure_topics
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

DAY_MS = 24 * 3600 * 1000


def _config(kafka: KafkaTestCluster, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = kafka.admin().describe_configs([resource])[resource].result(timeout=30)
    return {name: entry.value for name, entry in entries.items()}


def _retention_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "connector.state.topics"
        and r.__dict__.get("setting") == "CARECLOUD_INGEST_DLQ_RETENTION_MS"
    ]


def test_a_created_dead_letter_topic_gets_the_configured_retention(kafka: KafkaTestCluster) -> None:
    state, dlq = unique("state"), unique("dlq")
    ensure_topics(kafka.admin(), state_topic=state, dlq_topic=dlq, partitions=2, dlq_retention_ms=2 * DAY_MS)
    config = _config(kafka, dlq)
    assert (config["retention.ms"], config["cleanup.policy"]) == (str(2 * DAY_MS), "delete")
    assert _config(kafka, state)["cleanup.policy"] == "compact"


def test_without_a_retention_a_created_dead_letter_topic_keeps_a_week(kafka: KafkaTestCluster) -> None:
    dlq = unique("dlq")
    ensure_topics(kafka.admin(), state_topic=unique("state"), dlq_topic=dlq, partitions=1)
    assert _config(kafka, dlq)["retention.ms"] == str(7 * DAY_MS)


def test_an_existing_dead_letter_topic_keeps_its_retention_and_a_warning_names_the_setting(
    kafka: KafkaTestCluster, caplog: pytest.LogCaptureFixture
) -> None:
    dlq = kafka.new_topic(1, {"retention.ms": str(30 * DAY_MS)}, prefix="dlq")
    with caplog.at_level(logging.WARNING, logger="connector.state.topics"):
        ensure_topics(
            kafka.admin(),
            state_topic=unique("state"),
            dlq_topic=dlq,
            partitions=1,
            dlq_retention_ms=7 * DAY_MS,
        )
    assert _config(kafka, dlq)["retention.ms"] == str(30 * DAY_MS)  # the operator's to change
    [warning] = _retention_warnings(caplog)
    assert warning.__dict__["setting"] == "CARECLOUD_INGEST_DLQ_RETENTION_MS"
    assert warning.__dict__["topic"] == dlq
    ensure_topics(
        kafka.admin(), state_topic=unique("state"), dlq_topic=dlq, partitions=1, dlq_retention_ms=30 * DAY_MS
    )
    assert len(_retention_warnings(caplog)) == 1  # agrees: quiet


def test_on_one_broker_the_replication_is_lowered_with_a_warning_naming_the_setting(
    kafka: KafkaTestCluster, caplog: pytest.LogCaptureFixture
) -> None:
    state, dlq = unique("state"), unique("dlq")
    with caplog.at_level(logging.WARNING, logger="connector.state.topics"):
        replication = ensure_topics(kafka.admin(), state_topic=state, dlq_topic=dlq, partitions=2)
    assert (replication.factor, replication.min_insync, replication.lowered) == (1, 1, True)
    [warning] = [
        r for r in caplog.records if r.__dict__.get("setting") == "CARECLOUD_INGEST_REPLICATION_FACTOR"
    ]
    assert warning.levelno == logging.WARNING
    assert (warning.__dict__["brokers"], warning.__dict__["replication_factor"]) == (1, 1)
    for topic in (state, dlq):
        config = _config(kafka, topic)
        assert (config["min.insync.replicas"], config["unclean.leader.election.enable"]) == ("1", "false")
    ensure_topics(kafka.admin(), state_topic=state, dlq_topic=dlq, partitions=2)  # accepted as created
    lowered = [
        r for r in caplog.records if r.__dict__.get("setting") == "CARECLOUD_INGEST_REPLICATION_FACTOR"
    ]
    assert len(lowered) == 1  # said when creating, not on every start-up that creates nothing


@pytest.mark.parametrize(
    ("partitions", "config", "fix"),
    [
        (2, {"cleanup.policy": "delete"}, "--add-config cleanup.policy=compact"),
        (1, {"cleanup.policy": "compact"}, "kafka-topics.sh --bootstrap-server $BOOTSTRAP --alter --topic"),
        (
            2,
            {"cleanup.policy": "compact", "unclean.leader.election.enable": "true"},
            "--add-config unclean.leader.election.enable=false",
        ),
    ],
)
def test_an_existing_state_topic_that_would_lose_data_is_refused_with_the_fix(
    kafka: KafkaTestCluster, partitions: int, config: dict[str, str], fix: str
) -> None:
    state = kafka.new_topic(partitions, config, prefix="state")
    with pytest.raises(TopicConfigError) as refused:
        ensure_topics(kafka.admin(), state_topic=state, dlq_topic=unique("dlq"), partitions=2)
    assert state in str(refused.value)
    assert fix in str(refused.value)
