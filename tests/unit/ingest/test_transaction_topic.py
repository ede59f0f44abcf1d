"""The mapping's ``transactions.topic`` at ingest start-up (issue 19): a topic that does not
exist is refused by the setting's name, and the ledger's purge horizon is on only with it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from connector.config import load_settings
from connector.errors import ConfigError
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping

EXAMPLE = (Path(__file__).parents[3] / "examples" / "mapping.yaml").read_text()
TRACKED = EXAMPLE + "transactions:\n  topic: benefits.transaction\n"


def _service(tmp_path: Path, mapping: str) -> IngestService:
    settings = load_settings(
        kafka={"bootstrap_servers": "localhost:1"},  # never contacted: nothing here starts
        ingest={"mapping_file": "unused.yaml", "state_dir": tmp_path, "fast_path": "off"},
    )
    return IngestService(settings, parse_mapping(mapping))


class _Admin:
    def __init__(self, *topics: str) -> None:
        self._topics = dict.fromkeys(topics, object())

    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(topics=self._topics)


def test_a_missing_transaction_topic_is_refused_naming_the_setting(tmp_path: Path) -> None:
    service = _service(tmp_path, TRACKED)
    with pytest.raises(ConfigError, match=r"transactions\.topic 'benefits\.transaction' does not exist"):
        service._check_transaction_topic(_Admin("benefits.public.family"))
    service._check_transaction_topic(_Admin("benefits.transaction"))


def test_the_ledger_purge_runs_only_with_tracking_on(tmp_path: Path) -> None:
    assert _service(tmp_path, TRACKED).purge.ledger_horizon_ms == 7 * 86_400_000
    assert _service(tmp_path, EXAMPLE).purge.ledger_horizon_ms == 0
    assert _service(tmp_path, EXAMPLE).transaction_topic is None
