"""Fixtures shared by the integration tests beyond the session-wide ones in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.devtools.s3_server import S3Endpoint
from connector.sinks.s3 import S3Storage
from tests.integration.portal_sim import Simulator, run_simulator


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
