"""Source rows become entity records with stable EntityIds, typed fields and clear errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.errors import MappingError
from connector.mapping import Mapper, load_mapping, parse_mapping
from connector.source.events import ChangeEvent, Op, Position
from connector.source.version import Version

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"
CANARY = "Zebulon-Quixote-7731"


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    return Mapper(load_mapping(EXAMPLE))


def event(
    table: str,
    row: dict[str, Any],
    *,
    op: Op = Op.UPDATE,
    key: dict[str, Any] | None = None,
    unavailable: frozenset[str] = frozenset(),
    topic: str = "benefits.public.x",
    **extra: Any,
) -> ChangeEvent:
    return ChangeEvent(
        Position(topic, 0, 7), f"public.{table}", op, key, row, Version(1, 10, 1, 0, 7), unavailable, **extra
    )


def claim_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "claim_id": 9007199254740993,  # 2**53 + 1: must survive exactly
        "episode_id": 12,
        "provider_id": 3,
        "claim_number": "C-0042",
        "status": "PAID",
        "submitted_on": 19723,  # days since epoch -> 2024-01-01
        "billed": "MDk=",  # base64 big-endian 0x30 0x39 = 12345 -> 123.45 at scale 2
        "allowed": "100.00",
        "paid": None,
        "member_owes": Decimal("23.45"),
        "denial_code": None,
        "updated_at": 1_704_067_200_000_000,  # micros -> 2024-01-01T00:00:00Z
    }
    row.update(over)
    return row


def test_claim_maps_with_entity_id_associations_and_types(mapper: Mapper) -> None:
    # "allowed" arrives as text: this topic is not listed, so precise handling would expect
    # base64; the mapping's per-topic decimal_handling covers that case in the next test.
    change = mapper.map(
        event("claim", claim_row(allowed=Decimal("100.00")), key={"claim_id": 9007199254740993})
    )
    assert change.entity == "Claim"
    assert change.entity_id == "CLM-9007199254740993"
    v = change.values
    assert v["EntityId"] == change.entity_id
    assert v["CareId"] == "CARE-12"
    assert v["ProviderId"] == "PRV-3"
    assert v["SubmittedDate"] == date(2024, 1, 1)
    assert v["BilledAmount"] == Decimal("123.45")
    assert v["UpdatedAt"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert v["PaidAmount"] is None
    assert not change.missing


def test_same_row_maps_to_the_same_entity_id_every_time(mapper: Mapper) -> None:
    ids = {
        mapper.map(event("claim", claim_row(allowed=None, status=s))).entity_id for s in ("PAID", "DENIED")
    }
    assert ids == {"CLM-9007199254740993"}


def test_decimal_string_mode_per_topic() -> None:
    spec = parse_mapping(
        EXAMPLE.read_text().replace(
            "benefits.public.claim: {format: debezium-json}",
            "benefits.public.claim: {format: debezium-json, decimal_handling: string}",
        )
    )
    change = Mapper(spec).map(event("claim", claim_row(billed="123.45"), topic="benefits.public.claim"))
    assert change.values["BilledAmount"] == Decimal("123.45")
    assert change.values["AllowedAmount"] == Decimal("100.00")


def test_enum_translation_path_into_json_and_constant(mapper: Mapper) -> None:
    row = {
        "family_id": 5,
        "family_name": "Okafor",
        "status": "A",
        "plan_code": "PPO-2",
        "coverage_start": 19723,
        "coverage_end": None,
        "address": '{"state": "CA", "zip": "94107"}',
        "email": None,
        "deductible": Decimal("1500.00"),
        "oop_max": None,
        "updated_at": 1_704_067_200_000_000,
    }
    v = mapper.map(event("family", row)).values
    assert v["Status"] == "ACTIVE"
    assert (v["StateCode"], v["PostalCode"]) == ("CA", "94107")
    care = mapper.map(
        event(
            "care_episode",
            {
                "episode_id": 1,
                "member_id": 2,
                "provider_id": 3,
                "care_type": "PRIMARY_CARE",
                "status": "COMPLETED",
                "service_start": 19723,
                "service_end": None,
                "diagnosis_code": None,
                "procedure_code": None,
                "updated_at": 0,
            },
        )
    )
    assert care.values["PlaceOfServiceCode"] == "11"


def test_unchanged_toast_column_becomes_a_missing_field(mapper: Mapper) -> None:
    row = claim_row(allowed=None)
    del row["denial_code"]
    change = mapper.map(event("claim", row, unavailable=frozenset({"denial_code"})))
    assert change.missing == {"DenialReasonCode"}
    assert "DenialReasonCode" not in change.values


def test_delete_with_only_the_primary_key(mapper: Mapper) -> None:
    change = mapper.map(event("claim", {"claim_id": 4}, op=Op.DELETE, key={"claim_id": 4}))
    assert change.deleted
    assert change.entity_id == "CLM-4"
    assert change.values == {}


def test_primary_key_update_links_old_and_new_entity_ids(mapper: Mapper) -> None:
    create = mapper.map(
        event("claim", claim_row(claim_id=8, allowed=None), key={"claim_id": 8}, old_key={"claim_id": 4})
    )
    delete = mapper.map(
        event("claim", {"claim_id": 4}, op=Op.DELETE, key={"claim_id": 4}, new_key={"claim_id": 8})
    )
    assert create.previous_entity_id == "CLM-4"
    assert delete.next_entity_id == "CLM-8"


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"billed": "not base64!"}, "unparseable_decimal"),
        ({"billed": float("nan")}, "non_finite_number"),
        ({"billed": Decimal("1.234")}, "decimal_scale_exceeded"),
        ({"billed": Decimal("99999999999.00")}, "decimal_out_of_range"),
        ({"submitted_on": 10**9}, "date_out_of_range"),
        ({"submitted_on": 2_000_000}, "date_out_of_range"),
        ({"status": "LOST"}, "unknown_enum_symbol"),
        ({"claim_number": None}, "required_field_null"),
        ({"claim_number": ["x"]}, "wrong_type"),
        ({"claim_number": "a\x00b"}, "control_character"),
        ({"updated_at": "yesterday"}, "unparseable_timestamp"),
    ],
)
def test_bad_values_are_mapping_errors_naming_the_field_not_the_value(
    mapper: Mapper, override: dict[str, Any], reason: str
) -> None:
    row = claim_row(allowed=None, **override)
    with pytest.raises(MappingError) as info:
        mapper.map(event("claim", row))
    assert info.value.reason == reason
    assert "Claim." in str(info.value)
    for value in override.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(info.value)


def test_missing_required_column_and_missing_primary_key(mapper: Mapper) -> None:
    row = claim_row(allowed=None)
    del row["claim_number"]
    with pytest.raises(MappingError) as info:
        mapper.map(event("claim", row))
    assert info.value.reason == "required_field_missing"
    with pytest.raises(MappingError) as info:
        mapper.map(event("claim", claim_row(claim_id=None)))
    assert info.value.reason == "missing_primary_key"


def test_unknown_table_is_a_mapping_error(mapper: Mapper) -> None:
    with pytest.raises(MappingError) as info:
        mapper.map(event("audit_log", {"id": 1}))
    assert info.value.reason == "unknown_table"


def test_error_messages_never_carry_record_values(mapper: Mapper) -> None:
    row = claim_row(allowed=None, claim_number=CANARY + "\x01")
    with pytest.raises(MappingError) as info:
        mapper.map(event("claim", row))
    assert CANARY not in str(info.value)
    assert CANARY not in repr(info.value)
