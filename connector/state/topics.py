"""The connector's own topics: created right when missing, refused when wrong.

The state topic must be compacted (it is the source of truth and keeps one record per key),
have as many partitions as the widest source topic (a record read from source partition p is
stored in state partition p) and as many replicas as configured (a broker's disk loss must not
lose it). A wrong existing topic is a start-up error naming the topic, the setting and the
command that fixes it: silently working with it would lose state. The rules themselves are in
``topic_policy`` (pure); this module asks the cluster and creates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from connector.config.settings import IngestSettings
from connector.errors import TransientError
from connector.state.exceptions import TopicConfigError
from connector.state.topic_policy import (
    Replication,
    TopicFacts,
    created_config,
    replication_for,
    state_topic_problems,
    topic_warnings,
)

__all__ = [
    "end_offsets",
    "ensure_topics",
    "high_watermarks",
    "last_stable_offsets",
    "record_limit",
    "source_partitions",
]

_TIMEOUT_S = 30.0
log = logging.getLogger(__name__)


def source_partitions(admin: AdminClient, topics: Iterable[str]) -> int:
    """The widest source topic's partition count; a missing source topic is a config error."""
    meta = admin.list_topics(timeout=_TIMEOUT_S)
    counts = []
    for name in topics:
        topic = meta.topics.get(name)
        if topic is None or topic.error is not None:
            raise TopicConfigError(f"source topic {name} does not exist")
        counts.append(len(topic.partitions))
    if not counts:
        raise TopicConfigError("no source topics configured (the mapping's topics section is empty)")
    return max(counts)


_STATE_COMPACTION_LAG_MS = 2 * 24 * 3600 * 1000
"""A snapshot reads the state topic up to its cut, and a resumed run re-reads the same cut to
write the same bytes. Compaction may drop a record before the cut once a newer one for its key
lies after the cut, which would remove that key from the cut's view; no record younger than
this lag is compacted, so a cut stays readable for two days (a date's run lasts hours)."""


_DLQ_RETENTION_MS: int = IngestSettings.model_fields["dlq_retention_ms"].default
_CARRY_RETENTION_MS = 7 * 24 * 3600 * 1000
"""``CARECLOUD_INGEST_DLQ_RETENTION_MS``'s default, for a caller that passes none."""
_FACTOR: int = IngestSettings.model_fields["replication_factor"].default
_MIN_ISR: int = IngestSettings.model_fields["min_insync_replicas"].default


def ensure_topics(
    admin: AdminClient,
    *,
    state_topic: str,
    dlq_topic: str,
    partitions: int,
    dlq_retention_ms: int = _DLQ_RETENTION_MS,
    replication_factor: int = _FACTOR,
    min_insync_replicas: int = _MIN_ISR,
    carry_topic: str | None = None,
) -> Replication:
    """Create the state, dead-letter and carry topics if missing; verify them if present.

    Both are created with ``replication_factor`` replicas and ``min_insync_replicas``
    (``CARECLOUD_INGEST_REPLICATION_FACTOR`` / ``_MIN_INSYNC_REPLICAS``), lowered with a
    warning on a cluster with fewer brokers (``topic_policy.replication_for``). An existing
    state topic that would lose data is refused with a ``TopicConfigError`` listing every
    problem, each with the command that fixes it (``topic_policy.state_topic_problems``).

    A dead-letter topic created here gets ``retention.ms=dlq_retention_ms``
    (``CARECLOUD_INGEST_DLQ_RETENTION_MS``): it holds raw source events, health data, so they
    are deleted once a replay after a fix can no longer need them. An existing one keeps its
    own retention (it is the operator's to change); a warning says when it differs.
    """
    meta = admin.list_topics(timeout=_TIMEOUT_S)
    replication = replication_for(replication_factor, min_insync_replicas, len(meta.brokers))
    wanted = {
        state_topic: {"cleanup.policy": "compact", "min.compaction.lag.ms": str(_STATE_COMPACTION_LAG_MS)},
        dlq_topic: {"cleanup.policy": "delete", "retention.ms": str(dlq_retention_ms)},
    }
    if carry_topic is not None:
        # Offers are consumed within seconds; a week outlasts any outage of the ingest.
        wanted[carry_topic] = {"cleanup.policy": "delete", "retention.ms": str(_CARRY_RETENTION_MS)}
    missing = [name for name in wanted if name not in meta.topics]
    if missing and replication.lowered:
        _warn_lowered(replication)
    if dlq_topic not in missing:
        _check_retention(admin, dlq_topic, dlq_retention_ms)
    if missing:
        _create(admin, missing, wanted, {state_topic, carry_topic}, partitions, replication)
        meta = _await_topics(admin, list(wanted))
    state = _facts(admin, meta, state_topic)
    problems = state_topic_problems(state, partitions=partitions, replication=replication)
    if carry_topic is not None:
        problems += carry_topic_problems(_facts(admin, meta, carry_topic), partitions)
    if problems:
        raise TopicConfigError("; ".join(problems))
    for facts in (state, _facts(admin, meta, dlq_topic)):
        for setting, sentence in topic_warnings(facts, replication):
            log.warning(sentence, extra={"topic": facts.name, "setting": setting})
    return replication


