"""A cut's read that cannot move fails in bounded time (issue 21): with every broker of a
partition gone librdkafka waits for a leader and reports nothing, and the read renewed the
run's lease while it waited, so the run held its date all night. Here a cut past the end of
an empty partition stands for a partition whose records cannot be fetched."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Message

from connector.errors import TransientError
from connector.snapshot.cut_offsets import Cut, consume_to_cut
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration


def test_a_read_that_moves_no_partition_fails_after_the_stall_bound(kafka: KafkaTestCluster) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    beats: list[float] = []

    def absorb(messages: list[Message], _ends: dict[int, int]) -> list[Message]:
        return [m for m in messages if m.error() is not None]

    started = time.monotonic()
    with pytest.raises(TransientError, match="no partition moved for 2 s"):
        consume_to_cut(
            kafka.config(), Cut(topic, {0: 10}), absorb, lambda: beats.append(1), stall_timeout_s=2
        )
    assert len(beats) >= 2  # it kept beating (renewing the lease) while it could not move
    assert time.monotonic() - started < 60


def test_a_read_that_moves_is_not_cut_short(kafka: KafkaTestCluster) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    kafka.seed_topic(topic, [(f"Family/FAM-{i}".encode(), b"{}") for i in range(50)])
    got: list[Message] = []

    def absorb(messages: list[Message], _ends: dict[int, int]) -> list[Message]:
        got.extend(m for m in messages if m.error() is None)
        return [m for m in messages if m.error() is not None]

    consume_to_cut(kafka.config(), Cut(topic, {0: 50}), absorb, stall_timeout_s=30)
    assert len(got) == 50
