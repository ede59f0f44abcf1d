"""A full volume under the local store (RELIABILITY.md row 19): fail closed, lose nothing.

The volume is a real tmpfs of a few MiB mounted for the test (CI runs as root, as the Debian
packages it installs need), filled by a file the way a neighbour or a log would fill it.
RocksDB runs with the WAL off, so a full volume shows when rows leave the memtable: at a flush
(the memtable full, or a graceful stop) and when a store is created.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.devtools.generator import family_events
from connector.state.exceptions import StoreError
from connector.state.store import PartitionStore
from tests.integration.family_ingest import (
    PARTITIONS,
    assert_state_equals_replay,
    committed_events,
    ingest_group,
    wait_until,
)
from tests.integration.state_helpers import state_records
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

_INGEST = [sys.executable, "-m", "connector.cli", "ingest"]
_VOLUME_MB = 8


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``_VOLUME_MB`` MiB, unmounted afterwards."""
    path = tmp_path / "volume"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={_VOLUME_MB}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(volume: Path) -> Path:
    """Take every free byte of ``volume`` with one file, as a runaway neighbour would."""
    filler = volume / "filler"
    free = os.statvfs(volume)
    with filler.open("wb") as out:
        os.posix_fallocate(out.fileno(), 0, free.f_bavail * free.f_frsize)
    assert os.statvfs(volume).f_bavail == 0
    return filler


def test_a_store_write_on_a_full_volume_is_a_store_error_that_names_the_volume(volume: Path) -> None:
    store = PartitionStore(volume / "p0")
    _fill(volume)
    row = os.urandom(300)  # incompressible, so the memtable's flush needs real space
    caught: StoreError | None = None
    for batch in range(2000):  # the memtable (64 MiB) fills, and its flush meets the full volume
        try:
            store.write({f"Family/FAM-{batch}-{i}".encode(): row for i in range(1000)}, batch)
        except StoreError as exc:
            caught = exc
            break
    assert caught is not None, "2 GB written to an 8 MiB volume without an error"
    assert "cannot be written: its volume is full" in str(caught)
    assert "FAM-" not in str(caught)  # names the store, never a key or a value
    with pytest.raises(StoreError, match="cannot be flushed: its volume is full"):
        store.close()
    with pytest.raises(StoreError, match="cannot be opened: its volume is full"):
        PartitionStore(volume / "p1")  # a new store cannot be created either, and says why
    assert not (volume / "p1" / "CURRENT").exists()


def test_a_full_volume_stops_the_ingest_with_a_clear_error_and_a_restart_loses_nothing(
    kafka: KafkaTestCluster, tmp_path: Path, volume: Path
) -> None:
    topic = kafka.new_topic(PARTITIONS, prefix="family")
    events = list(family_events(2000, 3, deletes_every=9))
    half = len(events) // 2
    kafka.seed_topic(topic, events[:half])
    group, state_topic, env = ingest_group(
        kafka,
        tmp_path,
        topic,
        "full",
        STATE_DIR=str(volume / "store"),
        TRANSACTIONAL_ID=unique("txn"),
        BATCH_MAX_EVENTS="500",
    )
    log_path = tmp_path / "ingest.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(_INGEST, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert wait_until(lambda: committed_events(kafka, group, topic) >= half, 90), "no progress"
            filler = _fill(volume)
            # Committing goes on while the rows fit in memory: Kafka holds them, and it is the
            # source of truth; the store is only a cache of it.
            kafka.seed_topic(topic, events[half:])
            assert wait_until(lambda: committed_events(kafka, group, topic) >= len(events), 90)
            proc.send_signal(signal.SIGTERM)  # the graceful stop's flush meets the full volume
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    output = log_path.read_text()
    assert code == 1, output
    assert "cannot be flushed: its volume is full" in output
    assert "Traceback" not in output
    assert "FAM-" not in output  # no EntityId
    assert "@" not in output  # no e-mail address

    filler.unlink()  # the operator frees the volume and the pod restarts
    more = list(family_events(2000, 4, deletes_every=9))[len(events) : len(events) + 10]
    with log_path.open("a") as log:
        proc = subprocess.Popen(_INGEST, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # Events committed after the restart prove the stores were caught up: a partition
            # is consumed only once its store has restored what the state topic holds.
            kafka.seed_topic(topic, more)
            events += more
            assert wait_until(lambda: committed_events(kafka, group, topic) >= len(events), 90)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert committed_events(kafka, group, topic) == len(events)
    assert_state_equals_replay(kafka, state_topic, topic, events)
    assert _stores(volume / "store") == _latest(kafka, state_topic)


def _latest(kafka: KafkaTestCluster, state_topic: str) -> dict[int, dict[bytes, bytes]]:
    """Per partition, the latest state record of each key: what its local store must hold."""
    latest: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
    for msg in state_records(kafka, state_topic, PARTITIONS):
        rows, key, value = latest[msg.partition() or 0], msg.key() or b"", msg.value()
        if value is None:
            rows.pop(key, None)
        else:
            rows[key] = value
    return latest


def _stores(stores: Path) -> dict[int, dict[bytes, bytes]]:
    """Every partition's local store, read after its process has stopped."""
    held: dict[int, dict[bytes, bytes]] = {}
    for p in range(PARTITIONS):
        store = PartitionStore(stores / f"p{p}")
        try:
            held[p] = dict(store.items())
        finally:
            store.close()
    return held