def _create(
    admin: AdminClient,
    names: list[str],
    wanted: dict[str, dict[str, str]],
    partitioned: set[str | None],
    partitions: int,
    replication: Replication,
) -> None:
    new = [
        NewTopic(
            name,
            partitions if name in partitioned else 1,
            replication.factor,
            config=created_config(wanted[name], replication),
        )
        for name in names
    ]
    for name, future in admin.create_topics(new).items():
        try:
            future.result(_TIMEOUT_S)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another replica won the race
                raise TransientError(f"cannot create topic {name}") from exc


def carry_topic_problems(facts: TopicFacts, partitions: int) -> list[str]:
    """The carry topic must have exactly the state's partition count: under the range assignor
    its partition p then goes to the replica that owns state partition p, which alone can fill
    the new key's row (``connector.ingest.carry``)."""
    if facts.partitions == partitions:
        return []
    return [
        f"the carry topic {facts.name} has {facts.partitions} partitions, not the state topic's {partitions} "
        f"(CARECLOUD_INGEST_CARRY_TOPIC): delete it while ingest is stopped and no offer is pending "
        f"(kafka-topics.sh --delete --topic {facts.name}); ingest recreates it"
    ]


def _facts(admin: AdminClient, meta: Any, topic: str) -> TopicFacts:
    partitions = meta.topics[topic].partitions
    replicas = min((len(p.replicas) for p in partitions.values()), default=0)
    return TopicFacts(topic, len(partitions), replicas, _config(admin, topic))


def _check_retention(admin: AdminClient, topic: str, retention_ms: int) -> None:
    have = _config(admin, topic).get("retention.ms")
    if have != str(retention_ms):
        log.warning(
            "the dead-letter topic exists with retention.ms=%s, not the configured %d; it is left "
            "as it is (change it with kafka-configs --alter, or the setting)",
            have,
            retention_ms,
            extra={"topic": topic, "setting": "CARECLOUD_INGEST_DLQ_RETENTION_MS"},
        )


def record_limit(admin: AdminClient, topics: Iterable[str]) -> int:
    """The smallest ``max.message.bytes`` of ``topics``: the largest record all of them take.

    The topic's own value, which is the broker's ``message.max.bytes`` unless the topic
    overrides it; describe_configs reports whichever is in force.
    """
    limits = [int(_config(admin, topic)["max.message.bytes"]) for topic in topics]
    return min(limits)


def _await_topics(admin: AdminClient, names: list[str]) -> Any:
    """Metadata lags behind a finished create: poll until every topic has leaders."""
    deadline = time.monotonic() + _TIMEOUT_S
    while True:
        meta = admin.list_topics(timeout=_TIMEOUT_S)
        topics = [meta.topics.get(name) for name in names]
        if all(
            t is not None
            and t.error is None
            and t.partitions
            and all(p.leader >= 0 for p in t.partitions.values())
            for t in topics
        ):
            return meta
        if time.monotonic() > deadline:
            raise TransientError(f"topics {names} have no leaders {_TIMEOUT_S:.0f} s after creation")
        time.sleep(0.05)


