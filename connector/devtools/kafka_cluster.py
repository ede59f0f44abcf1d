"""A three-node KRaft cluster of the project's brokers, for the faults one broker cannot show.

Leader failover, a transaction coordinator moving, an ISR shrinking below
``min.insync.replicas`` and a rolling restart are the everyday events of a managed Kafka, and
none of them exists on one broker (RELIABILITY row 22, issue 21). Each node is a
``KafkaBroker`` (broker and controller in one JVM, its own ports and data dir) formatted with
one cluster id, all three voters of the controller quorum, so any one node can die and the
cluster goes on. Replication is production-like: internal topics and new topics get three
replicas and ``min.insync.replicas=2``; unclean leader election is off.

The heap is small (320 MiB a node, the three together about what one default test broker
takes) and the internal topics keep the single broker's 8 partitions: the fault tests run the
cluster beside the suite's own broker on two cores.

Command line: ``python -m connector.devtools.kafka run --brokers 3``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connector.devtools.kafka import BrokerError, KafkaBroker, new_cluster_id

__all__ = ["CLUSTER_PROPERTIES", "TRANSACTION_LOG_PARTITIONS", "KafkaCluster", "transaction_log_partition"]

TRANSACTION_LOG_PARTITIONS = 8
"""``transaction.state.log.num.partitions`` of the harness (the single broker's too)."""

CLUSTER_PROPERTIES: Mapping[str, str] = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.num.partitions": str(TRANSACTION_LOG_PARTITIONS),
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "unclean.leader.election.enable": "false",
    # A broker shut down cleanly hands its leaderships over first (what a rolling restart does).
    "controlled.shutdown.enable": "true",
}
"""What a production cluster sets and the connector relies on (README, deployment section)."""

_STATE_FILE = "cluster.json"


def transaction_log_partition(transactional_id: str) -> int:
    """The ``__transaction_state`` partition whose leader coordinates ``transactional_id``:
    Kafka's ``Utils.abs(transactionalId.hashCode) % partitions``, with Java's String hash."""
    units = transactional_id.encode("utf-16-be")  # Java hashes UTF-16 code units
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % TRANSACTION_LOG_PARTITIONS


