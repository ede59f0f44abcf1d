"""The fault tests' checker can fail: each invariant it guards, broken on purpose on the shared
broker, is reported (and a clean topic is not)."""

from __future__ import annotations

from typing import Any

import pytest

from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.resolve import StateRow
from tests.integration.state_checker import audit_state
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

ORACLE = [("Family", "FAM-1", {"FamilyName": "Okafor"}), ("Family", "FAM-2", {"FamilyName": "Haddad"})]


def _row(version: int, name: str, *, deleted: bool = False) -> bytes:
    return encode_row(StateRow(Version(version, 0, 0, 0, 0), deleted, {"FamilyName": name}))


def _write(
    kafka: KafkaTestCluster, topic: str, records: list[tuple[bytes, bytes]], *, commit: bool = True
) -> Any:
    """Write ``records`` in one transaction to partition 0, then commit or abort it."""
    producer = kafka.producer({"transactional.id": unique("checker"), "transaction.timeout.ms": 60_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for key, value in records:
        producer.produce(topic, value, key, partition=0)
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    return producer


def _key(entity_id: str) -> bytes:
    return state_key("Family", entity_id)


def test_a_state_matching_the_oracle_passes_and_counts_what_aborted(kafka: KafkaTestCluster) -> None:
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    _write(kafka, topic, [(_key("FAM-1"), _row(1, "Old"))])
    _write(kafka, topic, [(_key("FAM-1"), _row(2, "Okafor"))], commit=False)  # aborted, then redone
    _write(kafka, topic, [(_key("FAM-1"), _row(2, "Okafor")), (_key("FAM-2"), _row(1, "Haddad"))])
    audit = audit_state(kafka.config(), topic, ORACLE)
    audit.assert_ok()
    assert (audit.records, audit.aborted, audit.live) == (3, 1, 2)


def test_each_broken_invariant_is_reported(kafka: KafkaTestCluster) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    _write(
        kafka,
        topic,
        [
            (_key("FAM-1"), _row(3, "Okafor")),
            (_key("FAM-1"), _row(2, "Stale")),  # a version going backwards
            (_key("FAM-2"), _row(1, "Haddad")),
            (_key("FAM-2"), _row(1, "Haddad")),  # the same row twice
            (_key("FAM-3"), _row(1, "Extra")),  # not in the oracle
        ],
    )
    audit = audit_state(kafka.config(), topic, [*ORACLE, ("Family", "FAM-4", {"FamilyName": "Lost"})])
    text = "\n".join(audit.problems)
    assert "1 rows older than the row before them" in text
    assert "1 rows written twice" in text
    assert "live rows missing" in text  # FAM-4
    assert "live rows not expected" in text  # FAM-3
    assert "live rows with other values" in text  # FAM-1 ends with the stale row
    with pytest.raises(AssertionError):
        audit.assert_ok()


def test_an_open_transaction_and_a_dead_letter_written_twice_are_reported(kafka: KafkaTestCluster) -> None:
    state = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    dlq = kafka.new_topic(1, prefix="dlq")
    _write(kafka, state, [(_key("FAM-1"), _row(1, "Okafor")), (_key("FAM-2"), _row(1, "Haddad"))])
    position = [("carecloud.topic", b"src"), ("carecloud.partition", b"0"), ("carecloud.offset", b"7")]
    producer = kafka.producer({"transactional.id": unique("dlq"), "transaction.timeout.ms": 60_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(dlq, b"bad", b"k", headers=position)
    producer.produce(dlq, b"bad", b"k", headers=position)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(state, _row(2, "Okafor"), _key("FAM-1"), partition=0)
    producer.flush(30)  # left open while the checker looks
    try:
        audit = audit_state(kafka.config(), state, ORACLE, dlq_topic=dlq)
    finally:
        producer.abort_transaction(30)
    text = "\n".join(audit.problems)
    assert "a transaction is open" in text
    assert "1 dead letters written twice" in text
    assert audit.dead_letters == 2
