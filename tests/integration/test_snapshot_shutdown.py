"""SIGTERM during a scheduled snapshot: the run stops at a safe point and frees its lease (issue 17).

Before, the scheduler ran on a daemon thread that died with the process, so the date's lease
stayed held until its TTL expired and another pod had to wait it out. Here the ingest process
runs today's snapshot with the Portal route slowed down by the simulator; it gets SIGTERM while
delivering, exits 0 within the grace period, leaves the lease expired and publishes nothing; a
`snapshot` command started right after takes the date at once and publishes it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from connector.devtools.s3_server import S3Endpoint
from connector.devtools.synthetic import generate
from tests.integration.ops_helpers import (
    ConnectorProcess,
    create_topics,
    local_today,
    produce,
    s3_env,
    wait_caught_up,
    window_around_now,
)
from tests.integration.portal_sim import KEY, Simulator
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2


def test_sigterm_mid_run_stops_at_a_safe_point_and_frees_the_lease(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, sim: Simulator, tmp_path: Path
) -> None:
    prefix = unique("stop") + ".public."
    stream = generate(12, seed=17, topic_prefix=prefix)
    create_topics(kafka.config(), stream.topics, PARTITIONS)
    produce(kafka.config(), list(stream))
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text((ROOT / "examples" / "mapping.yaml").read_text().replace("benefits.public.", prefix))
    bucket = unique("stop")
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    window = window_around_now()
    env = {
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_GROUP_ID": unique("stop"),
        "CARECLOUD_INGEST_STATE_TOPIC": unique("state"),
        "CARECLOUD_INGEST_DLQ_TOPIC": unique("dlq"),
        "CARECLOUD_INGEST_STATE_DIR": str(tmp_path / "store"),
        "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique("txn"),
        "CARECLOUD_OPS_HTTP_HOST": "127.0.0.1",
        "CARECLOUD_OPS_HTTP_PORT": "0",
        "CARECLOUD_SNAPSHOT_ENABLED": "true",
        "CARECLOUD_SNAPSHOT_SINK": "s3",
        "CARECLOUD_SNAPSHOT_API_ENABLED": "true",
        "CARECLOUD_SNAPSHOT_LAG_POLICY": "wait",
        "CARECLOUD_SNAPSHOT_LEASE_TTL_S": "600",  # long: only a release frees it within the test
        "CARECLOUD_SNAPSHOT_WORK_DIR": str(tmp_path / "work"),
        "CARECLOUD_PORTAL_BASE_URL": sim.url,
        "CARECLOUD_PORTAL_API_KEY": KEY,
        **s3_env(s3_server, bucket),
        **window,
    }
    day = local_today(window["CARECLOUD_SNAPSHOT_ZONE"])
    lease_key = f"carecloud/{day.isoformat()}/_lease.json"
    manifest_key = f"carecloud/{day.isoformat()}/_manifest.json"
    sim.faults({"on": "put_batch", "action": "slow", "delay": 1.0, "times": 1000})  # each batch takes 1 s
    ingest = ConnectorProcess(["ingest"], env, tmp_path, "ingest")
    try:
        ingest.wait_for_port()
        wait_caught_up(kafka.config(), env["CARECLOUD_INGEST_GROUP_ID"], stream.topics, PARTITIONS, ingest)
        deadline = time.monotonic() + 120
        while sim.stats()["in_flight"] == 0:  # the run is delivering: a batch is in the Portal
            assert ingest.process.poll() is None, ingest.output()
            assert time.monotonic() < deadline, f"the run never reached the Portal\n{ingest.output()}"
            time.sleep(0.05)
        code, took = ingest.terminate(90)
    finally:
        ingest.kill()
    assert code == 0, ingest.output()
    assert "stopped for shutdown" in ingest.stderr, ingest.output()
    lease = orjson.loads(s3.get_object(Bucket=bucket, Key=lease_key)["Body"].read())
    assert dt.datetime.fromisoformat(lease["expires_at"]) <= dt.datetime.now(dt.UTC)  # released
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=manifest_key)  # nothing published

    sim.clear()
    command = [sys.executable, "-m", "connector.cli", "snapshot", "--date", day.isoformat()]
    resumed = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr  # no LeaseBusy: taken at once
    assert "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=manifest_key)
    assert took < 90
