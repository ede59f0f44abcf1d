"""The ingest service: Kafka change events -> entity state, exactly once.

``IngestService`` consumes the source topics and maintains the state; one per process. It is
built in three layers, one concern each: the partitions and their local stores
(``connector.ingest.partitions``), the transaction loop (``connector.ingest.transaction``: one
Kafka transaction per batch carries its state rows, dead letters and consumed offsets, each
message handled by ``connector.ingest.message``) and, here, the clients' start-up, the run
loop and shutdown.

Fencing: the producer's ``transactional.id`` is stable per replica (a restarted pod fences
its own previous incarnation at ``init_transactions``), and offsets are sent with the
consumer's group metadata (KIP-447), so a replica that lost its partitions in a rebalance
cannot commit a batch for them. Partitions are assigned with the ``range`` strategy over
source topics of equal partition count, so partition p of every source topic — and hence
state partition p — has exactly one owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from connector._fastpath import fastpath_available
from connector.config import Settings
from connector.errors import ConfigError, TransientError
from connector.ingest.generations import Generations
from connector.ingest.remap import RemapPass
from connector.ingest.report import IngestReport
from connector.ingest.rollout import check_rollout
from connector.ingest.schema_watch import SchemaWatch
from connector.ingest.transaction import CALL_TIMEOUT_S, RECORD_OVERHEAD, Transactions
from connector.ingest.watchdog import Watchdog
from connector.mapping import Mapper, MappingSpec
from connector.mapping.fastpath import FastPath
from connector.ops.health import Heartbeat
from connector.ops.metrics import METRICS, Metrics
from connector.source import Decoder, make_decoder
from connector.state.exceptions import StoreError
from connector.state.purge import MarkerPurge
from connector.state.store import PartitionStore
from connector.state.topics import ensure_topics, record_limit, source_partitions

__all__ = ["IngestService"]

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.5
_BACKOFF_MAX_S = 30.0


class IngestService(Transactions):
    """Consumes the source topics and maintains the state; one per process."""

    def __init__(
        self,
        settings: Settings,
        spec: MappingSpec,
        *,
        metrics: Metrics | None = None,
        heartbeat: Heartbeat | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.settings = settings
        self.watchdog = watchdog if watchdog is not None else Watchdog()
        self.metrics = metrics if metrics is not None else METRICS
        self.heartbeat = heartbeat if heartbeat is not None else Heartbeat()
        self.ingest = settings.ingest
        self.mapper = Mapper(spec, source_columns=self.ingest.source_columns)
        self.source_topics = sorted(spec.topics)
        if not self.source_topics:
            raise ConfigError("the mapping lists no topics to consume")
        self.transaction_topic = spec.transaction_topic
        self.carry_topic = self.ingest.carry_topic_name
        self._state_partitions = 1
        """The state topic's partition count (``start`` reads it): an END's ledger record goes
        to its transaction-topic partition modulo this."""
        self.decoders: dict[str, Decoder] = {}
        for name in self.source_topics:
            topic = spec.topic(name)
            options: dict[str, Any] = {"unavailable_placeholder": topic.unavailable_placeholder}
            if topic.format != "debezium-json" and self.ingest.schema_registry_url:
                options["schema_registry_url"] = self.ingest.schema_registry_url
            self.decoders[name] = make_decoder(topic.format, **options)
        self.fast = self._fast_paths(spec)
        """The compiled decode-and-map path per Debezium JSON topic (``_fast_paths``)."""
        self.schema_watch = SchemaWatch(
            spec, metrics=self.metrics, registry_url=self.ingest.schema_registry_url
        )
        """Each source schema checked against the mapping when first seen (``schema_watch``)."""
        self.stores: dict[int, PartitionStore] = {}
        self.remap = None
        self.generations = Generations()
        """Each owned source partition's snapshot generation (``connector.ingest.generations``)."""
        self.purge = MarkerPurge(
            self.ingest.marker_purge_after_s,
            ledger_horizon_s=self.ingest.transaction_ledger_purge_after_s if spec.transaction_topic else 0,
        )
        self._restore_stall_s = self.ingest.transaction_timeout_ms / 1000 + 60
        """A restore waits out an open transaction (up to the transaction timeout), not longer."""
        self.counts: Counter[str] = Counter()
        self.report = IngestReport(self.metrics)
        self.ready = threading.Event()
        self._delivered: dict[int, int] = {}
        self._fatal: KafkaError | None = None
        self._callback_error: Exception | None = None
        self._store_failure: StoreError | None = None
        """A store that could not be flushed on close or revoke: ``close`` raises it."""
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._record_limit = 1_000_000  # librdkafka's default; start() reads the topics' own
        self._rebalances = 0
        """Assignments and revocations so far: a batch taken across one is cut there."""
        self._batch_budget_s = self.ingest.transaction_timeout_ms / 2000
        """A batch stops taking messages after this long and commits what it has handled, well
        before the coordinator would abort its transaction (a run of slow messages)."""

    def _fast_paths(self, spec: MappingSpec) -> dict[str, FastPath]:
        """One ``FastPath`` per Debezium JSON topic, as ``ingest.fast_path`` says."""
        json_topics = [t for t in self.source_topics if spec.topic(t).format == "debezium-json"]
        if self.ingest.fast_path == "off" or not json_topics:
            return {}
        missing = fastpath_available()
        if missing is not None:
            if self.ingest.fast_path == "on":
                raise ConfigError(f"CARECLOUD_INGEST_FAST_PATH=on, but {missing}")
            log.warning("compiled fast path unavailable; decoding in Python", extra={"reason": missing})
            return {}
        fast = {topic: FastPath(self.mapper, topic) for topic in json_topics}
        for topic, path in fast.items():
            log.info(
                "compiled fast path on; these tables still decode in Python",
                extra={"topic": topic, "tables": ",".join(path.python_only) or "none"},
            )
        return fast

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Check topics, join the group and fence any previous incarnation."""
        base = self.settings.kafka.client_config()
        base["error_cb"] = self._on_error
        admin = AdminClient(base)
        self._await_cluster(admin)
        partitions = source_partitions(admin, self.source_topics)
        self._state_partitions = partitions
        if self.transaction_topic is not None:
            self._check_transaction_topic(admin)
        ensure_topics(
            admin,
            state_topic=self.ingest.state_topic,
            dlq_topic=self.ingest.dlq_topic,
            partitions=partitions,
            dlq_retention_ms=self.ingest.dlq_retention_ms,
            carry_topic=self.carry_topic,
            replication_factor=self.ingest.replication_factor,
            min_insync_replicas=self.ingest.min_insync_replicas,
        )
        # A mapping that would move EntityIds is refused before anything is consumed; one that
        # goes ahead is recorded as each entity's current mapping (connector.ingest.rollout).
        self.rollout = check_rollout(base, self.ingest, self.mapper.spec)
        unversioned = self.rollout.registry.unversioned
        self.remap = RemapPass(
            self.mapper,
            {entity: unversioned.get(entity, version) for entity, version in self.mapper.versions.items()},
            rows_per_batch=self.ingest.remap_rows_per_batch,
            state_topic=self.ingest.state_topic,
            dlq_topic=self.ingest.dlq_topic,
            registry_topic=self.ingest.mapping_topic_name,
            on_dead_letter=self.report.dead_letter,
        )
        # The producer refuses what the topics would refuse, and the loop refuses it before the
        # producer does: a state row or dead letter over the limit is a dead letter by
        # reference, never a produce() error that aborts the batch on every restart.
        self._record_limit = record_limit(admin, [self.ingest.state_topic, self.ingest.dlq_topic])
        self._producer = Producer(
            {
                **base,
                "transactional.id": self.ingest.transactional_id,
                "linger.ms": 5,
                "transaction.timeout.ms": self.ingest.transaction_timeout_ms,
                "message.max.bytes": self._record_limit,
                "batch.size": min(1_000_000, self._record_limit - RECORD_OVERHEAD),
            }
        )
        with self._guard("init_transactions", CALL_TIMEOUT_S):
            self._producer.init_transactions(CALL_TIMEOUT_S)
        self._check_fatal()
        self._consumer = Consumer(
            {
                **base,
                "group.id": self.ingest.group_id,
                # Static membership: a restarted replica (same StatefulSet pod name) gets its
                # partitions back at once instead of after the session timeout.
                "group.instance.id": self.ingest.transactional_id,
                "session.timeout.ms": self.ingest.session_timeout_ms,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "fetch.queue.backoff.ms": 10,
                # What librdkafka prefetches is memory too: half a batch's byte budget at most.
                "queued.max.messages.kbytes": max(1024, min(65_536, self.ingest.batch_max_bytes // 2048)),
            }
        )
        topics = [*self.source_topics, self.carry_topic]
        if self.transaction_topic:
            topics.append(self.transaction_topic)
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )

    def _check_transaction_topic(self, admin: AdminClient) -> None:
        """The mapping's ``transactions.topic`` must exist: Debezium creates it with
        ``provide.transaction.metadata=true``; a wrong name would silently track nothing."""
        topics = admin.list_topics(timeout=CALL_TIMEOUT_S).topics
        if self.transaction_topic not in topics:
            raise ConfigError(
                f"the mapping's transactions.topic {self.transaction_topic!r} does not exist: it is "
                "Debezium's <topic.prefix>.transaction, written with provide.transaction.metadata=true"
            )

    def _await_cluster(self, admin: AdminClient) -> None:
        """Reach the cluster in short steps, so a refused login fails start-up in seconds.

        librdkafka reports a wrong password only through ``error_cb`` (``_AUTHENTICATION``);
        one long metadata call would hide it behind a generic transport failure.
        """
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            try:
                admin.list_topics(timeout=1.0)
                return
            except KafkaException:
                admin.poll(0)  # serves error_cb
                self._check_fatal()
                if time.monotonic() >= deadline:
                    raise TransientError("cannot reach the Kafka cluster (CARECLOUD_KAFKA_*)") from None

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in flight completes or aborts whole."""
        backoff = _BACKOFF_MIN_S
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                try:
                    self.run_batch()
                    backoff = _BACKOFF_MIN_S
                except TransientError as exc:
                    # Not bad input: keep offsets where they are and try again later.
                    self.counts["transient_errors"] += 1
                    log.warning(
                        "transient failure; retrying",
                        extra={"error": type(exc).__name__, "retry_in_s": backoff},
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
        except BaseException:
            self.close(quiet=True)  # the error that ended the loop is the one to report
            raise
        self.close()

    def close(self, *, quiet: bool = False) -> None:
        """Release the clients and the stores. A store that cannot be flushed (a full volume)
        is raised as ``StoreError`` after everything is closed, unless ``quiet`` (another error
        is already on its way out): a graceful stop must not hide that the volume is full."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        for store in self.stores.values():
            self._close_store(store)
        self.stores.clear()
        if self._producer is not None:
            try:
                self._producer.flush(10)
            except KafkaException as exc:
                # A fenced or otherwise failed producer has nothing left to send; raising here
                # would replace the error that ended the loop with this one.
                log.warning("producer not flushed on close", extra={"kafka_error": exc.args[0].name()})
            except SystemError as exc:
                # Seen under load after _FENCED: confluent-kafka's flush of a producer in a fatal
                # state raises SystemError; the process is leaving with the fencing error already.
                log.warning("producer not flushed on close", extra={"error": type(exc).__name__})
            self._producer = None
        if self._store_failure is not None and not quiet:
            raise self._store_failure
