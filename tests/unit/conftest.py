"""Unit tests run the CLI's ``main`` and ``configure_logging`` in process: each gets the
process's logging back as it found it, so no test sees the handler or levels another set."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

_NOISY = ("botocore", "boto3", "urllib3", "paramiko", "httpx", "httpcore")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, levels = list(root.handlers), {name: logging.getLogger(name).level for name in ("", *_NOISY)}
    yield
    root.handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
