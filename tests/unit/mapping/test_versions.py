"""Mapping versions (issue 20): a fingerprint that changes exactly when what a mapping does to an
entity changes, and the identity changes that would move stored EntityIds, judged from the ids."""

from __future__ import annotations

from pathlib import Path

from connector.mapping import load_mapping, parse_mapping
from connector.mapping.id_moves import count_moves, move_id
from connector.mapping.versions import describe, entity_versions, identity_changes

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"


def _example() -> str:
    return EXAMPLE.read_text()


def test_every_mapped_entity_has_a_short_hex_version_that_comments_and_order_do_not_change() -> None:
    versions = entity_versions(load_mapping(EXAMPLE))
    assert set(versions) == {"Family", "Provider", "FamilyMember", "Care", "Claim", "EOP"}
    assert all(len(v) == 12 and int(v, 16) >= 0 for v in versions.values())
    reshuffled = "# a comment moves every line\n\n" + _example().replace(
        "      PlanCode: plan_code\n      CoverageStartDate: coverage_start\n",
        "      CoverageStartDate: coverage_start\n      PlanCode: plan_code\n",
    )
    assert reshuffled != _example()
    assert entity_versions(parse_mapping(reshuffled)) == versions


def test_an_enum_map_change_moves_its_entity_only() -> None:
    before = entity_versions(load_mapping(EXAMPLE))
    after = entity_versions(parse_mapping(_example().replace("S: SUSPENDED, T: TERMINATED", "T: TERMINATED")))
    changed = {e for e in before if before[e] != after[e]}
    assert changed == {"Family"}


def test_a_topic_setting_that_changes_conversion_moves_the_tables_it_carries() -> None:
    text = _example().replace(
        "benefits.public.claim: {format: debezium-json}",
        "benefits.public.claim: {format: debezium-json, decimal_handling: string}",
    )
    before, after = entity_versions(load_mapping(EXAMPLE)), entity_versions(parse_mapping(text))
    assert {e for e in before if before[e] != after[e]} == {"Claim"}


def test_an_entity_id_template_change_is_an_identity_change_and_a_field_change_is_not() -> None:
    old = describe(load_mapping(EXAMPLE))
    renamed = describe(parse_mapping(_example().replace('"FAM-{family_id}"', '"FAMILY-{family_id}"')))
    (change,) = identity_changes(old["Family"], renamed["Family"])
    assert (change.table, change.what) == ("public.family", "entity_id")
    # FamilyMember's FamilyId reuses the parent's template: it moves too, as a reference.
    (ref,) = identity_changes(old["FamilyMember"], renamed["FamilyMember"])
    assert (ref.what, ref.before["template"], ref.after["template"]) == (
        "FamilyId",
        "FAM-{family_id}",
        "FAMILY-{family_id}",
    )
    field_only = describe(parse_mapping(_example().replace("PlanCode: plan_code", "PlanCode: plan_name")))
    assert field_only["Family"].version != old["Family"].version
    assert identity_changes(old["Family"], field_only["Family"]) == []


def test_a_reference_reading_another_column_is_an_identity_change() -> None:
    old = describe(load_mapping(EXAMPLE))
    new = describe(
        parse_mapping(
            _example().replace("FamilyId: {references: family_id}", "FamilyId: {references: household_id}")
        )
    )
    (change,) = identity_changes(old["FamilyMember"], new["FamilyMember"])
    assert change.what == "FamilyId"
    assert "household_id" in change.describe()


def test_moves_are_computed_from_the_ids_where_the_columns_allow() -> None:
    assert move_id("FAM-{family_id}", "FAMILY-{family_id}", "FAM-17") == "FAMILY-17"
    assert move_id("FAM-{family_id}", "FAM-{family_id}", "FAM-17") == "FAM-17"
    assert move_id("FAM-{family_id}", "FAM-{household_id}", "FAM-17") is None  # a column it lacks
    assert move_id("FAM-{family_id}", "F-{family_id}", "XYZ") is None  # not written by it
    assert move_id("C-{a}-{b}", "C-{b}-{a}", "C-1-2") == "C-2-1"


def test_counting_moves_counts_rows_moved_and_unknown() -> None:
    old = describe(load_mapping(EXAMPLE))
    new = describe(parse_mapping(_example().replace('"FAM-{family_id}"', '"FAMILY-{family_id}"')))
    (change,) = identity_changes(old["Family"], new["Family"])
    rows = [(f"FAM-{i}", {}) for i in range(5)] + [("odd", {})]
    moves = count_moves(change, rows)
    assert (moves.rows, moves.moved, moves.unknown) == (6, 6, 1)
    assert moves.examples[0] == ("FAM-0", "FAMILY-0")
    assert "6 of 6 would change (1 not computable" in moves.describe()
    assert "FAM-0" not in moves.describe()  # the message (logged) carries counts only
