"""Session-wide fixtures that own the Kafka brokers.

Fixtures are lazy: a unit test that asks for none of them never fetches jars or starts Java.
``KAFKA_BOOTSTRAP`` points the ``kafka`` fixture at a broker someone else runs (a developer's
long-lived ``python -m connector.devtools.kafka run``), which saves the start-up per session.
Tests that kill or restart a broker get their own from ``kafka_broker_factory``, so the
session broker every other test shares is never disturbed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.devtools.kafka import KafkaBroker
from tests.kafka_helpers import KafkaTestCluster

BrokerFactory = Callable[..., KafkaBroker]


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
