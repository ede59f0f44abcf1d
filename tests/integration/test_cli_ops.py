"""The operator commands as an operator runs them: ``python -m connector.cli ...`` subprocesses
with a deployment's ``CARECLOUD_*`` environment, against the real broker (and S3 server).

validate, status, rebuild-store and dlq list/replay; ingest runs as its own subprocess in
between. Every command's output is collected and checked for the seeded canary values and
the dead letters' payload bytes, which must never be printed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import TopicPartition

from connector.devtools.s3_server import S3Endpoint
from connector.ingest.dlq import dead_letter_headers
from connector.model import ENTITY_NAMES
from connector.sinks.keys import manifest_key
from connector.sinks.s3 import S3Storage
from connector.snapshot.manifest import EntityResult, Manifest
from connector.source import Position
from connector.state.codec import decode_row, split_key
from connector.state.store import PartitionStore
from connector.state.topics import high_watermarks
from tests.integration.family_ingest import MAPPING
from tests.integration.state_helpers import committed, read_state
from tests.integration.test_ingest_bad_input import CANARY, event, key
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

SECRET = "Sekrit-Marmalade-4711"


class Deployment:
    """One connector deployment's environment, and the commands run with it."""

    def __init__(self, kafka: KafkaTestCluster, tmp_path: Path, topic: str, **extra: str) -> None:
        self.kafka, self.topic, self.tmp_path = kafka, topic, tmp_path
        self.mapping = tmp_path / "mapping.yaml"
        self.mapping.write_text(MAPPING.format(topic=topic))
        self.group, self.state_topic, self.dlq_topic = unique("ops"), unique("state"), unique("dlq")
        self.state_dir = tmp_path / "store"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.upper().startswith("CARECLOUD_")},
            "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "CARECLOUD_INGEST_MAPPING_FILE": str(self.mapping),
            "CARECLOUD_INGEST_GROUP_ID": self.group,
            "CARECLOUD_INGEST_STATE_TOPIC": self.state_topic,
            "CARECLOUD_INGEST_DLQ_TOPIC": self.dlq_topic,
            "CARECLOUD_INGEST_STATE_DIR": str(self.state_dir),
            "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique("txn"),
            "CARECLOUD_INGEST_BATCH_MAX_MS": "100",
            "CARECLOUD_OPS_HTTP_PORT": "0",
            **extra,
        }
        self.outputs: list[str] = []

    def run(self, *args: str, check: int | None = 0, **env: str) -> subprocess.CompletedProcess[str]:
        """One command; its stdout and stderr are kept for the canary check."""
        done = subprocess.run(
            [sys.executable, "-m", "connector.cli", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        self.outputs.append(done.stdout + done.stderr)
        if check is not None:
            assert done.returncode == check, done.stdout + done.stderr
        return done

    def ingest_until(self, events: int, partitions: int = 1) -> None:
        """Run ``ingest`` until the group committed ``events`` offsets, then stop it with SIGTERM."""
        log = self.tmp_path / "ingest.log"
        with log.open("a") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "ingest"], env=self.env, stdout=out, stderr=out
            )
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and self.committed(partitions) < events:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        assert self.committed(partitions) == events
        self.outputs.append(log.read_text())

    def committed(self, partitions: int) -> int:
        return committed(self.kafka, self.group, self.topic, partitions)

    def assert_nothing_leaked(self, *payloads: bytes) -> None:
        text = "\n".join(self.outputs)
        assert CANARY not in text
        assert CANARY.lower() not in text
        assert SECRET not in text
        for payload in payloads:
            assert payload.decode(errors="replace") not in text


