"""The daily snapshot on three brokers while brokers go away (RELIABILITY row 22, issue 21).

The state is ingested once (the real ``ingest`` command, no fault), then:

1. a rolling restart of all three brokers runs while snapshots of successive dates cut and
   read the state topic, one after another, for as long as the restart lasts;
2. the leader of a state partition is SIGKILLed between the cut and its reading;
3. every broker is SIGKILLed between the cut and its reading (the attempt cannot finish).

A run under a fault either publishes or fails cleanly: a ``ConnectorError``, no manifest. A
failed date is resumed once the cluster is whole and publishes what a clean run at the same
pinned cut publishes, byte for byte. Every published file is compared with the generator's
expected state (``check_entity``: the oracle's CSV rendering, never the connector's replay).
Files go to the moto S3 server over HTTP.
"""

from __future__ import annotations

import datetime as dt
import gzip
import threading
from pathlib import Path
from typing import Any

import pytest

from connector.devtools._demo_check import check_entity
from connector.devtools.kafka_cluster import KafkaCluster
from connector.devtools.s3_server import S3Endpoint
from connector.devtools.synthetic import generate
from connector.errors import ConnectorError
from connector.model import ENTITY_NAMES
from connector.sinks.s3 import S3Storage
from connector.snapshot import cut_offsets
from connector.snapshot.cut import Cut, take_cut
from connector.snapshot.lag import Lag
from connector.snapshot.manifest import Manifest, RunRecord
from connector.snapshot.run import Outcome, RunConfig, SnapshotRun
from tests.integration.cluster_helpers import PARTITIONS, create_replicated_topics, ingest_env
from tests.integration.ops_helpers import ConnectorProcess, produce, wait_caught_up
from tests.kafka_helpers import unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST_DAY = dt.date(2026, 11, 2)
STALL_S = 15.0
"""The cut's read gives up after this long without moving (``STALL_TIMEOUT_S``, 60 s in
production), shortened so the outage case costs seconds, not a minute."""
OUTAGE_BOUND_S = 60.0
"""How long a run may take to give up once every broker is gone (its reads are bounded)."""


def _storage(s3_server: S3Endpoint, bucket: str) -> S3Storage:
    s3_server.client().create_bucket(Bucket=bucket)
    return S3Storage(
        bucket,
        region="us-east-1",
        endpoint_url=s3_server.url,
        access_key_id="testing",
        secret_access_key="testing",
    )


def _run(config: dict[str, Any], state: str, storage: S3Storage, work: Path, cut: Any = None) -> SnapshotRun:
    """A run of every entity as a file; ``cut``: how it takes its cut (default: the real one)."""
    return SnapshotRun(
        RunConfig(state_topic=state, file_threshold=0, work_dir=work, lease_ttl=dt.timedelta(seconds=10)),
        config,
        storage,
        take_cut=cut or (lambda day: (take_cut(config, state), Lag())),
    )


def _attempt(run: SnapshotRun, day: dt.date, storage: S3Storage) -> bool:
    """Whether ``day`` published; a failure must be clean: a ConnectorError and no manifest."""
    try:
        result = run.run(day)
    except ConnectorError:
        assert storage.stat(f"carecloud/{day.isoformat()}/_manifest.json") is None, "a failed run published"
        return False
    assert result.outcome is Outcome.PUBLISHED, result.outcome
    return True


def _manifest(storage: S3Storage, day: dt.date) -> Manifest:
    found = storage.get(f"carecloud/{day.isoformat()}/_manifest.json")
    assert found is not None, f"{day} has no manifest"
    return Manifest.from_bytes(found[0])


def _assert_oracle(storage: S3Storage, day: dt.date, expected: dict[str, dict[str, Any]]) -> Manifest:
    """Every file of ``day`` holds exactly the generator's expected records."""
    manifest = _manifest(storage, day)
    for entity in ENTITY_NAMES:
        entry = manifest.entity(entity)
        assert entry is not None
        assert entry.key is not None, f"{entity} did not go as a file"
        found = storage.get(entry.key)
        assert found is not None
        check = check_entity(entity, entry, expected[entity], gzip.decompress(found[0]))
        assert check.ok, check.as_json()
    return manifest


