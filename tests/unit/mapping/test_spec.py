"""The mapping file is validated at start-up, with every problem named by line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.mapping import MappingConfigError, load_mapping, parse_mapping

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"

MINIMAL = """\
version: 1
tables:
  public.family:
    entity: Family
    entity_id: "FAM-{id}"
  public.member:
    entity: FamilyMember
    entity_id: "MEM-{id}"
    fields:
      FamilyId: {references: family_id}
"""


def test_example_mapping_loads_and_maps_all_six_entities() -> None:
    spec = load_mapping(EXAMPLE)
    assert sorted(t.entity for t in spec.tables.values()) == sorted(
        ["Family", "Provider", "FamilyMember", "Care", "Claim", "EOP"]
    )
    assert spec.topic("benefits.public.claim").format == "debezium-json"


def test_fields_not_listed_map_to_same_name_columns() -> None:
    spec = parse_mapping(MINIMAL)
    family = spec.tables["public.family"]
    assert {f.name: f.column for f in family.fields}["FamilyName"] == "FamilyName"


def test_association_field_reuses_the_parent_entity_id_template() -> None:
    member = parse_mapping(MINIMAL).tables["public.member"]
    family_id = next(f for f in member.fields if f.name == "FamilyId")
    assert family_id.template == "FAM-{family_id}"
    assert family_id.template_columns == ("family_id",)


def _problems(text: str) -> list[str]:
    with pytest.raises(MappingConfigError) as info:
        parse_mapping(text, origin="m.yaml")
    return info.value.problems


def test_every_problem_is_reported_at_once_with_its_line_and_field() -> None:
    problems = _problems(
        """\
version: 1
tables:
  public.family:
    entity: Family
    entity_id: "FAM-{id}"
    fields:
      FamilyNmae: family_name
      Status: {column: status, unit: weeks}
  public.thing:
    entity: Household
    entity_id: "H-{id}"
"""
    )
    text = "\n".join(problems)
    assert "m.yaml:7: tables.public.family.fields.FamilyNmae: Family has no such field" in text
    assert "m.yaml:8: tables.public.family.fields.Status.unit: must be one of" in text
    assert "m.yaml:10: tables.public.thing.entity: must be one of" in text
    assert len(problems) == 3


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('entity_id: "FAM-{id!r}"', "must be a plain column name"),
        ('entity_id: "FAM-FIXED"', "no {column} placeholder"),
        ("entity_id: 7", "required template"),
    ],
)
def test_entity_id_template_must_be_over_key_columns(snippet: str, expected: str) -> None:
    text = f"version: 1\ntables:\n  public.family:\n    entity: Family\n    {snippet}\n"
    assert expected in "\n".join(_problems(text))


def test_reference_to_an_unmapped_parent_is_refused() -> None:
    text = """\
version: 1
tables:
  public.member:
    entity: FamilyMember
    entity_id: "MEM-{id}"
"""
    assert "no table maps to Family" in "\n".join(_problems(text))


def test_two_templates_for_one_entity_are_refused() -> None:
    text = """\
version: 1
tables:
  a.family: {entity: Family, entity_id: "FAM-{id}"}
  b.family: {entity: Family, entity_id: "F-{id}"}
"""
    assert "one entity, one template" in "\n".join(_problems(text))


def test_yaml_syntax_error_names_the_line() -> None:
    problems = _problems("version: 1\ntables:\n  x: [unclosed\n")
    assert problems[0].startswith("m.yaml:")
    assert "not valid YAML" in problems[0]


def test_unreadable_file_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(MappingConfigError, match="cannot read mapping file"):
        load_mapping(tmp_path / "absent.yaml")


TRACKED = """\
version: 1
topics:
  pg.public.family: {format: debezium-json}
transactions:
  topic: pg.transaction
tables:
  public.family:
    entity: Family
    entity_id: "FAM-{family_id}"
"""


def test_the_transaction_topic_is_read_apart_from_the_source_topics() -> None:
    spec = parse_mapping(TRACKED)
    assert spec.transaction_topic == "pg.transaction"
    assert list(spec.topics) == ["pg.public.family"]
    assert (
        parse_mapping(TRACKED.replace("transactions:\n  topic: pg.transaction\n", "")).transaction_topic
        is None
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("transactions: pg.transaction\n", ":4: transactions: must be a mapping with topic"),
        ("transactions: {}\n", "transactions.topic: required"),
        ("transactions: {topic: pg.transaction, tables: x}\n", "transactions.tables: unknown setting"),
        ("transactions: {topic: pg.public.family}\n", "transactions.topic: is listed under topics too"),
    ],
)
def test_a_bad_transactions_setting_is_named_with_its_line(block: str, expected: str) -> None:
    text = TRACKED.replace("transactions:\n  topic: pg.transaction\n", block)
    with pytest.raises(MappingConfigError) as caught:
        parse_mapping(text)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
