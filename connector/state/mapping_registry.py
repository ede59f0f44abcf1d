"""The mapping registry: which mapping each entity's rows were written under, and since when.

A small compacted topic beside the state (``<state topic>.mappings``, one partition) holds,
per entity, the descriptor of the mapping ingest runs now (``current/<Entity>``) and of every
version it ever ran (``version/<Entity>/<version>``), and per state partition the re-mapping
pass's progress (``remap/<partition>``, for the snapshot's ``wait`` policy): what the start-up
check compares a new mapping with (an EntityId that would move is refused,
``connector.ingest.rollout``), what the snapshot resolves rows written before rows carried a
version with, and what a preview names older versions by. Its own topic rather than reserved
keys of the state: it is read whole at every start-up and by every snapshot run, and the state
is millions of rows.

``unversioned``: the version that rows without ``"mv"`` (written before this existed) are
taken to be under. It is the first version recorded for the entity, and never changes: the
connector that first records it runs the same mapping as the one that wrote those rows (an
upgrade of the connector does not change the mapping file in the same rollout; README,
"changing the mapping").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connector.errors import TransientError
from connector.mapping.versions import Descriptor
from connector.state.topic_policy import created_config, replication_for
from connector.state.topics import last_stable_offsets

__all__ = [
    "Registry",
    "ensure_registry_topic",
    "read_latest",
    "read_registry",
    "record",
    "registry_topic",
    "remap_key",
]

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0


def registry_topic(state_topic: str) -> str:
    """The registry of the state topic ``state_topic``: each state topic has its own."""
    return f"{state_topic}.mappings"


def remap_key(partition: int) -> bytes:
    """The registry's copy of one state partition's re-mapping progress (``Registry.remap``)."""
    return f"remap/{partition}".encode()


@dataclass
class Registry:
    """The registry as read: each entity's current descriptor, every version seen, and the
    version rows without one are under."""

    current: dict[str, Descriptor] = field(default_factory=dict)
    versions: dict[tuple[str, str], Descriptor] = field(default_factory=dict)
    unversioned: dict[str, str] = field(default_factory=dict)
    since_ms: dict[str, int] = field(default_factory=dict)
    """When each entity's current version was recorded (epoch ms)."""
    remap: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The re-mapping pass's progress per state partition (``remap/<partition>``, written by
    ingest in the transaction of each step: ``connector.ingest.remap``)."""

    def absorb(self, key: bytes, value: bytes | None) -> None:
        kind, _, rest = key.decode().partition("/")
        if value is None:
            return
        doc = orjson.loads(value)
        if kind == "current":
            self.current[rest] = Descriptor.from_json(doc["descriptor"])
            self.unversioned[rest] = doc["unversioned"]
            self.since_ms[rest] = int(doc.get("at_ms", 0))
        elif kind == "version":
            entity, _, version = rest.partition("/")
            self.versions[(entity, version)] = Descriptor.from_json(doc)
        elif kind == "remap" and rest.isdigit():
            self.remap[int(rest)] = doc

    def remap_pending(self, partitions: int) -> list[int]:
        """State partitions whose re-mapping pass has not finished its sweep toward the current
        versions (no record yet, a record toward other versions, or one not done)."""
        pending = []
        for partition in range(partitions):
            doc = self.remap.get(partition)
            if doc is None or not doc.get("done"):
                pending.append(partition)
                continue
            versions = doc.get("versions", {})
            if any(versions.get(entity, d.version) != d.version for entity, d in self.current.items()):
                pending.append(partition)
        return pending

    def resolve(self, entity: str, version: str | None) -> str | None:
        """A row's version with ``None`` (written before rows carried one) read as the
        entity's ``unversioned`` version, when the registry knows it."""
        return self.unversioned.get(entity) if version is None else version

    def updates(self, descriptors: dict[str, Descriptor], now_ms: int) -> list[tuple[bytes, bytes]]:
        """The records that make ``descriptors`` current: none for an entity already at its
        version, so a restart with the same mapping writes nothing."""
        out: list[tuple[bytes, bytes]] = []
        for entity, new in sorted(descriptors.items()):
            old = self.current.get(entity)
            if old is not None and old.version == new.version:
                continue
            unversioned = self.unversioned.get(entity, new.version)
            body = {"descriptor": new.as_json(), "unversioned": unversioned, "at_ms": now_ms}
            out.append((f"version/{entity}/{new.version}".encode(), orjson.dumps(new.as_json())))
            out.append((f"current/{entity}".encode(), orjson.dumps(body)))
        return out


