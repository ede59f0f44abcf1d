"""The start-up judgement of a mapping against the registry (issue 20): which entities change
version and which EntityIds would move, counted on the stored rows."""

from __future__ import annotations

from pathlib import Path

from connector.ingest.rollout import judge_rollout
from connector.mapping import load_mapping, parse_mapping
from connector.mapping.versions import describe
from connector.state.mapping_registry import Registry

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"


def _registry() -> Registry:
    registry = Registry()
    for key, value in Registry().updates(describe(load_mapping(EXAMPLE)), now_ms=1):
        registry.absorb(key, value)
    return registry


def test_the_same_mapping_changes_nothing_and_a_first_start_changes_every_entity() -> None:
    current = describe(load_mapping(EXAMPLE))
    assert judge_rollout(_registry(), current, None).changed == {}
    assert set(judge_rollout(Registry(), current, None).changed) == set(current)


def test_a_template_change_counts_the_stored_ids_it_moves_and_refuses_by_table() -> None:
    text = EXAMPLE.read_text().replace('"FAM-{family_id}"', '"FAMILY-{family_id}"')
    new = describe(parse_mapping(text))
    rows = {
        "Family": [(f"FAM-{i}", {"EntityId": f"FAM-{i}"}) for i in range(4)],
        "FamilyMember": [(f"MEM-{i}", {"FamilyId": f"FAM-{i % 2}"}) for i in range(6)],
    }
    rollout = judge_rollout(_registry(), new, rows)
    assert set(rollout.changed) == {"Family", "FamilyMember"}
    assert [(m.change.entity, m.change.what, m.moved, m.rows) for m in rollout.moves] == [
        ("Family", "entity_id", 4, 4),
        ("FamilyMember", "FamilyId", 6, 6),
    ]
    message = rollout.refusal()
    assert "public.family (Family): entity_id template 'FAM-{family_id}' -> 'FAMILY-{family_id}'" in message
    assert "4 of 4 would change" in message
    assert "CARECLOUD_INGEST_ALLOW_ENTITY_ID_CHANGE" in message
    assert "FAM-1" not in message.replace("FAM-{", "")  # counts, never an EntityId


def test_a_field_change_moves_no_id() -> None:
    text = EXAMPLE.read_text().replace("S: SUSPENDED, T: TERMINATED", "T: TERMINATED")
    rollout = judge_rollout(_registry(), describe(parse_mapping(text)), {})
    assert list(rollout.changed) == ["Family"]
    assert rollout.moves == []
