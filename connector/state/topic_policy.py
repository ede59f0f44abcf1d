"""What the connector's own topics must be, decided without a broker.

``topics.ensure_topics`` asks the cluster what it has (brokers, partitions, replicas, topic
configs) and this module decides: the replication to create with, and what is wrong with an
existing topic. Pure, so every rule is a unit test, and the wording of every refusal (which
names the topic, the setting and the command that fixes it) is pinned there.

Why these rules: ``docs/decisions/0022-state-topic-durability.md``. In short, the state topic
is the source of truth, so a state topic that would lose data is refused at start-up (not
compacted, too few replicas, unclean leader election on, a ``min.insync.replicas`` no commit
can meet, partitions that do not match the source topics); a weaker-than-configured
``min.insync.replicas``, and anything about the dead-letter topic, is a warning, because the
operator may have lowered it on purpose during an incident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "BOOTSTRAP",
    "Replication",
    "TopicFacts",
    "created_config",
    "replication_for",
    "state_topic_problems",
    "topic_warnings",
]

BOOTSTRAP = "$BOOTSTRAP"
"""Stands for the brokers in the commands the messages give (the connector does not repeat
``CARECLOUD_KAFKA_BOOTSTRAP_SERVERS`` in an error: operators paste their own)."""
_FACTOR = "CARECLOUD_INGEST_REPLICATION_FACTOR"
_MIN_ISR = "CARECLOUD_INGEST_MIN_INSYNC_REPLICAS"


@dataclass(frozen=True, slots=True)
class Replication:
    """The replication the connector's topics get on this cluster, and what was asked for."""

    factor: int
    min_insync: int
    configured_factor: int
    configured_min_insync: int
    brokers: int

    @property
    def lowered(self) -> bool:
        """The cluster has fewer brokers than the configured factor: a demo or test cluster."""
        return self.factor < self.configured_factor


def replication_for(factor: int, min_insync: int, brokers: int) -> Replication:
    """The configured replication, lowered to what ``brokers`` live brokers can hold.

    Lowering keeps how many replicas may be out with commits still going on
    (``factor - min_insync``): 3 and 2 become 2 and 1 on two brokers and 1 and 1 on one. A
    production cluster with a broker down at first start-up would also lower, which is why
    the warning is loud and why the next start-up, with every broker back, refuses the thin
    state topic (``state_topic_problems``) instead of living with it.
    """
    if not 1 <= min_insync <= factor:
        raise ValueError("min_insync must lie between 1 and factor")
    effective = max(1, min(factor, brokers))
    return Replication(
        factor=effective,
        min_insync=max(1, min_insync - (factor - effective)),
        configured_factor=factor,
        configured_min_insync=min_insync,
        brokers=brokers,
    )


def created_config(base: Mapping[str, str], replication: Replication) -> dict[str, str]:
    """A new topic's configs: ``base`` (cleanup policy, retention) plus what protects its data.

    ``unclean.leader.election.enable=false`` is Kafka's default, set on the topic anyway so a
    cluster whose default was flipped cannot elect an out-of-sync replica leader of the state
    (which drops committed transactions without an error anywhere).
    """
    return {
        **base,
        "min.insync.replicas": str(replication.min_insync),
        "unclean.leader.election.enable": "false",
    }


@dataclass(frozen=True, slots=True)
class TopicFacts:
    """What the cluster says about one existing topic."""

    name: str
    partitions: int
    replicas: int
    """The fewest replicas any partition has (its replication factor)."""
    config: Mapping[str, str]


def _alter_config(topic: str, name: str, value: object) -> str:
    return (
        f"kafka-configs.sh --bootstrap-server {BOOTSTRAP} --alter --entity-type topics "
        f"--entity-name {topic} --add-config {name}={value}"
    )


def state_topic_problems(facts: TopicFacts, *, partitions: int, replication: Replication) -> list[str]:
    """Every reason the connector must not run on this state topic; empty when it may.

    Each names the topic, the setting and the command that fixes it. ``partitions`` is the
    widest source topic's count: a record read from source partition p is stored in state
    partition p.
    """
    topic, problems = facts.name, []
    policy = facts.config.get("cleanup.policy", "")
    if "compact" not in policy.split(","):
        fix = _alter_config(topic, "cleanup.policy", "compact")
        problems.append(
            f"state topic {topic} has cleanup.policy={policy}; it must be compact (a delete policy "
            f"drops entities that did not change within the retention): {fix}"
        )
    if facts.partitions < partitions:
        problems.append(
            f"state topic {topic} has {facts.partitions} partitions but the source topics have {partitions}; "
            "they must match (a record read from source partition p is stored in state partition p): "
            f"kafka-topics.sh --bootstrap-server {BOOTSTRAP} --alter --topic {topic} "
            f"--partitions {partitions}"
        )
    elif facts.partitions > partitions:
        problems.append(
            f"state topic {topic} has {facts.partitions} partitions but the source topics have {partitions}; "
            "they must match, and a topic's partitions cannot be reduced: set CARECLOUD_INGEST_STATE_TOPIC "
            "to a new topic (ingest creates it) and re-ingest the source topics from their start"
        )
    if facts.replicas < replication.factor:
        problems.append(
            f"state topic {topic} has replication factor {facts.replicas}, below {_FACTOR}="
            f"{replication.configured_factor} ({replication.factor} on this cluster of {replication.brokers} "
            "brokers): one broker's disk loss could lose the state. Add replicas with "
            f"kafka-reassign-partitions.sh --bootstrap-server {BOOTSTRAP} --reassignment-json-file "
            f"<a plan giving each partition {replication.factor} brokers> --execute "
            "(kafka-topics.sh cannot change a replication factor)"
        )
    min_isr = _int(facts.config.get("min.insync.replicas"))
    if min_isr is not None and min_isr > facts.replicas:
        problems.append(
            f"state topic {topic} has min.insync.replicas={min_isr}, above its {facts.replicas} replicas: "
            f"no commit can ever be acknowledged ({_MIN_ISR}): "
            f"{_alter_config(topic, 'min.insync.replicas', min(replication.min_insync, facts.replicas))}"
        )
    if facts.config.get("unclean.leader.election.enable") == "true":
        problems.append(
            f"state topic {topic} has unclean.leader.election.enable=true: an out-of-sync replica "
            "elected leader drops committed transactions silently: "
            f"{_alter_config(topic, 'unclean.leader.election.enable', 'false')}"
        )
    return problems


def topic_warnings(facts: TopicFacts, replication: Replication) -> list[tuple[str, str]]:
    """(setting, sentence) of what is weaker than configured but still works.

    For the state topic: a ``min.insync.replicas`` below the configured one (commits are
    acknowledged by fewer copies). For the dead-letter topic also its replication factor: a
    lost dead letter loses the record of a bad event, not a state row, so it never stops ingest.
    """
    warnings = []
    min_isr = _int(facts.config.get("min.insync.replicas"))
    if min_isr is not None and min_isr < replication.min_insync:
        fix = _alter_config(facts.name, "min.insync.replicas", replication.min_insync)
        warnings.append(
            (
                _MIN_ISR,
                f"the topic's min.insync.replicas is below the configured one: commits are acknowledged "
                f"by fewer copies; {fix}",
            )
        )
    return warnings


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
