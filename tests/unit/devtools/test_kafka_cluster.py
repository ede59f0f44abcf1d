"""Where the three-broker harness looks for a transactional id's coordinator: Kafka's own
``Utils.abs(transactionalId.hashCode()) % partitions`` with Java's String hash, checked on
values whose Java hash is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.devtools.kafka_cluster import TRANSACTION_LOG_PARTITIONS, transaction_log_partition


@pytest.mark.parametrize(
    ("transactional_id", "java_hash"),
    [
        ("", 0),
        ("abc", 96354),
        ("Aa", 2112),
        ("BB", 2112),  # Java's classic collision
        ("polygenelubricants", -(2**31)),  # Integer.MIN_VALUE: Utils.abs masks it to 0
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # outside the BMP: two UTF-16 code units (surrogates)
    ],
)
def test_the_partition_follows_javas_string_hash(transactional_id: str, java_hash: int) -> None:
    assert (
        transaction_log_partition(transactional_id) == (java_hash & 0x7FFFFFFF) % TRANSACTION_LOG_PARTITIONS
    )


def test_the_cluster_command_refuses_sasl_before_starting_anything() -> None:
    """``run --brokers 3`` is PLAINTEXT; asking for SASL too fails at once, no JVM started."""
    from connector.devtools.kafka import main

    with pytest.raises(SystemExit, match="the cluster is PLAINTEXT"):
        main(["run", "--brokers", "3", "--sasl-ssl"])


@pytest.mark.parametrize("brokers", ["0", "6"])
def test_the_cluster_command_takes_one_to_five_brokers(brokers: str) -> None:
    from connector.devtools.kafka import main

    with pytest.raises(SystemExit) as refused:
        main(["run", "--brokers", brokers])
    assert refused.value.code == 2  # argparse's usage error


def test_a_cluster_gives_every_node_its_id_and_the_same_three_voters(tmp_path: Path) -> None:
    """Built, not started: the nodes' properties are what a three-node quorum needs."""
    from connector.devtools.kafka_cluster import CLUSTER_PROPERTIES, KafkaCluster

    cluster = KafkaCluster(3, tmp_path)
    voters = {b.extra_properties["controller.quorum.voters"] for b in cluster.brokers}
    assert len(voters) == 1
    assert [b.extra_properties["node.id"] for b in cluster.brokers] == ["1", "2", "3"]
    assert all(CLUSTER_PROPERTIES.items() <= b.extra_properties.items() for b in cluster.brokers)
    assert cluster.bootstrap.count(",") == 2
    again = KafkaCluster(3, tmp_path)  # a reused work dir formats new nodes into the same cluster
    assert again.cluster_id == cluster.cluster_id
