"""``snapshot --dry-run`` with every route on: nothing reaches the Portal or the bucket (issue 17).

The command runs as operators run it (a subprocess, settings from the environment) against the
real broker, moto's S3 server over HTTP and the Portal simulator. A real run publishes the day
before, so the dry run has a real baseline to read: its count gate blocks a Family drop (exit 4)
and a date already published is reported as such, while the simulator's request counter and the
bucket's object list stay exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.devtools.s3_server import S3Endpoint
from connector.model import ENTITY_NAMES
from tests.integration.ops_helpers import create_topics, s3_env
from tests.integration.portal_sim import KEY, Simulator, next_day
from tests.integration.snapshot_helpers import delete_rows, record, seed_state
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "connector.cli", "snapshot", *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL
    )


def test_a_dry_run_with_every_route_on_touches_nothing_and_uses_the_real_baseline(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, sim: Simulator, tmp_path: Path
) -> None:
    state_topic = kafka.new_topic(2, {"cleanup.policy": "compact"}, prefix="state")
    prefix = unique("dry") + ".public."
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text((ROOT / "examples" / "mapping.yaml").read_text().replace("benefits.public.", prefix))
    tables = ("family", "provider", "family_member", "care_episode", "claim", "payment")
    create_topics(kafka.config(), [prefix + table for table in tables], 1)  # empty: no lag to wait for
    families = {f"FAM-{n:07d}": record("Family", n) for n in range(10)}
    seed_state(kafka, state_topic, {entity: {} for entity in ENTITY_NAMES} | {"Family": families})
    bucket = unique("dry")
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CARECLOUD_")},
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_GROUP_ID": unique("dry"),
        "CARECLOUD_INGEST_STATE_TOPIC": state_topic,
        "CARECLOUD_SNAPSHOT_SINK": "s3",
        "CARECLOUD_SNAPSHOT_API_ENABLED": "true",
        "CARECLOUD_SNAPSHOT_LAG_POLICY": "go",
        "CARECLOUD_SNAPSHOT_WORK_DIR": str(tmp_path / "work"),
        "CARECLOUD_PORTAL_BASE_URL": sim.url,
        "CARECLOUD_PORTAL_API_KEY": KEY,
        **s3_env(s3_server, bucket),
    }
    yesterday = next_day()
    today = yesterday + dt.timedelta(days=1)
    real = _snapshot(env, "--date", yesterday.isoformat())
    assert real.returncode == 0, real.stdout + real.stderr
    assert sim.accepted("Family", yesterday)["records"]  # the real run did reach the Portal

    def bucket_keys() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))

    before_keys, before_requests = bucket_keys(), sim.stats()["requests"]
    delete_rows(kafka, state_topic, [("Family", f"FAM-{n:07d}") for n in range(2, 10)])  # 10 -> 2
    out = tmp_path / "out"

    dry = _snapshot(env, "--date", today.isoformat(), "--dry-run", "--out", str(out), "--json")

    assert dry.returncode == 4, dry.stdout + dry.stderr  # partial: Family blocked by the real baseline
    manifest = json.loads(dry.stdout)
    family = next(e for e in manifest["entities"] if e["entity"] == "Family")
    assert family["status"] == "blocked"
    # What changed since the real delivery, compared with the digest it stored in the bucket.
    assert family["changes"] == {
        "since": yesterday.isoformat(),
        "added": 0,
        "removed": 8,
        "changed": 0,
        "unchanged": 2,
    }
    assert sim.stats()["requests"] == before_requests + 1  # our own stats call only: no API request
    assert bucket_keys() == before_keys  # no lease, cut, report, file or manifest in the bucket
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".meta" not in p.name)
    assert any(p.endswith("_manifest.json") for p in written), written
    assert any(p.endswith("_digest.Provider.bin.gz") for p in written), written  # delivered: digested

    again = _snapshot(env, "--date", yesterday.isoformat(), "--dry-run", "--out", str(tmp_path / "out2"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already_published" in again.stdout  # it read the real manifest of that date
    assert bucket_keys() == before_keys
    assert sim.stats()["requests"] == before_requests + 2

    # For real, before the date's decision time, the blocked Family holds the date open (exit 5):
    # Provider goes to the Portal now, and no manifest tells CareCloud the date exists yet.
    held = _snapshot(env, "--date", today.isoformat())
    assert held.returncode == 5, held.stdout + held.stderr
    assert "held, no manifest yet: Family, FamilyMember, Care, Claim, EOP blocked or refused" in held.stdout
    assert not any(k.endswith(f"{today.isoformat()}/_manifest.json") for k in bucket_keys())
    # On-call decides not to wait: --final publishes the date without Family (exit 4, partial).
    final = _snapshot(env, "--date", today.isoformat(), "--final")
    assert final.returncode == 4, final.stdout + final.stderr
    assert any(k.endswith(f"{today.isoformat()}/_manifest.json") for k in bucket_keys())
