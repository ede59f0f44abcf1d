"""``ingest.fast_path``: auto uses the extension when it loads, on insists, off never uses it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.errors import ConfigError
from connector.ingest import service as ingest
from connector.ingest.service import IngestService
from connector.mapping import load_mapping

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"


def _service(tmp_path: Path, fast_path: str) -> IngestService:
    settings = load_settings(
        kafka={"bootstrap_servers": "localhost:1"},  # never contacted: nothing here starts
        ingest={"mapping_file": str(EXAMPLE), "state_dir": tmp_path, "fast_path": fast_path},
    )
    return IngestService(settings, load_mapping(EXAMPLE))


@pytest.mark.fastpath
def test_auto_and_on_compile_every_debezium_json_topic_and_off_none(tmp_path: Path) -> None:
    topics = set(load_mapping(EXAMPLE).topics)
    assert set(_service(tmp_path, "auto").fast) == topics
    assert set(_service(tmp_path, "on").fast) == topics
    assert _service(tmp_path, "off").fast == {}


def test_without_the_extension_auto_warns_and_on_refuses_to_start_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        ingest, "fastpath_available", lambda: "the carecloud_fastpath extension is not installed"
    )
    with caplog.at_level(logging.WARNING, logger=ingest.log.name):
        assert _service(tmp_path, "auto").fast == {}
    assert "compiled fast path unavailable" in caplog.text
    with pytest.raises(
        ConfigError, match="CARECLOUD_INGEST_FAST_PATH=on, but the carecloud_fastpath extension"
    ):
        _service(tmp_path, "on")
