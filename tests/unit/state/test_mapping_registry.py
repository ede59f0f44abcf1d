"""The mapping registry's records (issue 20): a restart with the same mapping writes nothing,
rows from before versions stay under the first version recorded, and a new version is
recorded with its history."""

from __future__ import annotations

from pathlib import Path

from connector.mapping import load_mapping, parse_mapping
from connector.mapping.versions import describe
from connector.state.mapping_registry import Registry

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"


def _replayed(records: list[tuple[bytes, bytes]], into: Registry | None = None) -> Registry:
    registry = into or Registry()
    for key, value in records:
        registry.absorb(key, value)
    return registry


def test_first_record_adopts_unversioned_rows_and_a_restart_writes_nothing() -> None:
    first = describe(load_mapping(EXAMPLE))
    records = Registry().updates(first, now_ms=1)
    assert len(records) == 2 * len(first)
    registry = _replayed(records)
    assert {e: d.version for e, d in registry.current.items()} == {e: d.version for e, d in first.items()}
    assert registry.unversioned == {e: d.version for e, d in first.items()}
    assert registry.updates(first, now_ms=2) == []
    assert registry.resolve("Family", None) == first["Family"].version
    assert registry.resolve("Family", "abc") == "abc"


def test_a_new_version_is_recorded_and_unversioned_rows_keep_the_first() -> None:
    first = describe(load_mapping(EXAMPLE))
    registry = _replayed(Registry().updates(first, now_ms=1))
    text = EXAMPLE.read_text().replace("PlanCode: plan_code", "PlanCode: plan_name")
    second = describe(parse_mapping(text))
    records = registry.updates(second, now_ms=2)
    assert [k for k, _ in records] == [
        b"version/Family/" + second["Family"].version.encode(),
        b"current/Family",
    ]
    registry = _replayed(records, registry)
    assert registry.current["Family"].version == second["Family"].version
    assert registry.unversioned["Family"] == first["Family"].version
    assert ("Family", first["Family"].version) in registry.versions
    assert registry.since_ms["Family"] == 2
