"""`make demo`'s program end to end at a small scale, checked against the generator's answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from connector._fastpath import fastpath_available
from connector.devtools.s3_server import S3Endpoint
from connector.devtools.synthetic import generate
from connector.snapshot.manifest import Manifest
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

SCALE, THRESHOLD = 120, 300  # small, with a threshold low enough that both routes are used


def _without_extension(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import carecloud_fastpath`` fails as on a machine without Rust.

    A package of that name first on ``PYTHONPATH`` raises ``ImportError`` when imported, which is
    what the connector sees where the extension was never built (``make venv`` without cargo).
    """
    shim = tmp_path / "no-extension" / "carecloud_fastpath"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("not built: no cargo on this machine")\n')
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), *sys.path])}


@pytest.mark.parametrize("extension", ["as built", "absent"])
def test_the_demo_delivers_exactly_the_expected_state(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, tmp_path: Path, extension: str
) -> None:
    command = [sys.executable, "-m", "connector.devtools.demo", "--scale", str(SCALE), "--json",
               "--file-threshold", str(THRESHOLD),
               "--bootstrap", kafka.bootstrap, "--s3-endpoint", s3_server.url]  # fmt: skip
    env = _without_extension(tmp_path) if extension == "absent" else None
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    built = extension == "as built" and fastpath_available() is None
    assert summary["fast_path"] == ("compiled" if built else "python")
    assert summary["dead_letters"] == summary["expected_dead_letters"] > 0
    # Independently of the demo's own check: the manifest in S3 has the generator's counts.
    bucket, key = summary["manifest"].removeprefix("s3://").split("/", 1)
    manifest = Manifest.from_bytes(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    expected = generate(SCALE).expected_counts()
    assert {r.entity: r.records for r in manifest.entities} == expected
    routes = {r.entity: r.route for r in manifest.entities}
    assert routes == {e: "file" if n > THRESHOLD else "api" for e, n in expected.items()}
    assert {"file", "api"} <= set(routes.values())
    assert all(r.status == "delivered" for r in manifest.entities)
    assert "Traceback" not in done.stderr
