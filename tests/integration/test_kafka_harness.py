"""The broker harness gives tests a real Kafka: groups, compaction, transactions, SASL_SSL, faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType

from connector.devtools.kafka import KAFKA_VERSION, BrokerError, KafkaBroker, fetch_jars
from connector.model import decode, encode
from connector.model.samples import sample
from connector.state.codec import split_key, state_key
from tests.integration.state_helpers import state_records
from tests.kafka_helpers import KafkaTestCluster, unique

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_compacted_topic_group_resumes_at_committed_offset(kafka: KafkaTestCluster) -> None:
    topic = kafka.new_topic(config={"cleanup.policy": "compact"})
    family, claim = sample("Family"), sample("Claim")
    renamed = {**family, "FamilyName": "Renamed"}
    records = [
        (state_key("Family", family["EntityId"]), encode("Family", family)),
        (state_key("Claim", claim["EntityId"]), encode("Claim", claim)),
        (state_key("Family", family["EntityId"]), encode("Family", renamed)),
    ]
    kafka.seed_topic(topic, records)
    group = unique("group")

    first = kafka.consumer(group, {"enable.auto.commit": False})
    first.subscribe([topic])
    got: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + 30
    while len(got) < len(records) and time.monotonic() < deadline:
        msg = first.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value()))
    first.commit(asynchronous=False)
    first.close()
    assert got == records
    decoded = [decode(split_key(k or b"")[0], v or b"") for k, v in got]  # the project's Avro codec
    assert decoded == [family, claim, renamed]

    assigned: list[TopicPartition] = []
    second = kafka.consumer(group, {"enable.auto.commit": False})
    second.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
    deadline = time.monotonic() + 30
    while not assigned and time.monotonic() < deadline:
        assert second.poll(0.2) is None
    quiet_until = time.monotonic() + 2  # had the commit been lost, "earliest" would replay all three
    while time.monotonic() < quiet_until:
        assert second.poll(0.2) is None
    [committed] = second.committed([TopicPartition(topic, 0)], timeout=10)
    second.close()
    assert assigned
    assert committed.offset == len(records)

    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = kafka.admin().describe_configs([resource])[resource].result(timeout=30)
    assert entries["cleanup.policy"].value == "compact"


@pytest.mark.integration
def test_read_committed_sees_committed_not_aborted_transactions(kafka: KafkaTestCluster) -> None:
    topic = kafka.new_topic()
    producer = kafka.producer({"transactional.id": unique("tx")})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(30)

    committed = kafka.read_topic(topic, 1, overrides={"isolation.level": "read_committed"})
    everything = kafka.read_topic(topic, 2, overrides={"isolation.level": "read_uncommitted"})

    assert [m.value() for m in committed] == [b"committed"]  # the aborted record sits before it
    assert [m.value() for m in everything] == [b"aborted", b"committed"]


@pytest.mark.integration
def test_sasl_ssl_transactional_round_trip(kafka_sasl: KafkaTestCluster) -> None:
    config = kafka_sasl.config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert Path(config["ssl.ca.location"]).is_file()
    topic = kafka_sasl.new_topic(partitions=2)
    producer = kafka_sasl.producer({"transactional.id": unique("tx")})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, key=str(i).encode(), value=b"over tls")
    producer.commit_transaction(30)

    got = kafka_sasl.read_topic(topic, 10, overrides={"isolation.level": "read_committed"})
    assert sorted(m.key() or b"" for m in got) == sorted(str(i).encode() for i in range(10))


@pytest.mark.integration
def test_sasl_ssl_wrong_password_reaches_error_cb(kafka_sasl: KafkaTestCluster) -> None:
    errors: list[KafkaError] = []
    producer = Producer({**kafka_sasl.wrong_password_config(), "error_cb": errors.append})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        producer.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


@pytest.mark.integration
def test_fetch_is_cached_and_needs_no_maven_the_second_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    libs = fetch_jars()
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn (and no java) from here on
    started = time.monotonic()
    assert fetch_jars() == libs
    assert time.monotonic() - started < 1
    assert (libs.parent / ".complete").is_file()
    assert (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert list(libs.glob("log4j-slf4j-impl-*.jar")), "the broker's slf4j lines would be lost"


def test_interrupted_fetch_leaves_no_cache_that_looks_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"  # copies one jar, then dies like a dropped connection
    mvn.write_text(
        '#!/bin/sh\nfor a in "$@"; do case "$a" in -DoutputDirectory=*) d="${a#*=}";; esac; done\n'
        'mkdir -p "$d" && touch "$d/kafka-clients.jar"\necho "Connection reset" >&2\nexit 1\n'
    )
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cache = tmp_path / "cache"

    with pytest.raises(BrokerError, match="Connection reset"):
        fetch_jars(cache)

    version_dir = cache / KAFKA_VERSION
    assert not (version_dir / ".complete").exists()
    assert not (version_dir / "libs").exists()
    assert [p.name for p in version_dir.iterdir()] == [".lock"]


@pytest.mark.integration
def test_committed_transactions_survive_kill_and_restart(kafka_broker: KafkaBroker) -> None:
    cluster = KafkaTestCluster.for_broker(kafka_broker)
    topic = cluster.new_topic(partitions=2)
    tx_id = unique("tx")
    producer = cluster.producer({"transactional.id": tx_id})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(100):
        producer.produce(topic, key=str(i).encode(), value=b"before")
    producer.commit_transaction(30)
    del producer
    port = kafka_broker.port

    kafka_broker.kill()
    assert not kafka_broker.running
    kafka_broker.restart()

    assert kafka_broker.port == port
    again = cluster.producer({"transactional.id": tx_id})  # the coordinator's state came back too
    again.init_transactions(60)
    again.begin_transaction()
    again.produce(topic, key=b"100", value=b"after")
    again.commit_transaction(30)
    got = cluster.read_topic(topic, 101, overrides={"isolation.level": "read_committed"})
    assert sorted(m.value() or b"" for m in got).count(b"before") == 100


@pytest.mark.integration
def test_cli_run_prints_bootstrap_and_stops_on_sigterm(tmp_path: Path) -> None:
    fetch_jars()
    cli = subprocess.Popen(
        [sys.executable, "-m", "connector.devtools.kafka", "run", "--work-dir", str(tmp_path / "broker")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        first = cli.stdout.readline()
        assert first.startswith("KAFKA_BOOTSTRAP=127.0.0.1:")
        cluster = KafkaTestCluster({"bootstrap.servers": first.strip().split("=", 1)[1]})
        topic = cluster.new_topic()
        cluster.seed_topic(topic, [(None, b"hello")])
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftover.stdout == "", "the JVM outlived the CLI"
    state = (tmp_path / "broker" / "harness.json").read_text()
    assert '"sasl_ssl": false' in state
    assert "Kafka Server started" in (tmp_path / "broker" / "logs" / "server.log").read_text()


def test_reading_the_state_ends_at_empty_and_aborted_only_partitions(kafka: KafkaTestCluster) -> None:
    """The tests' state reader (``state_records``) must not wait for a position that never moves:
    a partition that is empty or holds only an aborted transaction delivers no message. A SIGTERM
    test once timed out there under load (issue 22)."""
    topic = kafka.new_topic(3, {"cleanup.policy": "compact"}, prefix="state")
    producer = Producer(kafka.config({"transactional.id": unique("tx")}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"kept", b"k0", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted", b"k1", partition=1)
    producer.flush(30)
    producer.abort_transaction(30)
    assert [(m.key(), m.value()) for m in state_records(kafka, topic, 3)] == [(b"k0", b"kept")]
