"""Where the three-broker harness looks for a transactional id's coordinator: Kafka's own
``Utils.abs(transactionalId.hashCode()) % partitions`` with Java's String hash, checked on
values whose Java hash is known."""

from __future__ import annotations

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
