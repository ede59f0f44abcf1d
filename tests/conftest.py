"""Session-wide fixtures that own the Kafka brokers.

Fixtures are lazy: a unit test that asks for none of them never fetches jars or starts Java.
``KAFKA_BOOTSTRAP`` points the ``kafka`` fixture at a broker someone else runs (a developer's
long-lived ``python -m connector.devtools.kafka run``), which saves the start-up per session.
Tests that kill or restart a broker get their own from ``kafka_broker_factory``, so the
session broker every other test shares is never disturbed.
``S3_ENDPOINT`` does the same for ``s3_server`` (``python -m connector.devtools.s3_server run``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from connector._fastpath import fastpath_available
from connector.devtools.kafka import KafkaBroker
from connector.devtools.s3_server import S3Endpoint, S3Server
from connector.devtools.sftp_server import SftpServer
from tests.kafka_helpers import KafkaTestCluster

BrokerFactory = Callable[..., KafkaBroker]

# Properties are about behaviour, not speed: Hypothesis's default 200 ms deadline per example
# fails a correct example on a loaded 2-core runner (seen beside a running broker).
settings.register_profile("project", deadline=None)
settings.load_profile("project")
# Profiles by where the suite runs, both on "project" (no deadline): `dev` keeps Hypothesis's
# random search and its example database; `ci` (the CI variable set, as .ci/run does) is
# derandomized, so a failure in CI replays the same way on a laptop (the examples stay at the
# default: the suite's time on a 2-core runner is budgeted). HYPOTHESIS_PROFILE picks one.
settings.register_profile("dev", parent=settings.get_profile("project"))
settings.register_profile("ci", parent=settings.get_profile("project"), derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# Set by .ci/run: there the extension is built, so a missing one is a broken build, not a choice.
REQUIRE_FASTPATH = "CARECLOUD_REQUIRE_FASTPATH"
_NOT_RUN = pytest.StashKey[tuple[int, str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the compiled extension, leave out the tests that hold it to the Python path.

    A machine without Rust still runs everything else (the connector falls back to the Python
    path); what was left out is counted and said, with the reason, at the end of the run, never
    passed over silently. Where ``CARECLOUD_REQUIRE_FASTPATH`` is set (CI), a missing extension
    stops the run instead, so CI never proves less than it did.
    """
    missing = fastpath_available()
    if missing is None:
        return
    needs = [item for item in items if item.get_closest_marker("fastpath") is not None]
    if not needs:
        return
    if os.environ.get(REQUIRE_FASTPATH):
        raise pytest.UsageError(f"{REQUIRE_FASTPATH} is set but {missing}: run `make venv` with cargo")
    config.hook.pytest_deselected(items=needs)
    items[:] = [item for item in items if item.get_closest_marker("fastpath") is None]
    config.stash[_NOT_RUN] = (len(needs), missing)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Name the extension's tests that did not run, and why, where nobody can miss it."""
    not_run = config.stash.get(_NOT_RUN, None)
    if not_run is not None:
        count, missing = not_run
        terminalreporter.write_sep("=", f"{count} fastpath tests NOT RUN", yellow=True)
        terminalreporter.write_line(
            f"{count} tests hold the compiled fast path to the Python path; {missing}. "
            "Install Rust (cargo, from rustup) and run `make venv` to build it and run them."
        )


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaTestCluster]:
    """The shared PLAINTEXT cluster: ``KAFKA_BOOTSTRAP`` if set, else one broker per session."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if bootstrap:
        yield KafkaTestCluster({"bootstrap.servers": bootstrap})
        return
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield KafkaTestCluster.for_broker(broker)


@pytest.fixture(scope="session")
def kafka_sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaTestCluster]:
    """A SCRAM-SHA-512 over TLS cluster, started only when a test asks for it.

    ``wrong_password_config()`` on it gives the settings for authentication-failure tests.
    """
    with KafkaBroker(tmp_path_factory.mktemp("kafka-sasl"), sasl_ssl=True) as broker:
        yield KafkaTestCluster.for_broker(broker)


@pytest.fixture
def kafka_broker_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start private brokers (``KafkaBroker`` keyword arguments) that this test may kill at will."""
    brokers: list[KafkaBroker] = []

    def start(**kwargs: Any) -> KafkaBroker:
        broker = KafkaBroker(tmp_path / f"broker-{len(brokers)}", **kwargs)
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.close(graceful=False)


@pytest.fixture
def kafka_broker(kafka_broker_factory: BrokerFactory) -> KafkaBroker:
    """One private PLAINTEXT ``KafkaBroker`` for kill/restart tests."""
    return kafka_broker_factory()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """The shared S3 endpoint: ``S3_ENDPOINT`` if set, else one moto server per session."""
    url = os.environ.get("S3_ENDPOINT")
    if url:
        yield S3Endpoint(
            url,
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        )
        return
    with S3Server() as server:
        yield server.endpoint


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> Iterator[str]:
    """A fresh, uniquely named bucket, emptied and deleted afterwards (the server is shared)."""
    client = s3_server.client()
    name = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    """One OpenSSH ``sshd`` serving SFTP on loopback for the session (as the current user)."""
    with SftpServer(tmp_path_factory.mktemp("sftp")) as server:
        yield server


@pytest.fixture
def sftp_root(sftp_server: SftpServer) -> Path:
    """A fresh, uniquely named directory on the shared SFTP server, for one test's keys."""
    root = sftp_server.root_dir / f"test-{uuid.uuid4().hex[:16]}"
    root.mkdir()
    return root
