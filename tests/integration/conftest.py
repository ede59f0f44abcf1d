"""Fixtures shared by the integration tests beyond the session-wide ones in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.portal_sim import Simulator, run_simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """The Portal simulator command, one per test module (tests use their own dates)."""
    yield from run_simulator()
