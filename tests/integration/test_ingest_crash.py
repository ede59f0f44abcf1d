"""SIGKILL inside open transactions, then restart: state and committed offsets come out exact."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import KafkaException, TopicPartition

from connector.devtools.generator import family_events
from connector.devtools.synthetic import SyntheticEvent
from tests.integration.cluster_helpers import Publisher
from tests.integration.family_ingest import (
    PARTITIONS,
    assert_state_equals_replay,
    committed_events,
    ingest_group,
    wait_until,
)
from tests.integration.state_helpers import live_rows, read_state
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration


_INGEST = [sys.executable, "-m", "connector.cli", "ingest"]


def _start_replica(base: dict[str, str], tmp_path: Path, i: int, log: IO[str]) -> subprocess.Popen[bytes]:
    """Replica ``i``: its own local store and transactional id, as a StatefulSet pod has."""
    env = {
        **base,
        "CARECLOUD_INGEST_STATE_DIR": str(tmp_path / f"store{i}"),
        "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique(f"txn{i}"),
    }
    return subprocess.Popen(_INGEST, env=env, stdout=log, stderr=subprocess.STDOUT)


def _owning(kafka: KafkaTestCluster, group: str, topic: str, stores: tuple[Path, ...]) -> bool:
    """Every replica has been assigned a partition (its store exists) and the group commits."""
    return all(p.exists() for p in stores) and committed_events(kafka, group, topic) > 0


def _committed_by_partition(kafka: KafkaTestCluster, group: str, topic: str) -> list[int] | None:
    """The group's committed offset of each partition of ``topic`` (0 for none yet); None
    while a transaction's offsets are pending."""
    consumer = kafka.consumer(group, {"enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=5)
    except KafkaException:
        return None
    finally:
        consumer.close()
    return [max(tp.offset, 0) for tp in parts]


def _publisher(
    kafka: KafkaTestCluster, topic: str, tail: list[tuple[bytes, bytes | None]], step: int
) -> Publisher:
    """Publishes ``tail`` in slices of ``step`` events 0.1 s apart through one idempotent
    producer (a producer per slice, as ``seed_topic`` makes, was most of these tests' time);
    past 60% of it, 20 events a slice until the test hurries it (``hurry()``), then the rest at
    once: the stream goes on while replicas come, go or freeze, however long that takes on a
    loaded machine. The partitioner is ``seed_topic``'s (librdkafka's default), which published
    the head: every key stays in one partition."""
    events = [SyntheticEvent(topic, key, value) for key, value in tail]
    return Publisher(
        kafka.config(), events, slice_size=step, pace=0.1, trickle=20, partitioner="consistent_random"
    )


def _published(publisher: Publisher) -> None:
    """The publisher, hurried, has finished and every event it sent was acknowledged."""
    publisher.hurry()
    publisher.join(120)
    assert not publisher.is_alive(), "the publisher did not finish"
    assert publisher.remaining == 0
    assert not publisher.failures, publisher.failures[:3]


def test_sigkill_mid_stream_then_restart_gives_exact_state_and_offsets(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(2000, 5, deletes_every=7))
    kafka.seed_topic(topic, events)
    group, state_topic, env = ingest_group(
        kafka,
        tmp_path,
        topic,
        "crash",
        STATE_DIR=str(tmp_path / "store"),
        TRANSACTIONAL_ID=unique("txn"),
        BATCH_MAX_EVENTS="400",
    )
    log = (tmp_path / "ingest.log").open("w")
    kills = 0
    progress = 0
    while kills < 3:
        # Each start fences the killed predecessor (same transactional.id) and resumes.
        proc = subprocess.Popen(_INGEST, env=env, stdout=log, stderr=subprocess.STDOUT)
        moved = wait_until(lambda before=progress: committed_events(kafka, group, topic) > before, 90, 0.05)
        assert moved, "the restarted process made no progress"
        progress = committed_events(kafka, group, topic)
        proc.send_signal(signal.SIGKILL)  # mid-stream: most likely inside an open transaction
        proc.wait(10)
        kills += 1
    if progress >= len(events):
        pytest.fail("the stream finished before the kills; seed more events")  # keeps the test honest
    proc = subprocess.Popen(_INGEST, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: committed_events(kafka, group, topic) >= len(events), 120, 0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert committed_events(kafka, group, topic) == len(events)

    assert_state_equals_replay(kafka, state_topic, topic, events)
    assert len(live_rows(read_state(kafka, state_topic, PARTITIONS))) == 2000 - 2000 // 7


def test_two_processes_split_the_partitions_and_survive_one_stopping(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(4000, 5, seed=11, deletes_every=9))
    # A third is there at start; the rest arrives while both replicas run, so the kill below
    # always lands mid-stream however fast the machine is.
    head, tail = events[: len(events) // 3], events[len(events) // 3 :]
    kafka.seed_topic(topic, head)
    publisher = _publisher(kafka, topic, tail, 250)
    group, state_topic, base = ingest_group(
        kafka,
        tmp_path,
        topic,
        "scale",
        BATCH_MAX_EVENTS="300",
        SESSION_TIMEOUT_MS="6000",
        TRANSACTION_TIMEOUT_MS="8000",  # the killed replica's open transaction is aborted after this
    )
    log = (tmp_path / "ingest.log").open("w")
    procs = [_start_replica(base, tmp_path, i, log) for i in range(2)]
    stores = (tmp_path / "store0", tmp_path / "store1")
    wait_until(lambda: _owning(kafka, group, topic, stores), 90, 0.05)
    assert all(p.exists() for p in stores), "both replicas should have owned partitions"
    publisher.start()
    assert wait_until(lambda: publisher.sent >= len(tail) // 2, 60, 0.05), "half the stream was never sent"
    assert publisher.is_alive(), "the stream finished before the kill; publish more slowly"
    procs[0].send_signal(signal.SIGKILL)  # one replica vanishes mid-stream
    procs[0].wait(10)
    _published(publisher)
    wait_until(lambda: committed_events(kafka, group, topic) >= len(events), 120, 0.2)
    procs[1].send_signal(signal.SIGTERM)
    assert procs[1].wait(30) == 0
    assert committed_events(kafka, group, topic) == len(events)

    assert_state_equals_replay(kafka, state_topic, topic, events)


def test_a_replica_paused_past_its_session_is_fenced_when_it_wakes(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    """A zombie: one replica is frozen (SIGSTOP) mid-stream, most likely inside an open
    transaction, for longer than its session and transaction timeouts; the other takes its
    partitions over. When the frozen one wakes, its transaction has been aborted and its group
    generation is stale, so nothing it still tries to commit may count."""
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(4000, 5, seed=23, deletes_every=9))
    head, tail = events[: len(events) // 4], events[len(events) // 4 :]
    kafka.seed_topic(topic, head)
    publisher = _publisher(kafka, topic, tail, 200)
    group, state_topic, base = ingest_group(
        kafka,
        tmp_path,
        topic,
        "zombie",
        BATCH_MAX_EVENTS="300",
        SESSION_TIMEOUT_MS="6000",
        TRANSACTION_TIMEOUT_MS="8000",
    )
    log = (tmp_path / "ingest.log").open("w")
    procs = [_start_replica(base, tmp_path, i, log) for i in range(2)]
    try:
        stores = (tmp_path / "store0", tmp_path / "store1")
        wait_until(lambda: _owning(kafka, group, topic, stores), 90, 0.05)
        assert all(p.exists() for p in stores), "both replicas should have owned partitions"
        publisher.start()
        time.sleep(1.0)  # both replicas busy with the live stream
        procs[0].send_signal(signal.SIGSTOP)
        frozen_offsets = _committed_by_partition(kafka, group, topic)
        deadline = time.monotonic() + 60
        while frozen_offsets is None:  # the frozen commit pending: read once it is decided
            assert time.monotonic() < deadline, "a commit stayed pending past its transaction timeout"
            time.sleep(0.2)
            frozen_offsets = _committed_by_partition(kafka, group, topic)
        frozen_at = sum(frozen_offsets)
        # The survivor takes the frozen replica's partitions once its session ends, and gets
        # past the frozen open transaction once the broker aborts it: every partition, the
        # frozen one's included, commits again (3000 events in all on the survivor's own
        # partitions alone would not show it, and a backlog makes them quick).

        def taken_over() -> bool:
            offsets = _committed_by_partition(kafka, group, topic)
            return (
                offsets is not None
                and sum(offsets) >= frozen_at + 3000
                and all(now > then for now, then in zip(offsets, frozen_offsets, strict=True))
            )

        took_over = wait_until(taken_over, 90, 0.2)
        assert took_over, "the survivor did not take over"
        assert publisher.is_alive(), "the stream finished while the replica was frozen; publish more slowly"
        procs[0].send_signal(signal.SIGCONT)  # the zombie wakes and tries to go on
        _published(publisher)
        wait_until(lambda: committed_events(kafka, group, topic) >= len(events), 120, 0.2)
    finally:
        publisher.hurry()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in procs]
    assert codes[1] == 0
    # Whatever the zombie was doing when frozen, it cannot commit as the old owner, and it
    # says which way it found out:
    # - frozen inside a transaction the broker has since aborted: its producer is fenced, a
    #   fatal error; it exits 1 naming it (the orchestrator restarts it as a new member);
    # - frozen between sending offsets and committing: the offsets are refused as from a
    #   member the group no longer has; it aborts, rewinds, rejoins and carries on;
    # - frozen outside a transaction: the client sees its session ended before it commits
    #   anything, gives its partitions up and rejoins.
    # Never a traceback.
    text = (tmp_path / "ingest.log").read_text()
    fenced = "error: Kafka transaction failed: " in text  # _FENCED, named
    refused = '"msg":"transaction aborted"' in text
    rejoined = "Consumer group session timed out" in text
    assert fenced or refused or rejoined, "the zombie never learnt it had been replaced"
    assert codes[0] == (1 if fenced else 0)
    assert "Traceback" not in text
    assert committed_events(kafka, group, topic) == len(events)
    assert_state_equals_replay(kafka, state_topic, topic, events)


def test_rebalance_churn_from_one_to_three_replicas_and_back_keeps_the_state_exact(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    """Replicas join and leave while the stream runs (1 → 2 → 3 → 2 → 1): every rebalance
    moves partitions between batches, and each new owner restores its partitions' state
    before it consumes them. Nothing is lost or applied twice."""
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(6000, 5, seed=31, deletes_every=11))
    head, tail = events[: len(events) // 10], events[len(events) // 10 :]
    kafka.seed_topic(topic, head)
    publisher = _publisher(kafka, topic, tail, 150)
    group, state_topic, base = ingest_group(
        kafka, tmp_path, topic, "churn", BATCH_MAX_EVENTS="200", SESSION_TIMEOUT_MS="6000"
    )
    log = (tmp_path / "ingest.log").open("w")

    def moving(by: int) -> None:
        """Wait until the group has committed ``by`` more events: the members in it work."""
        goal = committed_events(kafka, group, topic) + by
        assert wait_until(lambda: committed_events(kafka, group, topic) >= goal, 90), (
            "the group stopped making progress"
        )

    procs = [_start_replica(base, tmp_path, 0, log)]
    try:
        moving(1)
        publisher.start()
        for i in (1, 2):  # 1 -> 2 -> 3
            procs.append(_start_replica(base, tmp_path, i, log))
            store = tmp_path / f"store{i}"  # appears when the replica is assigned a partition
            assert wait_until(store.exists, 60, 0.05), f"replica {i} was never assigned a partition"
            moving(1500)
        exit_codes = []
        for proc in (procs[2], procs[1]):  # 3 -> 2 -> 1
            proc.send_signal(signal.SIGTERM)
            exit_codes.append(proc.wait(30))
            moving(1500)
        assert publisher.is_alive(), "the stream finished before the churn did; publish more slowly"
        _published(publisher)
        wait_until(lambda: committed_events(kafka, group, topic) >= len(events), 120, 0.2)
    finally:
        publisher.hurry()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in procs]
    assert exit_codes == [0, 0]
    assert codes == [0, 0, 0]
    assert committed_events(kafka, group, topic) == len(events)
    assert_state_equals_replay(kafka, state_topic, topic, events)
