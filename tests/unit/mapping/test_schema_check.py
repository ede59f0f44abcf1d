"""A source table's columns against the mapping (issue 20): added columns are ignored, a dropped
or retyped column that a field reads is named with the field."""

from __future__ import annotations

from pathlib import Path

from connector.mapping import load_mapping, parse_mapping
from connector.mapping.schema_check import (
    SchemaProblem,
    accepted_families,
    check_columns,
    implicit,
    resolve_table,
)

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_mapping(ROOT / "examples" / "mapping.yaml")
CLAIM = SPEC.tables["public.claim"]
COLUMNS = {
    "claim_id": "integer",
    "episode_id": "integer",
    "provider_id": "integer",
    "claim_number": "string",
    "status": "string",
    "submitted_on": "date",
    "billed": "decimal",
    "allowed": "decimal",
    "paid": "decimal",
    "member_owes": "decimal",
    "denial_code": "string",
    "updated_at": "timestamp",
}


def test_the_columns_the_mapping_reads_fit_and_added_columns_are_ignored() -> None:
    assert check_columns(CLAIM, COLUMNS, typed=True) == []
    assert check_columns(CLAIM, {**COLUMNS, "fax_number": "string", "audit": "json"}, typed=True) == []
    assert check_columns(CLAIM, dict.fromkeys(COLUMNS), typed=False) == []


def test_a_dropped_column_is_named_with_the_field_that_reads_it() -> None:
    columns = {k: v for k, v in COLUMNS.items() if k not in ("paid", "episode_id")}
    problems = check_columns(CLAIM, columns, typed=True)
    assert sorted(problems, key=lambda p: p.column) == [
        SchemaProblem("public.claim", "episode_id", "dropped", "Claim.CareId"),
        SchemaProblem("public.claim", "paid", "dropped", "Claim.PaidAmount"),
    ]
    paid = next(p for p in problems if p.column == "paid")
    assert paid.describe() == "public.claim.paid dropped: Claim.PaidAmount reads it"
    # Without a schema only names are known: a drop is still seen.
    assert [p.column for p in check_columns(CLAIM, dict.fromkeys(columns), typed=False)] == [
        "episode_id",
        "paid",
    ]


def test_a_retyped_column_its_field_cannot_take_is_named_and_a_compatible_one_is_not() -> None:
    retyped = {**COLUMNS, "billed": "boolean", "submitted_on": "integer", "episode_id": "float"}
    problems = {p.column: p for p in check_columns(CLAIM, retyped, typed=True)}
    assert set(problems) == {"billed", "submitted_on", "episode_id"}
    assert problems["billed"] == SchemaProblem(
        "public.claim", "billed", "retyped", "Claim.BilledAmount", "boolean"
    )
    assert "retyped to float: Claim.CareId cannot take it" in problems["episode_id"].describe()
    # A decimal as a string (decimal.handling.mode=string) or an int is still a decimal's input.
    assert check_columns(CLAIM, {**COLUMNS, "billed": "string", "paid": "integer"}, typed=True) == []


def test_accepted_families_follow_the_converters() -> None:
    family = SPEC.tables["public.family"]
    state = next(f for f in family.fields if f.name == "StateCode")  # a path into a jsonb column
    assert accepted_families(["null", "string"], state) == frozenset({"json", "string"})
    status = next(f for f in family.fields if f.name == "Status")  # an enum map over text
    assert "integer" in accepted_families({"type": "enum", "name": "S", "symbols": ["A"]}, status)


def test_the_table_is_found_by_its_source_name_or_as_the_suffix_of_a_record_or_topic() -> None:
    assert resolve_table(SPEC, "public.claim") is CLAIM
    assert resolve_table(SPEC, None, "benefits.public.claim") is CLAIM
    assert resolve_table(SPEC, "other.thing", None, "benefits.public.claim") is CLAIM
    assert resolve_table(SPEC, "audit.log") is None


def test_a_field_the_mapping_leaves_to_its_same_name_column_is_news_only_once_the_column_was_seen() -> None:
    spec = parse_mapping(
        """\
version: 1
topics: {t: {format: debezium-json}}
tables:
  public.family:
    entity: Family
    entity_id: "FAM-{family_id}"
    fields: {FamilyName: family_name, Status: {const: ACTIVE}, PlanCode: plan_code,
             CoverageStartDate: coverage_start, DeductibleAmount: deductible, UpdatedAt: updated_at}
"""
    )
    family = spec.tables["public.family"]
    end = next(f for f in family.fields if f.name == "CoverageEndDate")
    assert implicit(end)
    assert not implicit(next(f for f in family.fields if f.name == "FamilyName"))
    columns = dict.fromkeys(
        ["family_id", "family_name", "plan_code", "coverage_start", "deductible", "updated_at"]
    )
    assert check_columns(family, columns, typed=False) == []  # never there: a null by design
    assert check_columns(family, columns, typed=False, seen={"CoverageEndDate"}) == [
        SchemaProblem("public.family", "CoverageEndDate", "dropped", "Family.CoverageEndDate")
    ]
