"""OpsSettings: read from CARECLOUD_OPS_*, and its problems reported with every other setting's."""

from __future__ import annotations

import pytest

from connector.config import SettingsError
from connector.config.settings import OpsSettings, load_settings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OpsSettings().http_port == 8080
    monkeypatch.setenv("CARECLOUD_OPS_HTTP_PORT", "9100")
    monkeypatch.setenv("CARECLOUD_OPS_LOG_FORMAT", "text")
    monkeypatch.setenv("CARECLOUD_OPS_LOG_LEVEL", "DEBUG")
    ops = OpsSettings()
    assert (ops.http_port, ops.log_format, ops.log_level) == (9100, "text", "DEBUG")


def test_problems_are_collected_with_the_other_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARECLOUD_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("CARECLOUD_OPS_LOG_FORMAT", "xml")
    monkeypatch.setenv("CARECLOUD_OPS_HTTP_PORT", "70000")
    with pytest.raises(SettingsError) as info:
        load_settings(ingest={"mapping_file": "m.yaml"})
    text = str(info.value)
    assert "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS" in text
    assert "CARECLOUD_OPS_LOG_FORMAT" in text
    assert "CARECLOUD_OPS_HTTP_PORT" in text
