"""``CARECLOUD_INGEST_DLQ_RETENTION_MS``: the dead letters are raw health data, kept a week by
default and never beyond 30 days (issue 16)."""

from __future__ import annotations

import os

import pytest

from connector.config import SettingsError, load_settings

WEEK_MS = 7 * 24 * 3600 * 1000


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: a developer's CARECLOUD_* variables must not leak in."""
    for name in os.environ:
        if name.upper().startswith("CARECLOUD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CARECLOUD_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("CARECLOUD_INGEST_MAPPING_FILE", "mapping.yaml")


def test_the_dlq_retention_defaults_to_a_week() -> None:
    assert load_settings().ingest.dlq_retention_ms == WEEK_MS


def test_the_dlq_retention_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECLOUD_INGEST_DLQ_RETENTION_MS", str(2 * 24 * 3600 * 1000))
    assert load_settings().ingest.dlq_retention_ms == 2 * 24 * 3600 * 1000


@pytest.mark.parametrize("value", ["-1", "0", "60000", str(31 * 24 * 3600 * 1000)])
def test_forever_minutes_or_beyond_30_days_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CARECLOUD_INGEST_DLQ_RETENTION_MS", value)
    with pytest.raises(SettingsError, match="CARECLOUD_INGEST_DLQ_RETENTION_MS"):
        load_settings()


def test_a_lower_file_threshold_alone_is_valid_and_a_return_bound_above_it_is_named() -> None:
    """Routing hysteresis follows the threshold unless set: the demo's threshold of 300 alone
    must start (it did not when the bound defaulted to a fixed 4500)."""
    from connector.config.settings import SnapshotSettings, sink_problems

    alone = SnapshotSettings(file_threshold=300)
    assert not [p for p in sink_problems(alone, None, None) if "API_RETURN_BELOW" in p]
    above = SnapshotSettings(file_threshold=300, api_return_below=301)
    assert any(p.startswith("CARECLOUD_SNAPSHOT_API_RETURN_BELOW") for p in sink_problems(above, None, None))


def test_the_state_topics_replication_defaults_to_three_with_two_in_sync() -> None:
    """Issue 21: the state topic is the source of truth; one broker's disk must not lose it."""
    ingest = load_settings().ingest
    assert (ingest.replication_factor, ingest.min_insync_replicas) == (3, 2)


def test_a_min_insync_above_the_replication_factor_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECLOUD_INGEST_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("CARECLOUD_INGEST_MIN_INSYNC_REPLICAS", "3")
    with pytest.raises(SettingsError, match="CARECLOUD_INGEST_MIN_INSYNC_REPLICAS: must be at most"):
        load_settings()
