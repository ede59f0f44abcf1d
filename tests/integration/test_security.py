"""The ingest command over SASL_SSL (SCRAM-SHA-512, a test CA), configured by environment only.

Against the project's own broker started with ``sasl_ssl=True`` (the ``kafka_sasl`` fixture):
the connector ingests the synthetic stream into exactly the generator's expected state, and a
wrong password stops it at start-up with a message that names authentication, not the password.
OAUTHBEARER (librdkafka's OIDC client credentials) needs an identity provider, which this
environment does not run: its settings are unit-tested in tests/unit/config/.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connector.devtools.synthetic import generate
from tests.integration.ops_helpers import (
    ConnectorProcess,
    create_topics,
    expected_rows,
    produce,
    wait_caught_up,
)
from tests.integration.state_helpers import live_rows, read_state
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAPPING = (ROOT / "examples" / "mapping.yaml").read_text()
PARTITIONS = 3
START_UP_BOUND_S = 15.0
"""A wrong password must end the process well within this; the connector's own timeouts are 30 s."""


def _sasl_env(kafka: KafkaTestCluster, password: str) -> dict[str, str]:
    """The CARECLOUD_KAFKA_* variables a pod would get from its ConfigMap and Secret."""
    config = kafka.config()
    return {
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": config["bootstrap.servers"],
        "CARECLOUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CARECLOUD_KAFKA_SASL_MECHANISM": config["sasl.mechanism"],
        "CARECLOUD_KAFKA_SASL_USERNAME": config["sasl.username"],
        "CARECLOUD_KAFKA_SASL_PASSWORD": password,
        "CARECLOUD_KAFKA_SSL_CA_LOCATION": config["ssl.ca.location"],
    }


def _ingest_env(kafka: KafkaTestCluster, tmp_path: Path, prefix: str, password: str) -> dict[str, str]:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.replace("benefits.public.", prefix))
    return {
        **_sasl_env(kafka, password),
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_GROUP_ID": unique("sasl"),
        "CARECLOUD_INGEST_STATE_TOPIC": unique("state"),
        "CARECLOUD_INGEST_DLQ_TOPIC": unique("dlq"),
        "CARECLOUD_INGEST_STATE_DIR": str(tmp_path / "store"),
        "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique("txn"),
        "CARECLOUD_OPS_HTTP_HOST": "127.0.0.1",
        "CARECLOUD_OPS_HTTP_PORT": "0",
    }


def test_ingest_over_sasl_ssl_reaches_the_expected_state(
    kafka_sasl: KafkaTestCluster, tmp_path: Path
) -> None:
    password = kafka_sasl.config()["sasl.password"]
    prefix = unique("sasl") + ".public."
    stream = generate(40, seed=4, topic_prefix=prefix)
    create_topics(kafka_sasl.config(), stream.topics, PARTITIONS)
    total = produce(kafka_sasl.config(), stream)
    env = _ingest_env(kafka_sasl, tmp_path, prefix, password)

    ingest = ConnectorProcess(["ingest"], env, tmp_path, "ingest")
    try:
        ingest.wait_for_port()
        group = env["CARECLOUD_INGEST_GROUP_ID"]
        wait_caught_up(kafka_sasl.config(), group, stream.topics, PARTITIONS, ingest)
        assert ingest.get("/readyz")[0] == 200
    finally:
        code, _ = ingest.terminate()
    assert code == 0, ingest.output()
    assert f"stopped after {total} events" in ingest.stdout

    state = read_state(kafka_sasl, env["CARECLOUD_INGEST_STATE_TOPIC"], PARTITIONS)
    assert live_rows(state) == expected_rows(stream)
    assert password not in ingest.stdout + ingest.stderr


def test_a_wrong_password_fails_at_start_up_naming_authentication(
    kafka_sasl: KafkaTestCluster, tmp_path: Path
) -> None:
    right = kafka_sasl.config()["sasl.password"]
    wrong = "not-the-password-" + unique("pw")
    prefix = unique("badpw") + ".public."
    stream = generate(1, topic_prefix=prefix)
    create_topics(kafka_sasl.config(), stream.topics, 1)
    env = _ingest_env(kafka_sasl, tmp_path, prefix, wrong)

    ingest = ConnectorProcess(["ingest"], env, tmp_path, "ingest")
    started = time.monotonic()
    try:
        code = ingest.process.wait(START_UP_BOUND_S)
    except Exception:
        ingest.kill()
        raise AssertionError(
            f"still running {START_UP_BOUND_S:.0f} s after start\n{ingest.output()}"
        ) from None
    elapsed = time.monotonic() - started

    assert code != 0
    assert elapsed < START_UP_BOUND_S
    assert "health and metrics on port" not in ingest.stdout, "it must not start with bad credentials"
    error = [line for line in ingest.stderr.splitlines() if line.startswith("error:")]
    assert error, ingest.output()
    assert "authentication" in error[-1].lower(), error[-1]
    assert "Traceback" not in ingest.stderr
    output = ingest.stdout + ingest.stderr
    assert wrong not in output
    assert right not in output
