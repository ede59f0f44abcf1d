"""Factories over one Kafka cluster for integration tests.

Shaped after confluent-kafka-python's own integration conftest: a test asks for a fresh topic
with a unique name, a producer, a consumer in a unique group, or a seeded topic, and never
shares any of them with another test, so tests stay independent on one session-wide broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connector.devtools.kafka import KafkaBroker

__all__ = ["KafkaTestCluster", "unique"]

Record = tuple[bytes | None, bytes | None]


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against a long-lived broker) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class KafkaTestCluster:
    """Client factories for one cluster: the session broker, a SASL one, or ``KAFKA_BOOTSTRAP``."""

    def __init__(
        self, base_config: Mapping[str, str], broker: KafkaBroker | None = None, *, replication: int = 1
    ) -> None:
        self._base = dict(base_config)
        self.broker = broker
        self.replication = replication
        """Replicas of every topic ``new_topic`` creates: 3 on the three-broker cluster."""
        self._admin: AdminClient | None = None

    @classmethod
    def for_broker(cls, broker: KafkaBroker) -> KafkaTestCluster:
        return cls(broker.client_config(), broker)

    @property
    def bootstrap(self) -> str:
        return self._base["bootstrap.servers"]

    def config(self, overrides: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """Base client settings plus overrides; dotted keys go in ``overrides`` or ``**{...}``."""
        return {**self._base, **(overrides or {}), **kwargs}

    def wrong_password_config(self) -> dict[str, Any]:
        """Settings that reach the SASL listener but must fail authentication."""
        if "sasl.password" not in self._base:
            raise RuntimeError("this cluster has no SASL listener")
        return self.config({"sasl.password": "not-the-password"})

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self.config())
        return self._admin

    def new_topic(
        self, partitions: int = 1, config: Mapping[str, str] | None = None, *, prefix: str = "test"
    ) -> str:
        """Create a uniquely named topic and return once every partition has a leader."""
        name = unique(prefix)
        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=self.replication, config=dict(config or {})
        )
        self.admin().create_topics([topic], operation_timeout=30)[name].result(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            meta = self.admin().list_topics(topic=name, timeout=5).topics.get(name)
            if (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                return name
            time.sleep(0.05)
        raise TimeoutError(f"topic {name} has no leaders after 30 s")

    def producer(self, overrides: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Producer:
        return Producer(self.config(overrides, **kwargs))

    def consumer(
        self, group: str | None = None, overrides: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Consumer:
        """A consumer in its own group that reads from the start without librdkafka's 1 s backoff."""
        defaults = {
            "group.id": group or unique("group"),
            "auto.offset.reset": "earliest",
            "fetch.queue.backoff.ms": 10,  # FACTS.md: the 1000 ms default caps a working consumer
        }
        return Consumer(self.config({**defaults, **(overrides or {})}, **kwargs))

    def seed_topic(self, topic: str, records: Sequence[Record], *, partition: int | None = None) -> None:
        """Produce ``(key, value)`` pairs in order and fail unless every one was acknowledged."""
        failures: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)

        producer = self.producer({"enable.idempotence": True})
        for key, value in records:
            producer.produce(
                topic,
                key=key,
                value=value,
                partition=-1 if partition is None else partition,
                on_delivery=on_delivery,
            )
        remaining = producer.flush(30)
        if remaining or failures:
            raise KafkaException(failures[0] if failures else f"{remaining} records not delivered in 30 s")

    def read_topic(
        self,
        topic: str,
        count: int,
        *,
        timeout: float = 30.0,
        overrides: Mapping[str, Any] | None = None,
    ) -> list[Message]:
        """Read exactly ``count`` records from the start of ``topic`` (fresh group, no commits)."""
        consumer = self.consumer(None, {"enable.auto.commit": False, **(overrides or {})})
        consumer.subscribe([topic])
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        try:
            while len(got) < count and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                got.append(msg)
        finally:
            consumer.close()
        if len(got) < count:
            raise TimeoutError(f"read {len(got)} of {count} records from {topic} in {timeout} s")
        return got
