"""The state and dead-letter topics' rules (issue 21): the replication they are created with,
lowered on a small cluster, and every reason an existing state topic is refused, each naming
the topic, the setting and the command that fixes it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.state.topic_policy import (
    Replication,
    TopicFacts,
    created_config,
    replication_for,
    state_topic_problems,
    topic_warnings,
)

GOOD = {"cleanup.policy": "compact", "min.insync.replicas": "2", "unclean.leader.election.enable": "false"}
PRODUCTION = replication_for(3, 2, 3)


def _state(partitions: int = 6, replicas: int = 3, **config: str) -> TopicFacts:
    return TopicFacts("carecloud.state", partitions, replicas, {**GOOD, **config})


def test_a_cluster_as_large_as_the_factor_gets_what_was_configured() -> None:
    assert Replication(3, 2, 3, 2, 3) == PRODUCTION
    assert not PRODUCTION.lowered
    assert replication_for(3, 2, 5).factor == 3  # more brokers never raise it


@pytest.mark.parametrize(("brokers", "factor", "min_insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (0, 1, 1)])
def test_a_smaller_cluster_lowers_both_keeping_the_replicas_that_may_be_out(
    brokers: int, factor: int, min_insync: int
) -> None:
    replication = replication_for(3, 2, brokers)
    assert (replication.factor, replication.min_insync) == (factor, min_insync)
    assert replication.lowered == (brokers < 3)


@given(
    factor=st.integers(1, 9),
    slack=st.integers(0, 8),
    brokers=st.integers(0, 12),
)
def test_lowering_never_asks_more_than_the_cluster_or_the_factor_can_give(
    factor: int, slack: int, brokers: int
) -> None:
    min_insync = max(1, factor - slack)
    r = replication_for(factor, min_insync, brokers)
    assert 1 <= r.min_insync <= r.factor <= factor
    assert r.factor == max(1, min(factor, brokers))
    assert r.min_insync <= min_insync
    assert r.factor - r.min_insync <= factor - min_insync  # never more replicas out than configured


def test_a_min_insync_above_the_factor_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="min_insync"):
        replication_for(2, 3, 3)


def test_created_topics_carry_min_insync_and_no_unclean_election() -> None:
    config = created_config({"cleanup.policy": "compact"}, replication_for(3, 2, 1))
    assert config == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "1",
        "unclean.leader.election.enable": "false",
    }


def test_a_state_topic_as_configured_has_no_problem() -> None:
    assert state_topic_problems(_state(), partitions=6, replication=PRODUCTION) == []
    assert topic_warnings(_state(), PRODUCTION) == []


def test_a_delete_policy_is_refused_with_the_kafka_configs_command() -> None:
    [problem] = state_topic_problems(
        _state(**{"cleanup.policy": "delete"}), partitions=6, replication=PRODUCTION
    )
    assert "carecloud.state" in problem
    assert "cleanup.policy=delete" in problem
    assert (
        "kafka-configs.sh --bootstrap-server $BOOTSTRAP --alter --entity-type topics "
        "--entity-name carecloud.state --add-config cleanup.policy=compact"
    ) in problem


def test_compact_with_delete_is_compacted() -> None:
    facts = _state(**{"cleanup.policy": "compact,delete"})
    assert state_topic_problems(facts, partitions=6, replication=PRODUCTION) == []


def test_fewer_partitions_than_the_sources_is_refused_with_the_kafka_topics_command() -> None:
    [problem] = state_topic_problems(_state(partitions=4), partitions=6, replication=PRODUCTION)
    assert "4 partitions but the source topics have 6" in problem
    assert (
        "kafka-topics.sh --bootstrap-server $BOOTSTRAP --alter --topic carecloud.state --partitions 6"
        in problem
    )


def test_more_partitions_than_the_sources_is_refused_naming_the_setting_to_change() -> None:
    [problem] = state_topic_problems(_state(partitions=8), partitions=6, replication=PRODUCTION)
    assert "cannot be reduced" in problem
    assert "CARECLOUD_INGEST_STATE_TOPIC" in problem


def test_fewer_replicas_than_configured_is_refused_naming_the_setting_and_the_reassignment() -> None:
    facts = _state(replicas=1, **{"min.insync.replicas": "1"})
    [problem] = state_topic_problems(facts, partitions=6, replication=PRODUCTION)
    assert "replication factor 1" in problem
    assert "CARECLOUD_INGEST_REPLICATION_FACTOR=3" in problem
    assert "kafka-reassign-partitions.sh --bootstrap-server $BOOTSTRAP" in problem


def test_a_one_replica_topic_on_a_one_broker_cluster_is_accepted() -> None:
    facts = _state(replicas=1, **{"min.insync.replicas": "1"})
    assert state_topic_problems(facts, partitions=6, replication=replication_for(3, 2, 1)) == []


def test_a_thin_topic_created_while_a_broker_was_down_is_refused_once_the_broker_is_back() -> None:
    created = replication_for(3, 2, 2)  # one of three brokers down at first start-up
    facts = _state(replicas=created.factor, **{"min.insync.replicas": str(created.min_insync)})
    assert state_topic_problems(facts, partitions=6, replication=created) == []
    assert state_topic_problems(facts, partitions=6, replication=PRODUCTION) != []


def test_a_min_insync_above_the_replicas_is_refused_as_no_commit_could_succeed() -> None:
    [problem] = state_topic_problems(
        _state(replicas=3, **{"min.insync.replicas": "4"}), partitions=6, replication=PRODUCTION
    )
    assert "no commit can ever be acknowledged" in problem
    assert "--add-config min.insync.replicas=2" in problem


def test_unclean_leader_election_is_refused() -> None:
    [problem] = state_topic_problems(
        _state(**{"unclean.leader.election.enable": "true"}), partitions=6, replication=PRODUCTION
    )
    assert "--add-config unclean.leader.election.enable=false" in problem


def test_every_problem_is_listed_at_once() -> None:
    facts = TopicFacts("s", 2, 1, {"cleanup.policy": "delete", "unclean.leader.election.enable": "true"})
    assert len(state_topic_problems(facts, partitions=6, replication=PRODUCTION)) == 4


def test_a_lower_min_insync_is_a_warning_naming_the_setting_and_the_command() -> None:
    [(setting, sentence)] = topic_warnings(_state(**{"min.insync.replicas": "1"}), PRODUCTION)
    assert setting == "CARECLOUD_INGEST_MIN_INSYNC_REPLICAS"
    assert "--entity-name carecloud.state --add-config min.insync.replicas=2" in sentence
