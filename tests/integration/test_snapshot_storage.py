"""The snapshot run against the real storage servers: S3 (moto over HTTP) and SFTP (OpenSSH).

The run's logic is covered over a directory storage in ``test_snapshot_run``; here the same
run publishes through the production storages, the command is killed mid-upload and resumed,
S3 fails under it, and a stale writer meets a published date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from connector.devtools.faulty_http import S3_SLOW_DOWN, Fault, FaultyHttpProxy
from connector.devtools.s3_server import S3Endpoint
from connector.devtools.sftp_server import SftpServer
from connector.model import ENTITY_NAMES
from connector.sinks.exceptions import StorageUnavailableError
from connector.sinks.s3 import S3Storage
from connector.sinks.sftp import SftpStorage
from connector.sinks.storage import Storage
from connector.snapshot.cut import Cut
from connector.snapshot.lag import Lag
from connector.snapshot.lease import LeaseRecord
from connector.snapshot.manifest import Manifest, RunRecord
from connector.snapshot.run import Outcome, RunConfig, SnapshotRun
from tests.integration.snapshot_helpers import (
    children_point_at_parents,
    expected_ids,
    ids,
    published,
    seed_state,
    snapshot_run,
    tree,
)
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 25)


def s3_storage(endpoint: str, bucket: str, **kwargs: object) -> S3Storage:
    return S3Storage(
        bucket,
        region="us-east-1",
        endpoint_url=endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["s3", "sftp"])
def storage(
    request: pytest.FixtureRequest, s3_server: S3Endpoint, s3_bucket: str, sftp_server: SftpServer
) -> Iterator[Storage]:
    if request.param == "s3":
        yield s3_storage(s3_server.url, s3_bucket, encryption="AES256")
        return
    root = sftp_server.root_dir / unique("snap")
    root.mkdir()
    with SftpStorage(
        host=sftp_server.host,
        port=sftp_server.port,
        username=sftp_server.username,
        known_hosts=sftp_server.known_hosts_path,
        private_key=sftp_server.client_key_path,
        root=str(root),
    ) as sftp:
        yield sftp


def test_the_full_state_is_published_through_the_storage(
    kafka: KafkaTestCluster, storage: Storage, tmp_path: Path
) -> None:
    topic = kafka.new_topic(3, {"cleanup.policy": "compact"}, prefix="state")
    state = tree(25)
    seed_state(kafka, topic, state)

    result = snapshot_run(kafka, topic, storage, work_dir=tmp_path).run(DAY)

    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    files = published(storage, result.manifest)
    assert {entity: ids(rows) for entity, rows in files.items()} == {
        entity: expected_ids(state, entity) for entity in ENTITY_NAMES
    }
    assert children_point_at_parents(files)
    assert {r.storage for r in result.manifest.entities} == {storage.name}
    assert storage.list_keys("carecloud/2026-11-25/")[-1] == "carecloud/2026-11-25/_run.json"
    # Idempotent: a second run finds the manifest and leaves every object as it was.
    before = {key: storage.stat(key) for key in storage.list_keys("")}
    assert (
        snapshot_run(kafka, topic, storage, work_dir=tmp_path).run(DAY).outcome is Outcome.ALREADY_PUBLISHED
    )
    assert {key: storage.stat(key) for key in storage.list_keys("")} == before


def _command_env(
    kafka: KafkaTestCluster, tmp_path: Path, state_topic: str, endpoint: str, bucket: str
) -> dict[str, str]:
    source = unique("source")
    kafka.admin().create_topics([NewTopic(source, 1, 1)])[source].result(30)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        f"version: 1\ntopics:\n  {source}: {{format: debezium-json}}\ntables:\n  public.family:\n"
        '    entity: Family\n    entity_id: "FAM-{family_id}"\n    fields:\n      FamilyName: family_name\n'
    )
    return {
        **os.environ,
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_STATE_TOPIC": state_topic,
        "CARECLOUD_INGEST_GROUP_ID": unique("group"),
        "CARECLOUD_SNAPSHOT_WORK_DIR": str(tmp_path),
        "CARECLOUD_S3_BUCKET": bucket,
        "CARECLOUD_S3_ENDPOINT_URL": endpoint,
        "CARECLOUD_S3_REGION": "us-east-1",
        "CARECLOUD_S3_ACCESS_KEY_ID": "testing",
        "CARECLOUD_S3_SECRET_ACCESS_KEY": "testing",
        "CARECLOUD_SNAPSHOT_LEASE_TTL_S": "10",  # the killed run's lease expires soon after
    }


SNAPSHOT_COMMAND = [sys.executable, "-m", "connector.cli", "snapshot", "--date", DAY.isoformat()]


def _run_through(proxy: FaultyHttpProxy, env: dict[str, str], request: str) -> subprocess.Popen[bytes]:
    """The snapshot command, started with its S3 traffic through ``proxy``, once it has sent a
    request matching ``request`` (which the test has scripted the proxy to hold)."""
    process = subprocess.Popen(SNAPSHOT_COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(re.search(request, r) for r in proxy.requests):
        if process.poll() is not None:
            break
        time.sleep(0.05)
    assert any(re.search(request, r) for r in proxy.requests), process.communicate(timeout=5)[0]
    return process


def _wait_for_lease_expiry(storage: Storage) -> None:
    lease = storage.get("carecloud/2026-11-25/_lease.json")
    assert lease is not None
    expires = LeaseRecord.from_bytes(lease[0]).expires_at
    time.sleep(max((expires - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 0.5)


def _killed_at(request: str, s3_server: S3Endpoint, env: dict[str, str]) -> None:
    """Run the snapshot command with ``env``, its S3 traffic through a proxy that holds the
    request matching ``request``, and SIGKILL it while it waits for the answer."""
    with FaultyHttpProxy(s3_server.url) as proxy:
        proxy.add(Fault(delay=60), match=request)
        env = {**env, "CARECLOUD_S3_ENDPOINT_URL": proxy.url}
        process = _run_through(proxy, env, request)
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def _snapshot_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SNAPSHOT_COMMAND, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_run_killed_mid_upload_resumes_at_its_pinned_cut_with_identical_files(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(30))
    # The upload of the third entity's file hangs: the command is killed while it waits.
    _killed_at(r"^PUT /[^ ]*/carecloud/2026-11-25/FamilyMember\.csv\.gz", s3_server,
               _command_env(kafka, tmp_path, topic, s3_server.url, s3_bucket))  # fmt: skip

    storage = s3_storage(s3_server.url, s3_bucket)
    keys = storage.list_keys("carecloud/2026-11-25/")
    assert "carecloud/2026-11-25/_manifest.json" not in keys  # nothing is published
    assert "carecloud/2026-11-25/FamilyMember.csv.gz" not in keys  # nothing partial is visible
    assert "carecloud/2026-11-25/Family.csv.gz" in keys
    first_family = storage.stat("carecloud/2026-11-25/Family.csv.gz")
    # A dangling multipart upload left by some earlier crash is cleared by the next run.
    s3_server.client().create_multipart_upload(Bucket=s3_bucket, Key="carecloud/2026-11-25/Care.csv.gz")
    seed_state(kafka, topic, tree(40), version=5)  # ingest went on; the date keeps its cut
    _wait_for_lease_expiry(storage)  # the dead run's lease

    resumed = _snapshot_command(_command_env(kafka, tmp_path, topic, s3_server.url, s3_bucket))

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The command logs as the service does (issue 16): JSON lines through connector.ops.logs.
    logged = [json.loads(line) for line in resumed.stderr.splitlines()]
    assert "snapshot 2026-11-25 resumes at its pinned cut" in [line["msg"] for line in logged]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in logged)
    found = storage.get("carecloud/2026-11-25/_manifest.json")
    assert found is not None
    manifest = Manifest.from_bytes(found[0])
    assert storage.stat("carecloud/2026-11-25/Family.csv.gz") == first_family  # kept, not re-uploaded
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    # The files are exactly those of a clean run at the pinned cut, in another bucket.
    record = storage.get("carecloud/2026-11-25/_run.json")
    assert record is not None
    cut = Cut.from_json(RunRecord.from_bytes(record[0]).cut)
    assert manifest.cut == RunRecord.from_bytes(record[0]).cut
    reference_bucket = unique("ref").lower()
    s3_server.client().create_bucket(Bucket=reference_bucket)
    reference = s3_storage(s3_server.url, reference_bucket)
    clean = SnapshotRun(RunConfig(state_topic=topic, work_dir=tmp_path), kafka.config(), reference,
                        take_cut=lambda day: (cut, Lag())).run(DAY)  # fmt: skip
    assert clean.manifest is not None
    assert [(r.entity, r.records, r.sha256) for r in manifest.entities] == [
        (r.entity, r.records, r.sha256) for r in clean.manifest.entities
    ]
    assert manifest.entity("Family").records == 30  # type: ignore[union-attr]  # the cut, not 40


def test_s3_failing_under_the_run_fails_it_cleanly_without_a_manifest(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    topic = kafka.new_topic(1, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(3))
    with FaultyHttpProxy(s3_server.url) as proxy:
        storage = s3_storage(proxy.url, s3_bucket, max_attempts=3)
        proxy.fail_next(503, S3_SLOW_DOWN, count=50, match=r"^PUT .*\.csv\.gz")
        with pytest.raises(StorageUnavailableError):
            snapshot_run(kafka, topic, storage, work_dir=tmp_path).run(DAY)
        assert storage.stat("carecloud/2026-11-25/_manifest.json") is None
        proxy.clear()
        # S3 is back: the next attempt (the scheduler retries transient failures) publishes.
        assert snapshot_run(kafka, topic, storage, work_dir=tmp_path).run(DAY).outcome is Outcome.PUBLISHED


def test_a_run_killed_after_its_files_before_its_manifest_publishes_nothing_until_resumed(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    """RELIABILITY row 10: no manifest ever names a missing or partial file."""
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(30))
    # Every file is written; the manifest's write hangs and the command is killed meanwhile.
    _killed_at(r"^PUT /[^ ]*/carecloud/2026-11-25/_manifest\.json", s3_server,
               _command_env(kafka, tmp_path, topic, s3_server.url, s3_bucket))  # fmt: skip

    storage = s3_storage(s3_server.url, s3_bucket)
    files = {f"carecloud/2026-11-25/{entity}.csv.gz" for entity in ENTITY_NAMES}
    keys = set(storage.list_keys("carecloud/2026-11-25/"))
    assert "carecloud/2026-11-25/_manifest.json" not in keys  # a reader does not trust the date
    assert files <= keys
    written = {key: storage.stat(key) for key in files}
    _wait_for_lease_expiry(storage)

    resumed = _snapshot_command(_command_env(kafka, tmp_path, topic, s3_server.url, s3_bucket))

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The command logs as the service does (issue 16): JSON lines through connector.ops.logs.
    logged = [json.loads(line) for line in resumed.stderr.splitlines()]
    assert "snapshot 2026-11-25 resumes at its pinned cut" in [line["msg"] for line in logged]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in logged)
    found = storage.get("carecloud/2026-11-25/_manifest.json")
    assert found is not None
    manifest = Manifest.from_bytes(found[0])
    assert {entity: ids(rows) for entity, rows in published(storage, manifest).items()} == {
        entity: expected_ids(tree(30), entity) for entity in ENTITY_NAMES
    }
    assert {key: storage.stat(key) for key in files} == written  # verified and kept, not uploaded again


class _HoldingProxy(FaultyHttpProxy):
    """The fault proxy, holding the first request matching ``hold`` until the test sets
    ``release``; ``landed`` is set once that request has been forwarded and answered."""

    def __init__(self, target: str, hold: str) -> None:
        super().__init__(target)
        self._hold = re.compile(hold)
        self.release, self.landed = threading.Event(), threading.Event()

    def forward(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> tuple[int, Iterable[tuple[str, str]], bytes]:
        held = not self.landed.is_set() and self._hold.search(f"{method} {path}") is not None
        if held:
            self.release.wait(120)
        answer = super().forward(method, path, headers, body)
        if held:
            self.landed.set()
        return answer


def test_a_stale_writer_that_wakes_after_a_newer_run_published_changes_nothing(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    """RELIABILITY row 11. The stale run is frozen (SIGSTOP) while its upload of one file is
    held in the proxy; its lease expires, a newer run publishes the date, and the held upload
    then lands over the published file. The stale run, woken, must not publish: and the date
    must still be exactly what the newer run's manifest says."""
    topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(30))
    member_put = r"^PUT /[^ ]*/carecloud/2026-11-25/FamilyMember\.csv\.gz"
    storage = s3_storage(s3_server.url, s3_bucket)
    # Held until the newer run has published (lease expiry, 10 s TTL, plus that run), then let
    # through: released on that condition rather than after a fixed delay long enough for it.
    with _HoldingProxy(s3_server.url, member_put) as proxy:
        stale = _run_through(proxy, _command_env(kafka, tmp_path, topic, proxy.url, s3_bucket), member_put)
        stale.send_signal(signal.SIGSTOP)
        try:
            _wait_for_lease_expiry(storage)
            newer = _snapshot_command(_command_env(kafka, tmp_path, topic, s3_server.url, s3_bucket))
            assert newer.returncode == 0, newer.stdout + newer.stderr
            found = storage.get("carecloud/2026-11-25/_manifest.json")
            assert found is not None
            manifest_bytes = found[0]
            assert not proxy.landed.is_set(), "the held upload landed before the newer run published"
            proxy.release.set()
            assert proxy.landed.wait(60), "the held upload never landed"  # over the published file
        finally:
            proxy.release.set()
            stale.send_signal(signal.SIGCONT)
        output = stale.communicate(timeout=60)[0].decode()

    # The stale run found out that its lease was taken over and published nothing...
    assert stale.returncode == 1, output[-2000:]
    assert "error: the lease carecloud/2026-11-25/_lease.json was taken over" in output, output[-2000:]
    # ...at its first step after waking, not a renewal interval later: the file it was
    # uploading when frozen is its last, and it never reached Care, the next entity.
    assert "FamilyMember file written" in output
    assert "FamilyMember.csv.gz" in output  # the key, as a field of that line
    assert "Care.csv.gz" not in output
    found = storage.get("carecloud/2026-11-25/_manifest.json")
    assert found is not None
    assert found[0] == manifest_bytes
    manifest = Manifest.from_bytes(manifest_bytes)
    # Every file the manifest names is there with the size and sha256 it gives, the one the
    # stale run overwrote included: all runs of a date write the same bytes (its pinned cut).
    assert {entity: ids(rows) for entity, rows in published(storage, manifest).items()} == {
        entity: expected_ids(tree(30), entity) for entity in ENTITY_NAMES
    }