def _ingested_state(kafka_cluster: KafkaCluster, tmp_path: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Ingest a synthetic stream (no fault) and return the state topic and the oracle."""
    config = kafka_cluster.client_config()
    prefix = unique("snapfaults") + ".public."
    stream = generate(150, seed=33, topic_prefix=prefix)
    create_replicated_topics(config, stream.topics)
    produce(config, stream)
    env = ingest_env(kafka_cluster.bootstrap, tmp_path, prefix)
    ingest = ConnectorProcess(["ingest"], env, tmp_path, "ingest")
    try:
        ingest.wait_for_port()
        wait_caught_up(config, env["CARECLOUD_INGEST_GROUP_ID"], stream.topics, PARTITIONS, ingest, 180)
    finally:
        code, _ = ingest.terminate(60)
    assert code == 0, ingest.output()
    return env["CARECLOUD_INGEST_STATE_TOPIC"], stream.expected_state()


@pytest.mark.timeout(600)
def test_snapshots_during_a_rolling_restart_and_a_leader_killed_mid_read_deliver_the_oracle(
    kafka_cluster: KafkaCluster, s3_server: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cut_offsets, "STALL_TIMEOUT_S", STALL_S)
    config: dict[str, Any] = {**kafka_cluster.client_config(), "log_level": 2}
    state, expected = _ingested_state(kafka_cluster, tmp_path)
    storage = _storage(s3_server, unique("snapfaults").lower())

    # 1. Snapshots of successive dates for as long as a rolling restart lasts. The restart runs
    # on this thread: a broker dies with the thread that started it.
    outcomes: dict[dt.date, bool] = {}
    restarting = threading.Event()
    errors: list[BaseException] = []

    def snapshots() -> None:
        day = FIRST_DAY
        try:
            while restarting.is_set() or not outcomes:
                outcomes[day] = _attempt(
                    _run(config, state, storage, tmp_path / day.isoformat()), day, storage
                )
                day += dt.timedelta(days=1)
        except BaseException as exc:  # the main thread asserts it
            errors.append(exc)

    restarting.set()
    runner = threading.Thread(target=snapshots, name="snapshots")
    runner.start()
    try:
        kafka_cluster.rolling_restart()
    finally:
        restarting.clear()
        runner.join(300)
    assert not errors, errors
    day = max(outcomes) + dt.timedelta(days=1)
    kafka_cluster.wait_in_sync()
    for failed in [d for d, published in outcomes.items() if not published]:  # a failed run frees its lease
        assert _attempt(_run(config, state, storage, tmp_path / f"{failed}-resumed"), failed, storage)
    files = {d: _assert_oracle(storage, d, expected).entities for d in outcomes}
    print(
        f"rolling restart: {len(outcomes)} dates, {sum(not p for p in outcomes.values())} failed and resumed"
    )
    assert len({tuple((r.entity, r.sha256) for r in entities) for entities in files.values()}) == 1

    # 2. The leader of a state partition SIGKILLed between the cut and its reading.
    killed: list[int] = []

    def cut_then_kill(_day: dt.date) -> tuple[Cut, Lag]:
        cut = take_cut(config, state)
        leader = kafka_cluster.leader(state, 0)
        killed.append(kafka_cluster.node_id(leader))
        leader.kill()
        return cut, Lag()

    published = _attempt(_run(config, state, storage, tmp_path / "kill", cut_then_kill), day, storage)
    assert killed, "the cut was never taken"
    kafka_cluster.heal()
    if not published:
        assert _attempt(_run(config, state, storage, tmp_path / "kill-resumed"), day, storage)
    _assert_same_as_a_clean_run_at_the_pinned_cut(config, state, storage, s3_server, day, expected, tmp_path)
    print(f"leader {killed} killed mid-read: {'published' if published else 'failed cleanly, resumed'}")

    # 3. Every broker killed between the cut and its reading: the attempt cannot finish and
    # must fail, cleanly and in bounded time; the resume reads the pinned cut.
    day += dt.timedelta(days=1)

    def cut_then_kill_all(_day: dt.date) -> tuple[Cut, Lag]:
        cut = take_cut(config, state)
        for broker in kafka_cluster.brokers:
            broker.kill()
        return cut, Lag()

    attempt: list[bool] = []
    failing = threading.Thread(
        target=lambda: attempt.append(
            _attempt(_run(config, state, storage, tmp_path / "outage", cut_then_kill_all), day, storage)
        ),
        name="outage-run",
    )
    failing.start()
    failing.join(OUTAGE_BOUND_S)
    hung = failing.is_alive()
    kafka_cluster.heal()
    failing.join(120)
    assert not hung, f"the run did not give up within {OUTAGE_BOUND_S:.0f} s of the whole cluster going down"
    assert attempt == [False], "a run with every broker down published"
    assert _attempt(_run(config, state, storage, tmp_path / "outage-resumed"), day, storage)
    _assert_same_as_a_clean_run_at_the_pinned_cut(config, state, storage, s3_server, day, expected, tmp_path)


def _assert_same_as_a_clean_run_at_the_pinned_cut(
    config: dict[str, Any],
    state: str,
    storage: S3Storage,
    s3_server: S3Endpoint,
    day: dt.date,
    expected: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """``day`` holds the oracle, and the very bytes a clean run at its pinned cut publishes."""
    manifest = _assert_oracle(storage, day, expected)
    record = storage.get(f"carecloud/{day.isoformat()}/_run.json")
    assert record is not None
    pinned = Cut.from_json(RunRecord.from_bytes(record[0]).cut)
    reference = _storage(s3_server, unique("reference").lower())
    clean = _run(config, state, reference, tmp_path / f"reference-{day}", lambda _day: (pinned, Lag())).run(
        day
    )
    assert clean.manifest is not None
    assert [(r.entity, r.records, r.sha256) for r in manifest.entities] == [
        (r.entity, r.records, r.sha256) for r in clean.manifest.entities
    ]
