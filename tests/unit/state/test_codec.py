"""State rows survive the trip through the state topic's bytes exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.mapping.change import EntityChange
from connector.model import ENTITY_NAMES
from connector.model.samples import sample
from connector.source.version import Version
from connector.state.codec import decode_row, encode_row, is_complete, split_key, state_key
from connector.state.resolve import StateRow, merge


def test_every_entity_sample_round_trips_with_its_types() -> None:
    for entity in ENTITY_NAMES:
        row = StateRow(Version(1, 2**62 + 1, 3, 0, 9), False, sample(entity))
        assert decode_row(entity, encode_row(row)) == row


def test_partial_rows_and_delete_markers_round_trip() -> None:
    values = sample("Claim")
    del values["DenialReasonCode"]
    partial = StateRow(
        Version(1, 5, 0, 0, 1),
        False,
        values,
        frozenset({"DenialReasonCode"}),
        {"PaidAmount": Version(1, 4, 0, 0, 0)},
        Version(1, 2, 0, 0, 0),
    )
    marker = StateRow(Version(1, 6, 0, 0, 2), True, {}, delete_floor=Version(1, 6, 0, 0, 2))
    assert decode_row("Claim", encode_row(partial)) == partial
    assert decode_row("Claim", encode_row(marker)) == marker


def test_keys_split_on_the_first_separator_only() -> None:
    key = state_key("Claim", "CLM/2024/7")
    assert key == b"Claim/CLM/2024/7"
    assert split_key(key) == ("Claim", "CLM/2024/7")


@settings(max_examples=300)
@given(
    text=st.text(),
    deleted=st.booleans(),
    missing=st.frozensets(st.sampled_from(["FamilyName", "PlanCode"]), max_size=2),
)
def test_is_complete_agrees_with_decoding_whatever_the_values_hold(
    text: str, deleted: bool, missing: frozenset[str]
) -> None:
    values = {} if deleted else {"EntityId": "FAM-1", "FamilyName": text, "PlanCode": '"d":"m":'}
    row = StateRow(Version(1, 2, 3, 4, 5), deleted, values, frozenset() if deleted else missing)
    data = encode_row(row)
    assert is_complete(data) == decode_row("Family", data).complete


def test_no_entity_has_a_field_named_like_a_row_flag() -> None:
    from connector.model import field_names

    assert all({"d", "m"}.isdisjoint(field_names(entity)) for entity in ENTITY_NAMES)


def test_rows_read_untyped_and_merged_write_the_same_bytes_as_typed_ones() -> None:
    """The ingest reads stored rows untyped (``typed=False``): whatever it merges and writes
    back must be byte for byte what the typed row would have given."""
    for entity in ENTITY_NAMES:
        values = sample(entity)
        data = encode_row(StateRow(Version(1, 2, 3, 0, 4), False, values))
        assert encode_row(decode_row(entity, data, typed=False)) == data
        for name in values:
            if name == "EntityId":
                continue
            partial = {k: v for k, v in sample(entity).items() if k != name}
            change = EntityChange(
                entity, values["EntityId"], False, Version(1, 2, 4, 0, 9), partial, frozenset({name})
            )
            typed = merge(decode_row(entity, data), change)
            untyped = merge(decode_row(entity, data, typed=False), change)
            assert typed is not None
            assert untyped is not None
            assert encode_row(untyped) == encode_row(typed)


def test_the_mapping_version_round_trips_and_is_read_without_parsing() -> None:
    from connector.state.codec import row_mapping_version

    values = {"EntityId": "FAM-1", "FamilyName": '"mv":"0000"'}
    plain = StateRow(Version(1, 2, 3, 4, 5), False, values)
    versioned = StateRow(Version(1, 2, 3, 4, 5), False, values, mapping_version="a1b2c3d4e5f6")
    data = encode_row(versioned)
    assert decode_row("Family", data) == versioned
    assert row_mapping_version(data) == "a1b2c3d4e5f6"
    assert row_mapping_version(encode_row(plain)) is None  # a row from before versions: unknown
    assert decode_row("Family", encode_row(plain)).mapping_version is None
    assert data == encode_row(plain)[:-1] + b',"mv":"a1b2c3d4e5f6"}'  # last: where the extension writes it
    marker = StateRow(
        Version(1, 2, 3, 4, 6), True, {}, delete_floor=Version(1, 2, 3, 4, 6), mapping_version="ff"
    )
    assert is_complete(encode_row(marker)) is False
    assert decode_row("Family", encode_row(marker, deleted_at_ms=5)) == marker


def test_no_entity_has_a_field_named_like_the_mapping_version() -> None:
    from connector.model import field_names

    assert all("mv" not in field_names(entity) for entity in ENTITY_NAMES)
