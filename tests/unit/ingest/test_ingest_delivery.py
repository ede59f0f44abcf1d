"""What the ingest says when a state record is not delivered (no broker needed: the callback
is librdkafka's report, built here as librdkafka builds it)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from connector.config import load_settings
from connector.ingest.service import IngestService
from connector.mapping import load_mapping

ROOT = Path(__file__).parents[3]


class _Report:
    """The two things the callback reads of a delivered (or failed) message."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@pytest.fixture
def service(tmp_path: Path) -> IngestService:
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        ingest={
            "mapping_file": "unused.yaml",
            "group_id": "g",
            "state_topic": "s",
            "dlq_topic": "d",
            "state_dir": tmp_path,
        },
    )
    return IngestService(settings, load_mapping(ROOT / "examples" / "mapping.yaml"))


def test_a_failed_record_is_logged_by_error_and_partition_only(
    service: IngestService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connector")
    service._on_delivery(None, _Report(2, 41))  # type: ignore[arg-type]
    service._on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), _Report(2, -1))  # type: ignore[arg-type]
    lines = [(r.getMessage(), r.kafka_error, r.partition) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [("state record not delivered; the batch will be aborted", "_MSG_TIMED_OUT", 2)]
    assert service._delivered == {2: 41}  # a failure moves no offset the local store records


def test_records_purged_by_our_own_abort_are_not_reported_again(
    service: IngestService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connector")
    for code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        service._on_delivery(KafkaError(code), _Report(0, -1))  # type: ignore[arg-type]
    assert caplog.records == []
