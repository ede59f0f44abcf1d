"""The metrics: conventional names, safe labels, every dead-letter reason known, fresh registries."""

from __future__ import annotations

import ast
import datetime as dt
import math
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from connector.model import ENTITY_NAMES
from connector.ops.metrics import ALLOWED_LABELS, DLQ_REASONS, METRICS, Metrics, dlq_reason, status_class

CONNECTOR = Path(__file__).resolve().parents[3] / "connector"
DEAD_LETTER_STAGES = ("source", "mapping", "model", "state", "ingest")
"""The stages whose errors become dead letters (decode, map, validate, the ingest loop)."""


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_names_follow_prometheus_conventions() -> None:
    m = Metrics()
    families = list(m.registry.collect())
    assert families, "no metrics registered"
    for family in families:
        assert family.name.startswith("carecloud_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert not family.name.endswith(("_ms", "_milliseconds", "_minutes", "_hours")), family.name


def test_every_label_is_on_the_allow_list() -> None:
    m = Metrics()
    for family in m.registry.collect():
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= ALLOWED_LABELS, (family.name, sample.labels)


def test_fresh_registries_are_independent_of_each_other_and_of_the_default() -> None:
    a, b = Metrics(), Metrics()
    a.count_events("Claim", "upsert", 5)
    assert _value(a, "carecloud_events_consumed_total", entity="Claim", operation="upsert") == 5
    assert _value(b, "carecloud_events_consumed_total", entity="Claim", operation="upsert") == 0
    assert a.registry is not METRICS.registry
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("carecloud_ready") is None, "a metric leaked into the global registry"


def test_fixed_vocabulary_series_exist_at_zero_before_any_event() -> None:
    m = Metrics()
    for entity in ENTITY_NAMES:
        assert _value(m, "carecloud_events_consumed_total", entity=entity, operation="delete") == 0
        assert _value(m, "carecloud_delivered_records_total", route="api", entity=entity) == 0
    assert _value(m, "carecloud_snapshot_runs_total", outcome="failed") == 0
    assert _value(m, "carecloud_dlq_events_total", reason="missing_row") == 0
    assert _value(m, "carecloud_api_responses_total", status_class="5xx") == 0
    assert _value(m, "carecloud_ready") == 0
    assert math.isnan(_value(m, "carecloud_deadline_slack_seconds") or 0.0)


def test_helpers_refuse_values_that_are_not_in_the_vocabulary() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="entity"):
        m.count_events("FAM-123", "upsert")
    with pytest.raises(ValueError, match="operation"):
        m.count_events("Family", "merge")
    with pytest.raises(ValueError, match="route"):
        m.delivered("ftp", "Family", 1, 1)
    with pytest.raises(ValueError, match="outcome"):
        m.snapshot_finished("great")
    with pytest.raises(ValueError, match="phase"), m.time_phase("lunch"):
        pass
    with pytest.raises(ValueError, match="aware"):
        m.delivery_succeeded("Family", dt.datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_unknown_dead_letter_reasons_are_counted_as_other() -> None:
    m = Metrics()
    m.count_dead_letters("missing_row", 2)
    m.count_dead_letters("Jane Doe's claim 4711", 1)
    assert _value(m, "carecloud_dlq_events_total", reason="missing_row") == 2
    assert _value(m, "carecloud_dlq_events_total", reason="other") == 1
    assert "Jane" not in generate_latest(m.registry).decode()
    assert dlq_reason("oversized_record") == "oversized_record"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (204, "2xx"), (429, "4xx"), (503, "5xx"), (None, "error"), (42, "other")],
)
def test_status_class(status: int | None, expected: str) -> None:
    assert status_class(status) == expected


