"""What the three-broker fault tests share: a paced publisher, a pod-like orchestrator of the
``ingest`` command, its environment, and the moments a fault is aimed at.

The stream is the synthetic generator's (all six source tables, examples/mapping.yaml), so
the outcome is judged against the generator's own expected state (``state_checker``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from confluent_kafka import IsolationLevel, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connector.devtools.synthetic import SyntheticEvent
from connector.state.topics import end_offsets
from tests.kafka_helpers import unique

__all__ = [
    "PARTITIONS",
    "Orchestrator",
    "Publisher",
    "await_open_transaction",
    "create_replicated_topics",
    "ingest_env",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3


def create_replicated_topics(
    config: Mapping[str, Any], names: Sequence[str], partitions: int = PARTITIONS
) -> None:
    """The source topics as Debezium's would be on a production cluster: 3 replicas each."""
    admin = AdminClient(dict(config))
    for future in admin.create_topics([NewTopic(n, partitions, 3) for n in names]).values():
        future.result(60)


def ingest_env(bootstrap: str, work: Path, prefix: str, **ingest: str) -> dict[str, str]:
    """The environment of one ``ingest`` pod over the synthetic stream's topics ``prefix*``."""
    mapping = work / "mapping.yaml"
    mapping.write_text((ROOT / "examples" / "mapping.yaml").read_text().replace("benefits.public.", prefix))
    return {
        **os.environ,
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_GROUP_ID": unique("cluster"),
        "CARECLOUD_INGEST_STATE_TOPIC": unique("state"),
        "CARECLOUD_INGEST_DLQ_TOPIC": unique("dlq"),
        "CARECLOUD_INGEST_STATE_DIR": str(work / "store"),
        "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique("txn"),
        "CARECLOUD_OPS_HTTP_HOST": "127.0.0.1",
        "CARECLOUD_OPS_HTTP_PORT": "0",
        **{f"CARECLOUD_INGEST_{key}": value for key, value in ingest.items()},
    }


class Publisher(threading.Thread):
    """Publishes the events in slices, ``pace`` seconds apart, through one idempotent producer
    that outlives broker faults (it buffers and retries), as Debezium's does: the key decides
    the partition (murmur2, Java's partitioner, unless ``partitioner`` names another: it must
    be the one that published the topic's earlier events). ``hurry()`` drops the pauses.

    Past ``trickle_after`` of the events it sends ``trickle`` events a slice: the stream then
    lasts until the test hurries it, however long the faults take on a loaded machine, and
    something is always arriving while a fault is on."""

    def __init__(
        self,
        config: Mapping[str, Any],
        events: list[SyntheticEvent],
        slice_size: int,
        pace: float,
        *,
        trickle_after: float = 0.6,
        trickle: int = 3,
        partitioner: str = "murmur2_random",
    ) -> None:
        super().__init__(name="publisher", daemon=True)
        self.config, self.events, self.slice_size, self.pace = dict(config), events, slice_size, pace
        self.trickle_from, self.trickle = int(len(events) * trickle_after), trickle
        self.partitioner = partitioner
        self.sent = 0
        self.failures: list[KafkaError] = []
        self.remaining = -1
        self._hurry = threading.Event()

    def hurry(self) -> None:
        self._hurry.set()

    def run(self) -> None:
        producer = Producer(
            {
                **self.config,
                "enable.idempotence": True,
                "partitioner": self.partitioner,
                "message.timeout.ms": 300_000,
                "linger.ms": 5,
            }
        )

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.failures.append(err)

        start = 0
        while start < len(self.events):
            hurried = self._hurry.is_set()
            size = self.slice_size if hurried or start < self.trickle_from else self.trickle
            for event in self.events[start : start + size]:
                producer.produce(event.topic, event.value, event.key, on_delivery=on_delivery)
            start = self.sent = min(start + size, len(self.events))
            producer.poll(0)
            if not hurried:
                self._hurry.wait(self.pace)
        self.remaining = producer.flush(300)

    @property
    def done(self) -> bool:
        return self.sent == len(self.events)


class Orchestrator:
    """Keeps one ``ingest`` process running, as Kubernetes keeps a pod: a non-zero exit is
    started again (the connector exits on purpose when it cannot finish a transaction)."""

    def __init__(self, env: dict[str, str], log: IO[str]) -> None:
        self.env, self.log = env, log
        self.exits: list[int] = []
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "connector.cli", "ingest"]
        return subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def tend(self) -> None:
        code = self.proc.poll()
        if code is None:
            return
        self.exits.append(code)
        assert code != 0, "ingest stopped cleanly without being asked to"
        self.proc = self._spawn()

    def stop(self) -> int:
        """SIGTERM; a process still there after 60 s prints its threads' stacks and is killed."""
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack to the log
            time.sleep(1)
            self.proc.kill()
            self.proc.wait()
            raise


def wait_for(check: Callable[[], bool], timeout: float, what: str, tend: Orchestrator | None = None) -> None:
    """Poll ``check`` (tending the orchestrator meanwhile) until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if tend is not None:
            tend.tend()
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def await_open_transaction(config: Mapping[str, Any], topic: str, timeout: float = 30.0) -> int | None:
    """A partition of ``topic`` with uncommitted records (last stable offset behind the end): the
    connector is inside an open transaction there. None if none was seen within ``timeout``."""
    admin = AdminClient({**config, "log_level": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stable = end_offsets(admin, topic, range(PARTITIONS), IsolationLevel.READ_COMMITTED)
            high = end_offsets(admin, topic, range(PARTITIONS), IsolationLevel.READ_UNCOMMITTED)
        except Exception:  # a broker moving leadership: ask again
            continue
        for p in range(PARTITIONS):
            if stable[p] < high[p]:
                return p
    return None
