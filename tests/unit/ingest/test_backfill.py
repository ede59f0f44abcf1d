"""``backfill``: which tables may be asked for, the signal Debezium's Kafka channel accepts, and
a dry run that connects to nothing (issue 20)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connector.cli import build_parser, main
from connector.errors import ConfigError
from connector.ingest.backfill import format_plan, plan_backfill
from connector.mapping import MappingSpec, load_mapping, parse_mapping

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "mapping.yaml"


def test_a_mapped_table_becomes_one_execute_snapshot_signal_keyed_by_the_topic_prefix() -> None:
    plan = plan_backfill(load_mapping(EXAMPLE), ["public.payment", "public.claim", "public.payment"])
    signal = plan.signal
    assert (signal.topic, signal.key, signal.tables) == (
        "benefits-signal",
        b"benefits",
        ("public.payment", "public.claim"),
    )
    doc = orjson.loads(signal.value)
    assert doc["type"] == "execute-snapshot"
    # regular expressions matched against whole table ids: the dot is escaped
    assert doc["data"] == {"data-collections": ["public\\.payment", "public\\.claim"], "type": "INCREMENTAL"}
    assert doc["id"].startswith("carecloud-backfill-")
    assert plan.entities == {"public.payment": "EOP", "public.claim": "Claim"}
    assert plan.warnings == []


def test_a_table_not_in_the_mapping_is_refused_naming_it_and_the_mapped_ones() -> None:
    with pytest.raises(ConfigError) as info:
        plan_backfill(load_mapping(EXAMPLE), ["public.claim", "public.debezium_signal", "audit.log"])
    message = str(info.value)
    assert "nothing sent" in message
    assert "public.debezium_signal, audit.log not in the mapping" in message
    assert "public.family_member" in message  # what the mapping has
    with pytest.raises(ConfigError, match="name at least one table"):
        plan_backfill(load_mapping(EXAMPLE), [" "])


MAPPING = """\
version: 1
topics:
  {topics}
tables:
  public.family:
    entity: Family
    entity_id: "FAM-{{family_id}}"
    fields: {{FamilyName: family_name, Status: {{const: ACTIVE}}, PlanCode: plan_code,
             CoverageStartDate: coverage_start, DeductibleAmount: deductible, UpdatedAt: updated_at}}
"""


def _spec(*topics: str) -> MappingSpec:
    return parse_mapping(
        MAPPING.format(topics="\n  ".join(f"{t}: {{format: debezium-json}}" for t in topics))
    )


def test_the_topic_prefix_comes_from_the_mapping_or_must_be_given() -> None:
    spec = _spec("a.public.family", "b.public.family")
    with pytest.raises(ConfigError, match="prefixes found: a, b"):
        plan_backfill(spec, ["public.family"])
    plan = plan_backfill(spec, ["public.family"], topic_prefix="b", signal_topic="dbz.signals")
    assert (plan.signal.connector, plan.signal.topic, plan.warnings) == ("b", "dbz.signals", [])
    # A prefix whose default topic the mapping does not list: said before anything is sent.
    plan = plan_backfill(spec, ["public.family"], topic_prefix="c")
    assert len(plan.warnings) == 1
    assert "topic c.public.family is not under the mapping's topics" in plan.warnings[0]
    assert "warning: topic c.public.family" in format_plan(plan)


def test_dry_run_prints_the_signal_and_loads_no_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No CARECLOUD_* variable at all: a dry run with --mapping never reads settings or Kafka."""
    monkeypatch.delenv("CARECLOUD_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["backfill", "--mapping", str(EXAMPLE), "--dry-run", "public.claim"]) == 0
    out = capsys.readouterr().out
    assert "signal topic benefits-signal partition 0" in out
    assert "key:   benefits" in out
    assert '"data-collections":["public\\\\.claim"]' in out
    assert "dry run: nothing sent" in out
    assert main(["backfill", "--mapping", str(EXAMPLE), "--dry-run", "public.nope"]) == 1
    assert "public.nope not in the mapping" in capsys.readouterr().err


def test_backfill_is_the_ingest_stages_command() -> None:
    args = build_parser().parse_args(
        ["backfill", "public.claim", "--topic-prefix", "p", "--signal-topic", "s"]
    )
    assert args.handler.__module__ == "connector.ingest.backfill"
    assert (args.tables, args.topic_prefix, args.signal_topic, args.dry_run) == (
        ["public.claim"],
        "p",
        "s",
        False,
    )