def test_validate_names_every_bad_setting_and_the_mapping_line(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    deployment = Deployment(kafka, tmp_path, unique("family"))
    assert deployment.run("validate").stdout.splitlines()[-1] == "valid"
    bad = {
        "CARECLOUD_INGEST_BATCH_MAX_EVENTS": "0",
        "CARECLOUD_SNAPSHOT_FORMAT": "parquet",
        "CARECLOUD_OPS_HTTP_PORT": "99999",
        "CARECLOUD_SNAPSHOT_ENABLED": "true",  # and no bucket
        "CARECLOUD_PORTAL_API_KEY": SECRET,
        "CARECLOUD_S3_ACCESS_KEY_ID": "operator",
        "CARECLOUD_S3_SECRET_ACCESS_KEY": SECRET,
    }
    deployment.mapping.write_text(
        MAPPING.format(topic=deployment.topic).replace("PlanCode: plan_code", "PlanCod: plan_code")
    )
    done = deployment.run("validate", check=1, **bad)
    for variable in [*list(bad)[:3], "CARECLOUD_S3_BUCKET"]:
        assert variable in done.stdout
    line = next(
        i for i, text in enumerate(deployment.mapping.read_text().splitlines(), 1) if "PlanCod:" in text
    )
    assert f"{deployment.mapping}:{line}: tables.public.family.fields.PlanCod" in done.stdout
    as_json = json.loads(deployment.run("validate", "--json", check=1, **bad).stdout)
    assert as_json["valid"] is False
    assert len(as_json["settings"]["problems"]) == 4
    assert len(as_json["mapping"]["problems"]) >= 1
    deployment.assert_nothing_leaked()


def _publish_manifest(storage: S3Storage, day: dt.date) -> None:
    entities = tuple(
        EntityResult(name, "delivered", "file", 2, "fp", storage="s3", key=f"carecloud/{day}/{name}.csv.gz")
        for name in ENTITY_NAMES
    )
    created = dt.datetime.now(dt.UTC)
    manifest = Manifest("sid", day, created, {}, {}, {}, entities, "report")
    storage.put_bytes(manifest_key("carecloud", day), manifest.to_bytes(), content_type="application/json")


def test_status_shows_the_lag_then_zero_once_ingest_caught_up(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    topic = kafka.new_topic(2, prefix="family")
    events = [(key(i), event(i)) for i in range(1, 41)]
    kafka.seed_topic(topic, events)
    deployment = Deployment(
        kafka,
        tmp_path,
        topic,
        CARECLOUD_S3_BUCKET=s3_bucket,
        CARECLOUD_S3_ENDPOINT_URL=s3_server.url,
        CARECLOUD_S3_REGION="us-east-1",
        CARECLOUD_S3_ACCESS_KEY_ID=s3_server.access_key_id,
        CARECLOUD_S3_SECRET_ACCESS_KEY=s3_server.secret_access_key,
    )
    today = dt.datetime.now(dt.UTC).astimezone(ZoneInfo("America/Los_Angeles")).date()
    storage = S3Storage(
        s3_bucket,
        region="us-east-1",
        endpoint_url=s3_server.url,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    _publish_manifest(storage, today - dt.timedelta(days=1))

    before = json.loads(deployment.run("status", "--json").stdout)
    assert before["lag"]["total"] == 40
    ends = high_watermarks(kafka.config(), topic, [0, 1])
    assert before["lag"]["partitions"] == {f"{topic}/{p}": ends[p] for p in (0, 1)}
    assert before["today"] == {"day": today.isoformat(), "published": False, "held": None}
    assert before["deliveries"]["Claim"]["day"] == (today - dt.timedelta(days=1)).isoformat()
    assert before["state_counts"]["entities"]["Family"] == 2
    assert before["next_run"]["zone"] == "America/Los_Angeles"
    text = deployment.run("status").stdout
    assert "ingest lag (group " in text
    assert ": 40 event(s)" in text

    deployment.ingest_until(40, partitions=2)
    _publish_manifest(storage, today)
    after = json.loads(deployment.run("status", "--json").stdout)
    assert after["lag"]["total"] == 0
    assert set(after["lag"]["partitions"].values()) == {0}
    assert after["today"]["published"] is True
    text = deployment.run("status").stdout
    assert ": 0 event(s)" in text
    assert f"today {today}: published" in text
    assert "next run " in text
    deployment.assert_nothing_leaked(*(value for _, value in events))


def _store_rows(path: Path) -> dict[bytes, bytes]:
    store = PartitionStore(path)
    try:
        return dict(store.items())
    finally:
        store.close()


def test_rebuild_store_rebuilds_what_the_state_topic_holds_and_refuses_a_held_store(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(2, prefix="family")
    events = [(key(i), event(i)) for i in range(1, 61)]
    kafka.seed_topic(topic, events)
    deployment = Deployment(kafka, tmp_path, topic)
    deployment.ingest_until(60, partitions=2)
    original = {p: _store_rows(deployment.state_dir / f"p{p}") for p in (0, 1)}
    shutil.rmtree(deployment.state_dir)

    done = deployment.run("rebuild-store")
    assert "partition 0 rebuilt:" in done.stderr  # the progress lines, plain (not a terminal)
    assert "\r" not in done.stderr
    assert "rebuilt 2 store(s)" in done.stdout
    rebuilt = {p: _store_rows(deployment.state_dir / f"p{p}") for p in (0, 1)}
    assert rebuilt == original
    state = read_state(kafka, deployment.state_topic, 2)
    from_store = {
        split_key(k): decode_row(split_key(k)[0], v)
        for rows in rebuilt.values()
        for k, v in rows.items()
        if not k.startswith(b"~")  # the connector's own records (positions, ledger): not entities
    }
    assert from_store == state
    assert len(state) == 60

    held = PartitionStore(deployment.state_dir / "p1")  # as a running ingest would
    try:
        refused = deployment.run("rebuild-store", "--partition", "0", "--partition", "1", check=1)
        assert "partition 1" in refused.stderr
        assert "in use by another process" in refused.stderr
        assert dict(held.items()) == original[1]
    finally:
        held.close()
    assert _store_rows(deployment.state_dir / "p0") == original[0]  # nothing deleted
    as_json = json.loads(deployment.run("rebuild-store", "--partition", "1", "--json").stdout)
    assert as_json["partitions"] == {"1": len(original[1])}
    deployment.run("rebuild-store", "--partition", "5", check=1)
    deployment.assert_nothing_leaked(*(value for _, value in events))


def _source_messages(kafka: KafkaTestCluster, topic: str) -> list[Any]:
    end = high_watermarks(kafka.config(), topic, [0])[0]
    return kafka.read_topic(topic, end)


def test_dlq_replay_after_a_mapping_fix_brings_the_entity_in_and_skips_by_reference(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, prefix="family")
    refused = event(2, status="Q")  # the mapping knows A, P, S, T only
    oversized = event(3, family_name=CANARY + "x" * 5000)
    kafka.seed_topic(topic, [(key(1), event(1)), (key(2), refused), (key(3), oversized)])
    deployment = Deployment(kafka, tmp_path, topic, CARECLOUD_INGEST_MAX_MESSAGE_BYTES="4096")
    deployment.ingest_until(3)
    assert set(read_state(kafka, deployment.state_topic)) == {("Family", "FAM-1")}

    listed = [json.loads(line) for line in deployment.run("dlq", "list", "--json").stdout.splitlines()]
    assert [(x["offset"], x["reason"], x["by_reference"]) for x in listed] == [
        (1, "unknown_enum_symbol", False),
        (2, "oversized_record", True),
    ]
    assert {x["topic"] for x in listed} == {topic}
    table = deployment.run("dlq", "list").stdout
    assert f"{topic}[0]@1" in table
    assert "by reference" in table
    only = deployment.run("dlq", "list", "--reason", "oversized_record", "--json").stdout.splitlines()
    assert len(only) == 1

    deployment.mapping.write_text(
        MAPPING.format(topic=topic).replace("T: TERMINATED", "T: TERMINATED, Q: PENDING")
    )
    dry = deployment.run("dlq", "replay", "--dry-run")
    assert [topic, "0", "1", "unknown_enum_symbol"] in [line.split() for line in dry.stdout.splitlines()]
    assert f"{topic}[0]@2 (oversized_record)" in dry.stdout
    assert high_watermarks(kafka.config(), topic, [0])[0] == 3  # nothing published

    done = deployment.run("dlq", "replay")
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["unknown_enum_symbol", "1", "0", "0", "0", "0"] in rows  # replayed skipped refused dup failed
    assert ["oversized_record", "0", "1", "0", "0", "0"] in rows
    assert "--since 2" in done.stdout
    replayed = _source_messages(kafka, topic)[3]
    assert (replayed.key(), replayed.value()) == (key(2), refused)  # the original bytes
    assert not [name for name, _ in replayed.headers() or [] if name.startswith("carecloud.")]

    deployment.ingest_until(4)
    state = read_state(kafka, deployment.state_topic)
    assert set(state) == {("Family", "FAM-1"), ("Family", "FAM-2")}
    assert state[("Family", "FAM-2")].values["Status"] == "PENDING"

    # The source moves on (a newer change of the same row); an operator replays the old dead
    # letter again: its source version is older than the state's, so it is dropped as stale.
    newer = event(2, lsn=50_000_000, status="S")
    kafka.seed_topic(topic, [(key(2), newer)])
    again = json.loads(deployment.run("dlq", "replay", "--reason", "unknown_enum_symbol", "--json").stdout)
    assert again["counts"] == {"unknown_enum_symbol": {"replayed": 1}}
    deployment.ingest_until(6)
    final = read_state(kafka, deployment.state_topic)
    assert final[("Family", "FAM-2")].values["Status"] == "SUSPENDED"
    assert final[("Family", "FAM-2")].version.major == 50_000_000 - 5  # sequence[0] of the newer change
    assert final[("Family", "FAM-1")] == state[("Family", "FAM-1")]
    assert _dlq_end(kafka, deployment.dlq_topic) == 2  # nothing new was dead-lettered

    # A dead letter whose carecloud.topic header names a topic that is not one of the mapping's
    # sources (here the state topic itself) is refused: counted, named by its DLQ offset and
    # the header, never produced, and the command exits 1.
    forged = _produce_dead_letter(
        kafka, deployment.dlq_topic, key(2), refused, Position(deployment.state_topic, 0, 0)
    )
    state_end = high_watermarks(kafka.config(), deployment.state_topic, [0])[0]
    as_json = json.loads(deployment.run("dlq", "replay", "--since", str(forged), "--json", check=1).stdout)
    assert as_json["counts"] == {"unknown_enum_symbol": {"refused": 1}}
    assert as_json["refused"] == [
        {"dlq_partition": 0, "dlq_offset": forged, "error": "MappingError", "reason": "unknown_enum_symbol"}
    ]
    text = deployment.run("dlq", "replay", "--since", str(forged), check=1).stdout
    assert "the carecloud.topic header names a topic that is not one of the mapping's source topics" in text
    assert f"  dlq partition 0 offset {forged} (unknown_enum_symbol)" in text.splitlines()
    assert deployment.state_topic not in text
    assert high_watermarks(kafka.config(), deployment.state_topic, [0])[0] == state_end  # nothing produced
    deployment.assert_nothing_leaked(refused, oversized, newer)


def _produce_dead_letter(
    kafka: KafkaTestCluster, dlq: str, message_key: bytes, value: bytes, position: Position
) -> int:
    """A dead letter written as ingest writes one, claiming ``position``; returns its DLQ offset."""
    offsets: list[int] = []
    producer = kafka.producer()
    producer.produce(
        dlq,
        value,
        message_key,
        headers=dead_letter_headers(position, "MappingError", "unknown_enum_symbol"),
        on_delivery=lambda err, msg: offsets.append(-1 if err else msg.offset()),
    )
    assert producer.flush(30) == 0
    [offset] = offsets
    assert offset >= 0
    return offset


def _dlq_end(kafka: KafkaTestCluster, topic: str) -> int:
    """Dead letters committed so far (the offsets of the commit markers aside)."""
    consumer = kafka.consumer(None, {"isolation.level": "read_committed", "enable.partition.eof": True})
    end = high_watermarks(kafka.config(), topic, [0])[0]
    consumer.assign([TopicPartition(topic, 0, 0)])
    count = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if (msg.offset() or 0) >= end:
                    return count
                continue
            count += 1
    finally:
        consumer.close()
    raise AssertionError("dead-letter topic read timed out")
