"""validate / encode / decode: round trips, and rejections that name the field but never the value."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import ConfigError, DecodeError, SchemaValidationError
from connector.model import ENTITY_NAMES, ENVELOPE_NAME, decode, encode, schema, validate
from connector.model.samples import sample, sample_envelope
from connector.model.schemas import _REGISTRY, ENTITY_NAMESPACE, _inline

CANARY = "CANARY-7f3a9c"
"""A value no message may contain."""


@pytest.mark.parametrize("name", ENTITY_NAMES)
def test_sample_is_valid_and_round_trips(name: str) -> None:
    record = sample(name)
    validate(name, record)
    data = encode(name, record)
    assert isinstance(data, bytes)
    assert decode(name, data) == record


def test_samples_are_fresh_and_reference_each_other() -> None:
    first = sample("Family")
    first["FamilyName"] = CANARY
    assert sample("Family")["FamilyName"] != CANARY
    assert sample("FamilyMember")["FamilyId"] == sample("Family")["EntityId"]
    assert sample("Care")["FamilyMemberId"] == sample("FamilyMember")["EntityId"]
    assert sample("Claim")["CareId"] == sample("Care")["EntityId"]
    assert sample("EOP")["ClaimId"] == sample("Claim")["EntityId"]


def test_decoded_values_have_the_documented_python_types() -> None:
    claim = decode("Claim", encode("Claim", sample("Claim")))
    assert type(claim["SubmittedDate"]) is dt.date
    assert isinstance(claim["BilledAmount"], Decimal)
    assert claim["UpdatedAt"].utcoffset() == dt.timedelta(0)
    assert claim["DenialReasonCode"] is None


def test_optional_fields_may_be_left_out() -> None:
    family = sample("Family")
    for optional in ("CoverageEndDate", "StateCode", "PostalCode", "PrimaryEmail", "OutOfPocketMaximum"):
        del family[optional]
    validate("Family", family)
    decoded = decode("Family", encode("Family", family))
    assert decoded["PrimaryEmail"] is None


def test_timestamps_keep_the_instant_and_drop_sub_milliseconds() -> None:
    family = sample("Family")
    pacific = dt.timezone(dt.timedelta(hours=-8))
    family["UpdatedAt"] = dt.datetime(2024, 11, 4, 9, 30, 5, 123456, tzinfo=pacific)
    decoded = decode("Family", encode("Family", family))
    assert decoded["UpdatedAt"] == dt.datetime(2024, 11, 4, 17, 30, 5, 123000, tzinfo=dt.UTC)


@pytest.mark.parametrize("entity", ENTITY_NAMES)
@pytest.mark.parametrize("operation", ["UPSERT", "DELETE"])
def test_envelope_round_trips(entity: str, operation: str) -> None:
    envelope = sample_envelope(entity, operation, version=42)
    validate(ENVELOPE_NAME, envelope)
    decoded = decode(ENVELOPE_NAME, encode(ENVELOPE_NAME, envelope))
    assert decoded == envelope
    assert (decoded["Payload"] is None) == (operation == "DELETE")


@pytest.mark.parametrize("entity", ENTITY_NAMES)
def test_envelope_bytes_match_a_standalone_reader(entity: str) -> None:
    """The bytes are plain Avro: a reader with the envelope schema inlined reads them."""
    definitions = {f"{ENTITY_NAMESPACE}.{n}": _REGISTRY.raw[n] for n in ENTITY_NAMES}
    standalone = fastavro.parse_schema(_inline(_REGISTRY.raw[ENVELOPE_NAME], definitions))
    envelope = sample_envelope(entity)
    read = fastavro.schemaless_reader(io.BytesIO(encode(ENVELOPE_NAME, envelope)), standalone, None)
    assert read == envelope


@pytest.mark.parametrize("entity", ENTITY_NAMES)
def test_each_sample_fits_only_its_own_record(entity: str) -> None:
    """The Payload union is never ambiguous: no entity's record passes as another's."""
    for other in ENTITY_NAMES:
        conforms = fastavro.validation.validate(sample(entity), schema(other), raise_errors=False)
        assert conforms == (other == entity), other


Breaker = Callable[[dict[str, Any]], None]

BROKEN: list[tuple[str, str, str, Breaker]] = [
    # (entity, field the message must name, words it must contain, how the sample is broken)
    ("Family", "PlanCode", "missing; expected string", lambda r: r.pop("PlanCode")),
    ("Family", "FamilyName", "expected string, got null", lambda r: r.update(FamilyName=None)),
    ("Family", "PlanCode", "expected string, got int", lambda r: r.update(PlanCode=7_301_955_913)),
    ("FamilyMember", "BirthDate", "expected date, got str", lambda r: r.update(BirthDate=CANARY)),
    ("FamilyMember", "Relationship", "enum Relationship", lambda r: r.update(Relationship=CANARY)),
    ("Claim", "Status", "SUBMITTED, PENDING", lambda r: r.update(Status=CANARY)),
    (
        "Claim",
        "BilledAmount",
        "more than 10 digits before",
        lambda r: r.update(BilledAmount=Decimal("73019559137.25")),
    ),
    (
        "Claim",
        "AllowedAmount",
        "more than 10 digits before",
        lambda r: r.update(AllowedAmount=Decimal("73019559137.2")),
    ),
    ("Claim", "PaidAmount", "more than 2 digits after", lambda r: r.update(PaidAmount=Decimal("152.371"))),
    (
        "Claim",
        "MemberResponsibilityAmount",
        "expected decimal(12,2), got float",
        lambda r: r.update(MemberResponsibilityAmount=182.37),
    ),
    ("EOP", "PaymentAmount", "not a finite number", lambda r: r.update(PaymentAmount=Decimal("NaN"))),
    ("Provider", "InNetwork", "expected boolean, got int", lambda r: r.update(InNetwork=1)),
    (
        "Care",
        "ServiceStartDate",
        "expected date, got datetime",
        lambda r: r.update(ServiceStartDate=dt.datetime(2024, 10, 21, tzinfo=dt.UTC)),
    ),
    ("Care", "UpdatedAt", "naive datetime", lambda r: r.update(UpdatedAt=dt.datetime(2024, 10, 21))),  # noqa: DTZ001
    (
        "Care",
        "FamilyMemberId",
        "expected string, got bytes",
        lambda r: r.update(FamilyMemberId=CANARY.encode()),
    ),
]


@pytest.mark.parametrize(("entity", "field", "words", "breaker"), BROKEN)
def test_validate_names_the_field_never_the_value(
    entity: str, field: str, words: str, breaker: Breaker
) -> None:
    record = sample(entity)
    breaker(record)
    with pytest.raises(SchemaValidationError) as caught:
        validate(entity, record)
    message = str(caught.value)
    assert message.startswith(f"{entity}: field {field!r}: ")
    assert words in message
    for secret in (CANARY, "7301955913", "73019559137", "152.371", "182.37"):
        assert secret not in message
    assert caught.value.reason == "schema_violation"


ENCODE_ACCEPTS = {
    # fastavro writes these without complaint; encode trusts that validate ran first (see its docstring)
    ("Claim", "AllowedAmount"),  # fastavro counts 12 digits here, before scaling to 13
    ("Provider", "InNetwork"),  # 1 is written as true
    ("Care", "ServiceStartDate"),  # a datetime is written as its date
    ("Care", "UpdatedAt"),  # a naive datetime is written as local time
}


def _encode_error(entity: str, record: dict[str, Any]) -> SchemaValidationError | None:
    try:
        encode(entity, record)
    except SchemaValidationError as exc:
        return exc
    return None


@pytest.mark.parametrize(("entity", "field", "words", "breaker"), BROKEN)
def test_encode_rejects_with_the_same_message(entity: str, field: str, words: str, breaker: Breaker) -> None:
    record = sample(entity)
    breaker(record)
    error = _encode_error(entity, record)
    if (entity, field) in ENCODE_ACCEPTS:
        assert error is None
        return
    assert error is not None
    assert str(error).startswith(f"{entity}: field {field!r}: ")
    assert CANARY not in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None  # fastavro's message, which may quote the value, is not chained


def test_unknown_fields_are_rejected_by_name() -> None:
    family = sample("Family")
    family["Nickname"] = CANARY
    with pytest.raises(SchemaValidationError, match=r"unknown field.*Nickname") as caught:
        validate("Family", family)
    assert CANARY not in str(caught.value)
    with pytest.raises(SchemaValidationError, match="Nickname"):
        encode("Family", family)


def test_a_record_must_be_a_mapping() -> None:
    with pytest.raises(SchemaValidationError, match="expected record Family, got list"):
        validate("Family", [CANARY])  # type: ignore[arg-type]


def test_int_ranges_are_checked() -> None:
    envelope = sample_envelope("Family")
    envelope["SourceVersion"] = 2**63
    with pytest.raises(SchemaValidationError, match="'SourceVersion': expected long, got an int outside"):
        validate(ENVELOPE_NAME, envelope)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda e: e["Payload"].update(FamilyName=CANARY.encode()), "Payload.FamilyName", "expected string"),
        (lambda e: e["Payload"].pop("PlanCode"), "Payload.PlanCode", "missing"),
        (lambda e: e.update(Operation="DELETE"), "Payload", "null when Operation is DELETE"),
        (lambda e: e.update(Payload=None), "Payload", "a Family record when Operation is UPSERT"),
        (lambda e: e.update(EntityType="Claim"), "Payload.CareId", "missing"),
        (lambda e: e.update(EntityId=CANARY), "Payload.EntityId", "the envelope's EntityId"),
        (lambda e: e.update(Operation=CANARY), "Operation", "enum Operation (UPSERT, DELETE)"),
    ],
)
def test_envelope_rules(change: Breaker, field: str, words: str) -> None:
    envelope = sample_envelope("Family")
    change(envelope)
    with pytest.raises(
        SchemaValidationError, match=re.escape(f"field '{field}': ") + ".*" + re.escape(words)
    ) as caught:
        validate(ENVELOPE_NAME, envelope)
    assert str(caught.value).startswith(ENVELOPE_NAME)
    assert CANARY not in str(caught.value)


def test_decoded_envelope_validates() -> None:
    envelope = sample_envelope("Claim")
    validate(ENVELOPE_NAME, decode(ENVELOPE_NAME, encode(ENVELOPE_NAME, envelope)))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "not a Family record"),
        (b"\xff" * 40, "not a Family record"),
        (None, "trailing byte"),
    ],
)
def test_bad_bytes_are_a_decode_error(data: bytes | None, words: str) -> None:
    if data is None:
        data = encode("Family", sample("Family")) + b"\x00"
    with pytest.raises(DecodeError, match=words) as caught:
        decode("Family", data)
    assert caught.value.reason == "decode_error"


def test_truncated_bytes_never_decode() -> None:
    data = encode("Claim", sample("Claim"))
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            decode("Claim", data[:end])


@pytest.mark.parametrize(
    "call", [lambda: validate("Patient", {}), lambda: encode("Patient", {}), lambda: decode("Patient", b"")]
)
def test_unknown_schema_name_is_a_config_error(call: Callable[[], object]) -> None:
    with pytest.raises(ConfigError, match="Patient"):
        call()


@given(
    st.decimals(
        min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"), places=2, allow_nan=False
    )
)
def test_every_decimal_12_2_validates_and_round_trips(amount: Decimal) -> None:
    claim = sample("Claim")
    claim["BilledAmount"] = amount
    validate("Claim", claim)
    assert decode("Claim", encode("Claim", claim))["BilledAmount"] == amount


@given(st.decimals(min_value=Decimal("10000000000"), max_value=Decimal("1E+15"), places=2, allow_nan=False))
def test_amounts_of_eleven_or_more_digits_are_rejected(amount: Decimal) -> None:
    claim = sample("Claim")
    claim["BilledAmount"] = -amount
    with pytest.raises(SchemaValidationError, match=r"'BilledAmount'.*digits before"):
        validate("Claim", claim)
