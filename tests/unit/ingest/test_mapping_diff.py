"""The preview before a rollout (issue 20): the state preview, computed from mapped rows only,
predicts exactly what replaying the same events under the new mapping gives, for the changes it
can compute (enum maps, constants, EntityId templates), and says what needs the source. Over
rows that keep their source columns (decision 0025) it maps them again with the re-mapping
pass's own code, so every change is exact, a newly read column included."""

from __future__ import annotations

from pathlib import Path

from connector.ingest.mapping_diff import ExactRows, replay_diff, state_diff
from connector.ingest.replay import read_events, replay
from connector.mapping import Mapper, load_mapping, parse_mapping
from connector.mapping.versions import describe
from connector.state.codec import encode_row, stored_values
from connector.state.mapping_registry import Registry

ROOT = Path(__file__).parents[3]
EXAMPLE = ROOT / "examples" / "mapping.yaml"
EVENTS = ROOT / "examples" / "events.jsonl"


def _registry(text: str) -> Registry:
    registry = Registry()
    for key, value in Registry().updates(describe(parse_mapping(text)), now_ms=1):
        registry.absorb(key, value)
    return registry


def _both(new_text: str):  # type: ignore[no-untyped-def]
    old_spec, new_spec = load_mapping(EXAMPLE), parse_mapping(new_text)
    old, new = replay(old_spec, read_events(EVENTS)), replay(new_spec, read_events(EVENTS))
    by_replay = replay_diff(old, new, Mapper(old_spec).versions, Mapper(new_spec).versions)
    rows: dict[str, list[tuple[str, dict]]] = {}
    for entity, entity_id, values in old.live:
        rows.setdefault(entity, []).append((entity_id, values))
    by_state = state_diff(_registry(EXAMPLE.read_text()), describe(new_spec), rows)
    return by_replay, by_state


def test_an_enum_map_and_a_constant_predicted_from_the_state_equal_the_replay() -> None:
    text = EXAMPLE.read_text().replace("S: SUSPENDED, T: TERMINATED", "T: TERMINATED")
    text = text.replace("PlanCode: plan_code", "PlanCode: {const: GOLD}")
    by_replay, by_state = _both(text)
    family_r, family_s = by_replay.entities["Family"], by_state.entities["Family"]
    assert family_r.changed_fields["PlanCode"] == family_s.changed_fields["PlanCode"] == family_r.records
    assert family_s.to_remap == 0  # both changes follow from the stored rows
    # The replay refuses the suspended family's event; the state preview names the same row.
    assert sum(by_replay.failing_events.values()) == sum(family_s.failing.values()) == 1
    assert set(by_replay.failing_events) == {"unknown_enum_symbol"}
    assert set(family_s.failing) == {"Status: unknown_enum_symbol"}
    unchanged = [e for e, d in by_state.entities.items() if e != "Family"]
    assert all(not by_state.entities[e].changes for e in unchanged)
    assert all(not by_replay.entities[e].changes for e in unchanged)


def test_an_entity_id_template_change_counts_the_same_either_way() -> None:
    text = EXAMPLE.read_text().replace('"PRV-{provider_id}"', '"PROV-{provider_id}"')
    by_replay, by_state = _both(text)
    r, s = by_replay.entities["Provider"], by_state.entities["Provider"]
    assert (r.removed, r.added) == (s.removed, s.added) == (r.records, r.records)
    # Care and Claim point at providers: their ProviderId field moves with the template.
    for child in ("Care", "Claim"):
        assert (
            by_replay.entities[child].changed_fields["ProviderId"]
            == by_state.entities[child].changed_fields["ProviderId"]
        )
        assert by_state.entities[child].changed_fields["ProviderId"] > 0
    assert "PRV-" not in str(by_state.as_json())  # counts and names only, never an EntityId


def test_a_field_reading_another_column_needs_the_source() -> None:
    text = EXAMPLE.read_text().replace("PrimaryEmail: email", "PrimaryEmail: backup_email")
    _, by_state = _both(text)
    family = by_state.entities["Family"]
    assert family.fields_to_remap == ("PrimaryEmail",)
    assert family.to_remap == family.records > 0
    assert "to re-map from the source (PrimaryEmail)" in family.describe()


def test_over_rows_with_source_columns_every_change_is_exact_and_equals_the_replay() -> None:
    """A field newly reading another column and an enum change at once: from the stored values
    the first is only "to re-map"; from the source columns both equal the replay under the new
    mapping, field by field, and the refused row is named by the same reason."""
    text = EXAMPLE.read_text().replace("PrimaryEmail: email", "PrimaryEmail: family_name")
    text = text.replace("S: SUSPENDED, T: TERMINATED", "T: TERMINATED")
    old_spec, new_spec = load_mapping(EXAMPLE), parse_mapping(text)
    old = replay(old_spec, read_events(EVENTS), source_columns=True)
    new = replay(new_spec, read_events(EVENTS))
    by_replay = replay_diff(old, new, Mapper(old_spec).versions, Mapper(new_spec).versions)
    rows: dict[str, list[tuple[str, dict]]] = {}
    stored: dict[str, dict[str, bytes]] = {}
    for entity, entity_id, _ in old.live:
        raw = encode_row(old.rows[(entity, entity_id)])
        rows.setdefault(entity, []).append((entity_id, stored_values(raw)))  # as preview reads them
        stored.setdefault(entity, {})[entity_id] = raw
    assert all(b'"src"' in raw for raw in stored["Family"].values())
    registry, descriptors = _registry(EXAMPLE.read_text()), describe(new_spec)
    estimated = state_diff(registry, descriptors, rows).entities["Family"]
    exact = state_diff(registry, descriptors, rows, ExactRows(Mapper(new_spec), stored)).entities["Family"]
    family_r = by_replay.entities["Family"]
    assert estimated.fields_to_remap == ("PrimaryEmail",)
    assert (exact.to_remap, exact.fields_to_remap) == (0, ())
    # Every family's email now reads its name. The replay dead-letters the suspended family's
    # event and keeps its earlier state under the new mapping; the pass keeps that row under
    # the old mapping and dead-letters it (by the same reason): it alone differs.
    assert family_r.changed_fields["PrimaryEmail"] == family_r.records == 3
    assert exact.changed_fields == {"PrimaryEmail": family_r.records - 1}
    assert exact.changed_records == family_r.records - 1
    assert dict(exact.failing) == dict(by_replay.failing_events) == {"unknown_enum_symbol": 1}
    assert "FAM-" not in str(exact.as_json())
