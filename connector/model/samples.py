"""Valid, realistic example records for every schema, for tests and the synthetic generator.

Every value is invented. The samples reference each other (the member belongs to the sample
family, the claim bills the sample care episode, ...), so a full set passes referential checks.
Timestamps are whole milliseconds, so a sample survives an encode/decode round trip unchanged.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from connector.model.exceptions import UnknownSchemaError
from connector.model.schemas import ENVELOPE_NAME

__all__ = ["sample", "sample_envelope"]

_UPDATED_AT = dt.datetime(2024, 11, 4, 17, 30, 5, 123000, tzinfo=dt.UTC)


def _family() -> dict[str, Any]:
    return {
        "EntityId": "fam-0001",
        "FamilyName": "Rivera",
        "Status": "ACTIVE",
        "PlanCode": "PPO-GOLD-2024",
        "CoverageStartDate": dt.date(2024, 1, 1),
        "CoverageEndDate": None,
        "StateCode": "MA",
        "PostalCode": "02134",
        "PrimaryEmail": "rivera.household@example.com",
        "DeductibleAmount": Decimal("3000.00"),
        "OutOfPocketMaximum": Decimal("9100.00"),
        "UpdatedAt": _UPDATED_AT,
    }


def _provider() -> dict[str, Any]:
    return {
        "EntityId": "prv-0001",
        "Npi": "1234567893",
        "DisplayName": "Harbor Pediatrics Group",
        "ProviderType": "CLINIC",
        "TaxonomyCode": "208000000X",
        "InNetwork": True,
        "Status": "ACTIVE",
        "StateCode": "MA",
        "PostalCode": "02114",
        "UpdatedAt": _UPDATED_AT,
    }


def _family_member() -> dict[str, Any]:
    return {
        "EntityId": "mem-0001",
        "FamilyId": "fam-0001",
        "MemberNumber": "XKP100234501",
        "FirstName": "Lucia",
        "LastName": "Rivera",
        "BirthDate": dt.date(2016, 3, 14),
        "Gender": "FEMALE",
        "Relationship": "CHILD",
        "EnrollmentDate": dt.date(2024, 1, 1),
        "TerminationDate": None,
        "UpdatedAt": _UPDATED_AT,
    }


def _care() -> dict[str, Any]:
    return {
        "EntityId": "car-0001",
        "FamilyMemberId": "mem-0001",
        "ProviderId": "prv-0001",
        "CareType": "PREVENTIVE",
        "Status": "COMPLETED",
        "ServiceStartDate": dt.date(2024, 10, 21),
        "ServiceEndDate": None,
        "DiagnosisCode": "Z00.129",
        "ProcedureCode": "99393",
        "PlaceOfServiceCode": "11",
        "UpdatedAt": _UPDATED_AT,
    }


def _claim() -> dict[str, Any]:
    return {
        "EntityId": "clm-0001",
        "CareId": "car-0001",
        "ProviderId": "prv-0001",
        "ClaimNumber": "2024295000123",
        "Status": "PAID",
        "SubmittedDate": dt.date(2024, 10, 22),
        "BilledAmount": Decimal("245.00"),
        "AllowedAmount": Decimal("182.37"),
        "PaidAmount": Decimal("152.37"),
        "MemberResponsibilityAmount": Decimal("30.00"),
        "DenialReasonCode": None,
        "UpdatedAt": _UPDATED_AT,
    }


def _eop() -> dict[str, Any]:
    return {
        "EntityId": "eop-0001",
        "ClaimId": "clm-0001",
        "Status": "ISSUED",
        "IssuedDate": dt.date(2024, 11, 4),
        "Payee": "PROVIDER",
        "PaymentMethod": "ACH",
        "PaymentAmount": Decimal("152.37"),
        "MemberResponsibilityAmount": Decimal("30.00"),
        "PaymentReference": "ACH-000981245",
        "UpdatedAt": _UPDATED_AT,
    }


_BUILDERS = {
    "Family": _family,
    "Provider": _provider,
    "FamilyMember": _family_member,
    "Care": _care,
    "Claim": _claim,
    "EOP": _eop,
}


def sample(name: str) -> dict[str, Any]:
    """A fresh valid record of ``name`` (an entity, or ``ChangeEnvelope`` for an upsert of a Family)."""
    if name == ENVELOPE_NAME:
        return sample_envelope("Family")
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise UnknownSchemaError(f"no sample for {name!r}: expected an entity or {ENVELOPE_NAME}") from None


def sample_envelope(entity: str, operation: str = "UPSERT", version: int = 1) -> dict[str, Any]:
    """A fresh valid ``ChangeEnvelope`` for the sample ``entity``: its upsert, or its delete."""
    payload = sample(entity) if entity != ENVELOPE_NAME else None
    if payload is None:
        raise UnknownSchemaError(f"no envelope sample for {entity!r}: expected an entity")
    return {
        "EntityType": entity,
        "EntityId": payload["EntityId"],
        "Operation": operation,
        "SourceVersion": version,
        "OccurredAt": payload["UpdatedAt"],
        "Payload": payload if operation == "UPSERT" else None,
    }
