"""A send that times out inside a transaction (RELIABILITY row 6): abort and rewind, never a
re-send inside the same transaction, and the state and offsets end exact.

The broker is frozen (SIGSTOP) just after the ingest has produced a state record inside an
open transaction, for longer than the producer's message timeout (librdkafka sets it to the
transaction timeout, here 4 s): that record and the rest of the batch time out in the
producer, unsent. When the broker thaws, the ingest must abort the transaction and consume
the batch again; or, if the coordinator has meanwhile aborted the transaction itself and
fenced the producer, exit with a clear error so that its restart resumes from the committed
offsets. Either way nothing of the timed-out transaction may become visible and nothing may
be lost."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from connector.devtools.generator import family_events
from connector.devtools.kafka import KafkaBroker
from connector.errors import TerminalError
from connector.ingest.service import IngestService
from connector.ops.metrics import Metrics
from connector.snapshot.cut import take_cut
from connector.state.topics import high_watermarks
from tests.integration.family_ingest import (
    PARTITIONS,
    assert_state_equals_replay,
    committed_events,
    ingest_names,
    ingest_service,
    wait_until,
)
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

TIMEOUT_MS = 4000  # transaction and (by librdkafka's rule) message timeout
PAUSE_S = 9.0  # well past the message timeout, under the 15 s session timeout


class _FreezeOnProduce:
    """The ingest's producer, unchanged, except that once armed, the next state record it
    produces freezes the broker (after handing the record over) for ``PAUSE_S``."""

    def __init__(self, producer: Producer, broker: KafkaBroker, armed: threading.Event) -> None:
        self._producer, self._broker, self._armed = producer, broker, armed
        self.thawed = threading.Event()

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self._producer.produce(*args, **kwargs)
        if self._armed.is_set():
            self._armed.clear()
            self._broker.pause()
            threading.Timer(PAUSE_S, self._thaw).start()

    def _thaw(self) -> None:
        self._broker.resume()
        self.thawed.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def __len__(self) -> int:
        return len(self._producer)


@pytest.mark.timeout(300)
def test_a_send_timed_out_inside_a_transaction_is_aborted_and_rewound(
    kafka_broker: KafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = KafkaTestCluster({**kafka_broker.client_config(), "log_level": "2"}, kafka_broker)
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(6000, 4, seed=11, deletes_every=9))
    kafka.seed_topic(topic, events)
    names = ingest_names()
    caplog.set_level(logging.WARNING, logger="connector")

    metrics, armed, stop = Metrics(), threading.Event(), threading.Event()
    services: list[IngestService] = []
    producers: list[_FreezeOnProduce] = []
    failures: list[BaseException] = []

    def run() -> None:  # the orchestrator: a replica that exits with an error is started again
        while not stop.is_set():
            service = ingest_service(
                kafka,
                tmp_path,
                topic,
                names,
                metrics,
                batch_max_events=300,
                transaction_timeout_ms=TIMEOUT_MS,
            )
            services.append(service)
            try:
                service.start()
                assert service._producer is not None
                producers.append(_FreezeOnProduce(service._producer, kafka_broker, armed))
                service._producer = producers[-1]  # type: ignore[assignment]
                service.run(stop)
            except Exception as exc:  # asserted below: only a clean TerminalError may end one
                failures.append(exc)

    runner = threading.Thread(target=run, name="ingest")
    runner.start()
    try:
        assert wait_until(lambda: committed_events(kafka, names["group"], topic) > 0, 120), "no first commit"
        armed.set()  # the next state record produced freezes the broker
        assert wait_until(lambda: any(p.thawed.is_set() for p in producers), 60), "the broker never froze"
        assert wait_until(
            lambda: committed_events(kafka, names["group"], topic) >= len(events), 180, step_s=0.5
        ), f"committed {committed_events(kafka, names['group'], topic)} of {len(events)}"
    finally:
        armed.clear()
        kafka_broker.resume()
        stop.set()
        runner.join(60)
    assert not runner.is_alive()
    assert all(isinstance(f, TerminalError) for f in failures), failures

    aborted = sum(s.counts["aborted_batches"] for s in services)
    reasons = [
        f"{r.getMessage()}: {r.kafka_error}: {r.kafka_reason}"  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage().startswith("transaction")
    ] + [str(f) for f in failures]
    print(f"aborted in place: {aborted}; restarts: {len(failures)}; why: {reasons}")
    # The frozen transaction never committed: it was aborted in place, or it ended the
    # replica (fenced, or the commit's retries spent) and the restart fenced it; and the log
    # says the sends timed out. The metric counts what was aborted in place.
    assert aborted + len(failures) >= 1, "the frozen transaction was not given up"
    assert any("timed out" in reason.lower() for reason in reasons), reasons
    assert metrics.registry.get_sample_value("carecloud_aborted_transactions_total") == aborted

    assert committed_events(kafka, names["group"], topic) == len(events)
    # No transaction left open: every state partition's last stable offset is its end.
    ends = high_watermarks(kafka.config(), names["state"], range(PARTITIONS))
    assert take_cut(kafka.config(), names["state"]).end_offsets == ends
    assert_state_equals_replay(kafka, names["state"], topic, events)