class KafkaCluster:
    """``size`` KRaft nodes on loopback, owned by this process; ``node(i)`` is node id ``i``.

    Each node is a ``KafkaBroker``, so a test kills (SIGKILL), stops (SIGTERM), pauses
    (SIGSTOP), resumes and restarts one node at a time with its methods; the cluster answers
    where leaders and coordinators are and waits until replicas are back in sync.
    """

    def __init__(
        self,
        size: int = 3,
        work_dir: Path | None = None,
        *,
        heap: str = "320m",
        properties: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self._owns_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="carecloud-cluster-")) if work_dir is None else work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout = startup_timeout
        state = self.work_dir / _STATE_FILE
        cluster_id = json.loads(state.read_text())["cluster_id"] if state.is_file() else new_cluster_id()
        state.write_text(json.dumps({"cluster_id": cluster_id, "size": size}))
        self.cluster_id = cluster_id
        """Every node is formatted with it; kept in the work dir's ``cluster.json``."""
        self.brokers = [
            KafkaBroker(
                self.work_dir / f"node-{i}", heap=heap, startup_timeout=startup_timeout, cluster_id=cluster_id
            )
            for i in range(1, size + 1)
        ]
        voters = ",".join(f"{i}@127.0.0.1:{b.controller_port}" for i, b in enumerate(self.brokers, 1))
        for i, broker in enumerate(self.brokers, 1):
            broker.extra_properties = {
                **CLUSTER_PROPERTIES,
                "node.id": str(i),
                "controller.quorum.voters": voters,
                **(properties or {}),
            }

    # -- the cluster -----------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    @property
    def running(self) -> bool:
        """Every node's JVM is alive (paused ones count: they are frozen, not gone)."""
        return all(b.running for b in self.brokers)

    def client_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap}

    def node(self, node_id: int) -> KafkaBroker:
        return self.brokers[node_id - 1]

    def node_id(self, broker: KafkaBroker) -> int:
        return self.brokers.index(broker) + 1

    def start(self) -> KafkaCluster:
        """Launch every node, then wait: a node answers only once a quorum of voters runs."""
        for broker in self.brokers:
            broker.launch()
        for broker in self.brokers:
            broker.wait_ready()
        self.wait_brokers(len(self.brokers))
        return self

    def close(self, *, graceful: bool = True) -> None:
        """Stop every node (resuming paused ones first) and delete the work dir if made here."""
        for broker in self.brokers:
            broker.resume()
            if graceful:
                broker.stop()
            else:
                broker.kill()
        if self._owns_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(f"== node {i} ==\n{b.log_tail(lines)}" for i, b in enumerate(self.brokers, 1))

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- where things are ------------------------------------------------------------------
    def _admin(self) -> AdminClient:
        return AdminClient({**self.client_config(), "log_level": 0, "reconnect.backoff.max.ms": 200})

    def _metadata(self, topic: str | None = None) -> Any:
        return self._admin().list_topics(topic=topic, timeout=10)

    def leader(self, topic: str, partition: int) -> KafkaBroker:
        """The node leading ``topic``'s ``partition`` now (metadata: may lag a move by a moment)."""
        leader = self._metadata(topic).topics[topic].partitions[partition].leader
        if leader < 1:
            raise BrokerError(f"{topic}[{partition}] has no leader")
        return self.node(leader)

    def transaction_coordinator(self, transactional_id: str) -> KafkaBroker:
        """The node coordinating ``transactional_id``'s transactions (the leader of its
        ``__transaction_state`` partition, which exists once any transaction has begun)."""
        return self.leader("__transaction_state", transaction_log_partition(transactional_id))

    # -- waiting ---------------------------------------------------------------------------
    def wait_brokers(self, count: int, timeout: float | None = None) -> None:
        """Until the metadata lists ``count`` live brokers (a killed one drops out once its
        session expires; a restarted one comes back once registered)."""
        self._wait(lambda meta: len(meta.brokers) == count, f"{count} live brokers", timeout)

    def wait_in_sync(self, topics: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Until every partition (of ``topics``, else of every topic, internal ones included)
        has a leader and all its replicas in sync: what a rolling restart waits for between
        nodes, so it never takes down the last in-sync copy of anything."""
        wanted = None if topics is None else set(topics)

        def in_sync(meta: Any) -> bool:
            chosen = [t for name, t in meta.topics.items() if wanted is None or name in wanted]
            return len(meta.brokers) == len(self.brokers) and all(
                t.error is None and p.leader >= 1 and sorted(p.isrs) == sorted(p.replicas)
                for t in chosen
                for p in t.partitions.values()
            )

        self._wait(in_sync, "every replica in sync", timeout)

    def rolling_restart(self) -> None:
        """Restart the nodes one by one as operators do: clean stop (leaderships handed over),
        start, wait until every replica is in sync again, then the next node.

        Call it from the thread that lives as long as the cluster (the main thread): a node dies
        with the thread that started it (``KafkaBroker``'s parent-death signal)."""
        for broker in self.brokers:
            broker.restart()
            self.wait_in_sync()

    def heal(self) -> None:
        """Resume paused nodes, start stopped ones and wait until all are in sync: what a test
        that kills or pauses nodes leaves behind for the next one. The stopped ones are launched
        together: with two of three down, one alone cannot reach a controller quorum."""
        for broker in self.brokers:
            broker.resume()
        stopped = [broker for broker in self.brokers if not broker.running]
        for broker in stopped:
            broker.launch()
        for broker in stopped:
            broker.wait_ready()
        self.wait_in_sync()

    def _wait(self, done: Any, what: str, timeout: float | None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        admin = self._admin()
        while True:
            with contextlib.suppress(KafkaException):
                if done(admin.list_topics(timeout=5)):
                    return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"cluster: no {what} in {timeout or self.startup_timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.2)
