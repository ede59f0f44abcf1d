"""Fixtures shared by the integration tests beyond the session-wide ones in ``tests/conftest.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from connector.devtools.debezium import ConnectWorker
from connector.devtools.kafka_cluster import KafkaCluster
from connector.devtools.postgres import PostgresServer
from connector.devtools.s3_server import S3Endpoint
from connector.sinks.s3 import S3Storage
from tests.integration.portal_sim import Simulator, run_simulator
from tests.kafka_helpers import KafkaTestCluster


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """The Portal simulator command, one per test module (tests use their own dates)."""
    yield from run_simulator()


@pytest.fixture
def moto_storage(s3_server: S3Endpoint, s3_bucket: str) -> S3Storage:
    """The connector's S3 storage on a fresh bucket of the shared moto server (over HTTP)."""
    return S3Storage(
        s3_bucket,
        region="us-east-1",
        endpoint_url=s3_server.url,
        access_key_id="testing",
        secret_access_key="testing",
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server (logical decoding on) for the test run, with an empty ``source``
    database; tests create their tables in a schema of their own."""
    with PostgresServer() as server:
        server.create_database("source")
        yield server


@pytest.fixture
def schema(postgres: PostgresServer) -> Iterator[str]:
    """A schema of the test's own in the ``source`` database, dropped with its tables after it."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    postgres.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE", "source")


@pytest.fixture(scope="session")
def debezium(kafka: KafkaTestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectWorker]:
    """One Kafka Connect standalone worker with Debezium for the test run, on the shared broker.
    Tests register their own connectors (``postgres_connector``: own topic prefix, slot and
    publication) and remove them when done."""
    with ConnectWorker(kafka.bootstrap, tmp_path_factory.mktemp("connect")) as worker:
        yield worker


@pytest.fixture(scope="session")
def _kafka_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """The three-node KRaft cluster, started once, when the first cluster test asks for it;
    killed at the end (its data is thrown away: a clean shutdown of three nodes cost 19 s)."""
    cluster = KafkaCluster(3, tmp_path_factory.mktemp("cluster"), heap="320m")
    try:
        yield cluster.start()
    finally:
        cluster.close(graceful=False)


@pytest.fixture
def kafka_cluster(_kafka_cluster_session: KafkaCluster) -> Iterator[KafkaCluster]:
    """The three-node cluster, for the fault tests only (``tests/integration/test_cluster_*``):
    every node up and every replica in sync when the test starts and again after it, whatever
    the test killed, paused or stopped on the way (its helpers are the nodes' own: ``node(i)``
    ``.kill()``, ``.stop()``, ``.pause()``, ``.resume()``, ``.restart()``)."""
    _kafka_cluster_session.heal()
    yield _kafka_cluster_session
    _kafka_cluster_session.heal()