def _warn_lowered(replication: Replication) -> None:
    """Said when topics are about to be created thinner than configured, never on a start-up
    that creates nothing (a restart while one broker of three is down lowers nothing)."""
    log.warning(
        "THE CLUSTER HAS FEWER BROKERS THAN THE CONFIGURED REPLICATION FACTOR: the connector's "
        "topics are created with fewer replicas and a lower min.insync.replicas, so one broker's "
        "disk loss can lose committed state; fine for a demo or tests, never for production",
        extra={
            "setting": "CARECLOUD_INGEST_REPLICATION_FACTOR",
            "brokers": replication.brokers,
            "replication_factor": replication.factor,
            "min_insync_replicas": replication.min_insync,
        },
    )


def _config(admin: AdminClient, topic: str) -> dict[str, Any]:
    """The topic's configs in force.

    Asked again a few times (0.1 s to 1.6 s apart) before it becomes a ``TransientError`` (the
    process exits and starts again): on three brokers the request may reach one that has not
    yet learnt of a topic created a moment ago (``UNKNOWN_TOPIC_OR_PART``), or one that just died.
    """
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    for attempt in range(1, _OFFSET_ATTEMPTS + 1):
        try:
            result = admin.describe_configs([resource])[resource].result(_TIMEOUT_S)
            return {name: entry.value for name, entry in result.items()}
        except KafkaException as exc:
            if attempt == _OFFSET_ATTEMPTS:
                raise TransientError(f"cannot read the configs of topic {topic}") from exc
        time.sleep(0.1 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def high_watermarks(base: dict[str, Any], topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The end of each partition including records of still-open transactions.

    A read-committed consumer's own watermark query answers the last stable offset, which an
    open transaction holds back; waiting for this offset instead waits for that transaction
    to commit or abort.
    """
    admin = AdminClient({k: v for k, v in base.items() if k != "error_cb"})
    return end_offsets(admin, topic, partitions, IsolationLevel.READ_UNCOMMITTED)


def last_stable_offsets(base: dict[str, Any], topic: str) -> dict[int, int]:
    """The last stable offset of every partition of ``topic``, now (read committed: only
    decided transactions); the snapshot's cut and the dead-letter listing both stop there."""
    admin = AdminClient({k: v for k, v in base.items() if k != "error_cb"})
    meta = admin.list_topics(topic=topic, timeout=_TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None:
        raise TransientError(f"state topic {topic} is not available")
    return end_offsets(admin, topic, meta.partitions, IsolationLevel.READ_COMMITTED)


_METADATA_RACES = frozenset(
    {
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
    }
)
"""Answers of a broker whose leadership view and ours differ for a moment (a topic just
created, a leader just moved): asking again shortly gets the offsets."""
_OFFSET_ATTEMPTS = 6


def end_offsets(
    admin: AdminClient, topic: str, partitions: Iterable[int], isolation: IsolationLevel
) -> dict[int, int]:
    """Each partition's end offset (``isolation``: including open transactions or not).

    A metadata race (``_METADATA_RACES``, or an error librdkafka calls retriable) is asked
    again a few times, 0.1 s to 1.6 s apart, before it becomes a ``TransientError``: under load
    a topic created a moment ago answered ``UNKNOWN_LEADER_EPOCH`` and failed a snapshot run
    that a second later would have gone through.
    """
    wanted = list(partitions)
    for attempt in range(1, _OFFSET_ATTEMPTS + 1):
        request = {TopicPartition(topic, p): OffsetSpec.latest() for p in wanted}  # type: ignore[no-untyped-call]
        futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=_TIMEOUT_S)
        try:
            return {tp.partition: future.result(_TIMEOUT_S).offset for tp, future in futures.items()}
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if attempt == _OFFSET_ATTEMPTS or not (err.code() in _METADATA_RACES or err.retriable()):
                raise TransientError(f"cannot read the end offsets of {topic}") from exc
        time.sleep(0.1 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover
