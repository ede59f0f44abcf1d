"""The ingest's lag report asks the broker once per call, not once per idle partition.

A partition has no consumer position until one of its messages is consumed, so on an idle
source most assigned partitions lack one. Asking each its committed offset on its own blocked
the batch loop for a round trip per partition (about 0.5 s each measured; 18 idle partitions
held the loop about 9 s in every 10). The consumer here is a stand-in that records the calls
(the report's I/O is the consumer's; the broker's answers are given).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from connector.ingest.report import IngestReport
from connector.ops.metrics import Metrics


class _Consumer:
    def __init__(self) -> None:
        # (position, cached high watermark, committed, broker's high watermark) per partition
        self.partitions = {
            ("t", 0): (5, 9, 5, 9),  # fetched and consumed: everything cached
            ("t", 1): (-1001, 40, 30, 40),  # fetched, nothing consumed yet: committed 30
            ("t", 2): (-1001, -1001, 12, 20),  # not even fetched yet
            ("u", 0): (-1001, 7, -1001, 7),  # nothing ever committed: all of it behind
        }
        self.calls: list[tuple[str, Any]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.partitions]

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.partitions[(tp.topic, tp.partition)][0]) for tp in tps
        ]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        _, cached_high, _, high = self.partitions[(tp.topic, tp.partition)]
        if not cached:
            self.calls.append(("watermarks", (tp.topic, tp.partition)))
        return 0, cached_high if cached else high

    def committed(self, tps: list[TopicPartition], timeout: float | None = None) -> list[TopicPartition]:
        self.calls.append(("committed", sorted((tp.topic, tp.partition) for tp in tps)))
        return [
            TopicPartition(tp.topic, tp.partition, self.partitions[(tp.topic, tp.partition)][2]) for tp in tps
        ]


def _lag(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.consumer_lag.collect()
        for s in family.samples
    }


def test_every_partition_without_a_position_is_asked_in_one_request() -> None:
    metrics, consumer = Metrics(), _Consumer()
    report = IngestReport(metrics)
    report.lag(consumer)  # type: ignore[arg-type]
    assert consumer.calls == [
        ("committed", [("t", 1), ("t", 2), ("u", 0)]),
        ("watermarks", ("t", 2)),  # the only one the consumer has not fetched
    ]
    assert _lag(metrics) == {("t", "0"): 4, ("t", "1"): 10, ("t", "2"): 8, ("u", "0"): 7}


def test_the_broker_is_asked_again_only_after_the_interval() -> None:
    metrics, consumer = Metrics(), _Consumer()
    report = IngestReport(metrics)
    report.lag(consumer)  # type: ignore[arg-type]
    consumer.calls.clear()
    report.lag(consumer)  # type: ignore[arg-type]
    assert consumer.calls == []  # the cached ones are reported again; the others wait