def ensure_registry_topic(admin: AdminClient, topic: str, replication_factor: int, min_insync: int) -> None:
    """Create the registry (compacted, one partition, replicated like the state) if missing."""
    meta = admin.list_topics(timeout=_TIMEOUT_S)
    if topic in meta.topics:
        return
    replication = replication_for(replication_factor, min_insync, len(meta.brokers))
    config = created_config({"cleanup.policy": "compact"}, replication)
    futures = admin.create_topics([NewTopic(topic, 1, replication.factor, config=config)])
    for name, future in futures.items():
        try:
            future.result(_TIMEOUT_S)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another replica won the race
                raise TransientError(f"cannot create topic {name}") from exc


def read_latest(base: dict[str, Any], topic: str, prefixes: Iterable[bytes] = (b"",)) -> dict[bytes, bytes]:
    """The latest committed value of every key of ``topic`` starting with one of ``prefixes``
    (a key whose latest record is a tombstone is left out), read up to the last stable offsets
    of now: read-only, a consumer that is assigned partitions and never commits."""
    wanted = tuple(prefixes)
    ends = {p: o for p, o in last_stable_offsets(base, topic).items() if o > 0}
    latest: dict[bytes, bytes | None] = {}
    if not ends:
        return {}
    consumer = Consumer(
        {
            **{k: v for k, v in base.items() if k != "error_cb"},
            "group.id": f"carecloud-read-{topic}",  # assign() only; never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 10,
        }
    )
    deadline = time.monotonic() + 10 * _TIMEOUT_S
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        pending = dict(ends)
        while pending:
            if time.monotonic() > deadline:
                raise TransientError(f"reading {topic}: not at its end in time")
            for msg in consumer.consume(1000, 1.0):
                err = msg.error()
                p = msg.partition() or 0
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise TransientError(f"reading {topic}: {err.name()}")
                    if (msg.offset() or 0) >= pending.get(p, 0):
                        pending.pop(p, None)
                    continue
                if p not in pending:
                    continue
                key = msg.key() or b""
                if key.startswith(wanted):
                    latest[key] = msg.value()
                if (msg.offset() or 0) + 1 >= pending[p]:
                    pending.pop(p)
    finally:
        consumer.close()
    return {k: v for k, v in latest.items() if v is not None}


def read_registry(base: dict[str, Any], topic: str) -> Registry:
    """The registry as committed now; empty when the topic does not exist yet."""
    admin = AdminClient({k: v for k, v in base.items() if k != "error_cb"})
    if topic not in admin.list_topics(timeout=_TIMEOUT_S).topics:
        return Registry()
    registry = Registry()
    for key, value in sorted(read_latest(base, topic).items(), key=lambda kv: kv[0].startswith(b"current/")):
        registry.absorb(key, value)
    return registry


def record(base: dict[str, Any], topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Write the registry's records (idempotent, acknowledged by every in-sync replica)."""
    if not records:
        return
    producer = Producer(
        {**{k: v for k, v in base.items() if k != "error_cb"}, "enable.idempotence": True, "acks": "all"}
    )
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err.name())

    for key, value in records:
        producer.produce(topic, value, key, partition=0, on_delivery=delivered)
    if producer.flush(_TIMEOUT_S) or failed:
        raise TransientError(f"cannot write the mapping registry {topic}: {', '.join(failed) or 'timeout'}")
