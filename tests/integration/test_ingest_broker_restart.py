"""The broker SIGKILLed and restarted mid-stream (RELIABILITY row 4): no loss, no duplicates.

The real ``ingest`` command runs as a subprocess against a private broker while a stream is
being published; the broker is killed (no controlled shutdown) in the middle and restarted on
the same port and data, and publishing goes on. A connector that cannot finish its
transaction exits non-zero (bounded retries, the commit watchdog); the test plays the
orchestrator and starts it again, as Kubernetes would. Afterwards the committed offsets equal
the end of the source topic, the state equals the offline replay of the same events, and no
transaction is left open on the state topic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import IsolationLevel, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from connector.devtools.generator import family_events
from connector.devtools.kafka import KafkaBroker
from connector.errors import TransientError
from connector.ingest.watchdog import WATCHDOG_EXIT_CODE
from connector.snapshot.cut import take_cut
from connector.state.restore import restore_partition
from connector.state.store import PartitionStore
from connector.state.topics import high_watermarks
from tests.integration.cluster_helpers import Orchestrator
from tests.integration.family_ingest import (
    PARTITIONS,
    assert_state_equals_replay,
    committed_events,
    ingest_group,
)
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

Events = list[tuple[bytes, bytes | None]]


class _Publisher(threading.Thread):
    """Publishes ``events`` in small chunks through one idempotent producer that outlives the
    broker's outage (it buffers and retries), so nothing is lost or duplicated at the source."""

    def __init__(self, kafka: KafkaTestCluster, topic: str, events: Events) -> None:
        super().__init__(name="publisher", daemon=True)
        self.kafka, self.topic, self.events = kafka, topic, events
        self.sent = 0
        self.failures: list[KafkaError] = []
        self.remaining = -1

    def run(self) -> None:
        producer = self.kafka.producer({"enable.idempotence": True, "message.timeout.ms": 240_000})

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.failures.append(err)

        for start in range(0, len(self.events), 200):
            for key, value in self.events[start : start + 200]:
                producer.produce(self.topic, value, key, on_delivery=on_delivery)
            self.sent = min(start + 200, len(self.events))
            producer.poll(0.15)  # about 15 s in all: the kill lands well inside the stream
        self.remaining = producer.flush(240)


def _wait(orchestrator: Orchestrator, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        orchestrator.tend()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _kill_inside_open_transaction(kafka: KafkaTestCluster, broker: KafkaBroker, state_topic: str) -> bool:
    """SIGKILL the broker as soon as a state partition has uncommitted records (its last stable
    offset is behind its end): the connector is then inside an open transaction. True when
    one was seen within 30 s; the broker is killed either way."""
    admin = AdminClient({**kafka.config(), "log_level": 0})
    request = {TopicPartition(state_topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ends = [
                {
                    tp.partition: f.result(10).offset
                    for tp, f in admin.list_offsets(request, isolation_level=level).items()
                }
                for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED)
            ]
            if ends[0] != ends[1]:
                return True
        return False
    finally:
        broker.kill()  # SIGKILL: no controlled shutdown, in-flight requests lost


@pytest.mark.timeout(600)
def test_broker_sigkilled_and_restarted_mid_stream_loses_and_duplicates_nothing(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    # The test's own clients stay quiet about the broker being away; the connector's log does not.
    kafka = KafkaTestCluster({**kafka_broker.client_config(), "log_level": "2"}, kafka_broker)
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(4000, 5, seed=5, deletes_every=7))
    head, tail = events[:4000], events[4000:]
    kafka.seed_topic(topic, head)
    group, state_topic, env = ingest_group(
        kafka,
        tmp_path,
        topic,
        "brk",
        STATE_DIR=str(tmp_path / "store"),
        TRANSACTIONAL_ID=unique("txn"),
        BATCH_MAX_EVENTS="200",
    )
    log_path = tmp_path / "ingest.log"
    with log_path.open("w") as log:
        orchestrator = Orchestrator(env, log)
        publisher = _Publisher(kafka, topic, tail)
        try:
            _wait(orchestrator, lambda: committed_events(kafka, group, topic) > 0, 120, "a first commit")
            publisher.start()
            _wait(orchestrator, lambda: publisher.sent >= len(tail) // 3, 60, "a third of the tail")
            in_transaction = _kill_inside_open_transaction(kafka, kafka_broker, state_topic)
            assert publisher.is_alive(), "the stream finished before the kill; publish more slowly"
            time.sleep(3)
            kafka_broker.start()  # same port, same data: the harness keeps them (harness.json)

            publisher.join(300)
            assert not publisher.is_alive(), "the publisher did not finish"
            assert publisher.remaining == 0
            assert not publisher.failures, publisher.failures[:3]
            _wait(
                orchestrator,
                lambda: committed_events(kafka, group, topic) >= len(events),
                150,
                f"all {len(events)} events committed (log: {log_path})",
            )
        finally:
            code = orchestrator.stop()
    assert code == 0, log_path.read_text()[-3000:]
    assert in_transaction, "the broker was never killed inside an open transaction"
    # A restart follows only a clean failure: an error (1) or the watchdog ending a hung call.
    assert set(orchestrator.exits) <= {1, WATCHDOG_EXIT_CODE}, orchestrator.exits
    assert committed_events(kafka, group, topic) == len(events)

    # No transaction left open: every state partition's last stable offset is its end.
    ends = high_watermarks(kafka.config(), state_topic, range(PARTITIONS))
    assert take_cut(kafka.config(), state_topic).end_offsets == ends
    assert_state_equals_replay(kafka, state_topic, topic, events)
    print(f"restarts after non-zero exits: {orchestrator.exits}")


def test_a_restore_that_cannot_move_gives_up_instead_of_waiting_forever(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    """A transaction left open holds the restore at the last stable offset; past the stall bound
    the restore raises a TransientError (the ingest then exits and is restarted) rather than
    spinning while its progress callback keeps the liveness heartbeat happy."""
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    kafka.seed_topic(topic, [(b"Family/FAM-1", b"{}")])
    producer = kafka.producer({"transactional.id": unique("open"), "transaction.timeout.ms": 60_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"{}", b"Family/FAM-2", partition=0)
    producer.flush(30)  # in the log, uncommitted: the high watermark is past it
    store = PartitionStore(tmp_path / "p0")
    beats: list[int] = []
    try:
        with pytest.raises(TransientError, match="no progress"):
            restore_partition(
                kafka.config(), topic, 0, store, lambda done, _: beats.append(done), stall_timeout_s=2
            )
        assert store.get(b"Family/FAM-1") == b"{}"  # what was committed got in
        assert len(beats) > 5  # it was beating all along: liveness alone would never notice
    finally:
        producer.abort_transaction(30)
        store.close()