def test_delivery_snapshot_and_api_helpers() -> None:
    m = Metrics()
    m.delivered("s3", "Claim", 10_000, 2_345_678)
    m.delivery_succeeded("Claim", dt.datetime(2026, 3, 8, 10, 0, tzinfo=dt.UTC))
    m.api_response(503)
    m.api_retry(503)
    m.set_deadline_slack(-30.0)
    with m.time_phase("deliver"):
        pass
    assert _value(m, "carecloud_delivered_bytes_total", route="s3", entity="Claim") == 2_345_678
    assert _value(m, "carecloud_last_successful_delivery_timestamp_seconds", entity="Claim") == 1772964000
    assert _value(m, "carecloud_api_retries_total", status_class="5xx") == 1
    assert _value(m, "carecloud_deadline_slack_seconds") == -30
    assert _value(m, "carecloud_snapshot_phase_duration_seconds_count", phase="deliver") == 1
    m.observe_phases({"cut": 0.5, "read": 40.0, "publish": 0.2})
    assert _value(m, "carecloud_snapshot_phase_duration_seconds_sum", phase="read") == 40
    m.snapshot_finished("published")
    assert _value(m, "carecloud_snapshot_runs_total", outcome="published") == 1
    assert math.isnan(_value(m, "carecloud_deadline_slack_seconds") or 0.0), "slack outlives its run"
    m.snapshot_missed()
    assert _value(m, "carecloud_snapshot_missed_runs_total") == 1


def test_revoked_partitions_stop_reporting_lag_and_restore() -> None:
    m = Metrics()
    m.set_lag("db.public.claim", 3, 120)
    m.set_lag("db.public.claim", 4, -5)  # a racing high watermark never shows as negative lag
    m.restore_progress(3, 1000, 250)
    assert _value(m, "carecloud_consumer_lag_messages", topic="db.public.claim", partition="4") == 0
    assert _value(m, "carecloud_restore_records_total", partition="3") == 1000
    m.forget_partitions("db.public.claim", [3, 7])
    assert _value(m, "carecloud_consumer_lag_messages", topic="db.public.claim", partition="3") is None
    assert _value(m, "carecloud_restore_remaining_records", partition="3") is None
    assert _value(m, "carecloud_consumer_lag_messages", topic="db.public.claim", partition="4") == 0


def _reason_literals() -> set[str]:
    """Every dead-letter reason code a literal in those stages can produce (found by AST)."""
    found: set[str] = set()

    def consts(node: ast.AST | None) -> set[str]:
        if isinstance(node, ast.IfExp):  # "invalid_key" if where == "key" else "invalid_header"
            return consts(node.body) | consts(node.orelse)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        return set()

    positions = {"ConversionError": 0, "_Invalid": 0, "_null": -1, "_dead_letter": 4, "Cause": 1}
    paths = [CONNECTOR / "errors.py"]
    for stage in DEAD_LETTER_STAGES:
        paths += (CONNECTOR / stage).rglob("*.py")
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                found.update(*(consts(kw.value) for kw in node.keywords if kw.arg == "reason"))
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                where = positions.get(name or "")
                if where is not None and len(node.args) > max(where, -where - 1):
                    found |= consts(node.args[where])
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(
                    isinstance(t, ast.Name) and (t.id == "reason" or t.id.endswith("_REASON"))
                    for t in targets
                ):
                    found |= consts(node.value)
    return found


def test_every_dead_letter_reason_in_the_source_has_its_own_label() -> None:
    literals = _reason_literals()
    assert {"missing_row", "oversized_record", "decode_error", "unknown_enum_symbol"} <= literals
    assert literals - DLQ_REASONS == set(), "add these reason codes to connector.ops.metrics.DLQ_REASONS"
    assert DLQ_REASONS - literals == {"other"}, "no code raises these any more: drop them from DLQ_REASONS"


def test_the_docstring_table_lists_every_metric() -> None:
    import connector.ops.metrics as module

    table = module.__doc__ or ""
    for family in Metrics().registry.collect():
        exported = family.name + "_total" if family.type == "counter" else family.name
        assert f"\n{exported} " in table, exported


def test_the_sweep_sets_every_entity_and_the_partitions_waiting() -> None:
    metrics = Metrics()
    metrics.set_sweep({"EOP": 2}, 3)
    value = metrics.registry.get_sample_value
    assert value("carecloud_snapshot_swept_records", {"entity": "EOP"}) == 2
    assert value("carecloud_snapshot_swept_records", {"entity": "Claim"}) == 0
    assert value("carecloud_snapshot_sweep_waiting_partitions") == 3
    metrics.set_sweep({}, 0)  # the next cut swept nothing: the gauges say so, not last night's
    assert value("carecloud_snapshot_swept_records", {"entity": "EOP"}) == 0
