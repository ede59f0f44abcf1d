"""A synthetic row as the connector receives it and as CareCloud must get it (private).

``wire`` and ``envelope`` write a row as Debezium's JSON converter does (epoch days, epoch
micros, base64 ``precise`` decimals, json columns as text, the unchanged-TOAST placeholder).
``record`` turns a row into its entity record by reading examples/mapping.yaml *by hand*: it
shares no code with the connector's decoders, mapper or merge, so the expected state it
yields is an independent answer a run is checked against.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from connector.devtools._synthetic_rows import T_SNAPSHOT, Row

__all__ = ["PLACEHOLDER", "envelope", "record", "wire"]

PLACEHOLDER = "__debezium_unavailable_value"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _money(value: Decimal) -> str:
    """Debezium's ``precise`` decimal: base64 of the unscaled big-endian two's complement."""
    unscaled = int(value.scaleb(2))
    return base64.b64encode(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)).decode()


def wire(row: Row, toast: tuple[str, ...]) -> dict[str, Any]:
    """A row as Debezium's JSON converter sends it: epoch days, epoch micros, base64 decimals,
    json columns as text, unchanged TOAST columns as the placeholder."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        if column in toast:
            out[column] = PLACEHOLDER
        elif isinstance(value, Decimal):
            out[column] = _money(value)
        elif isinstance(value, datetime):
            out[column] = (value - _EPOCH) // _MICROSECOND
        elif isinstance(value, date):
            out[column] = (value - _EPOCH_DAY).days
        elif isinstance(value, dict):
            out[column] = orjson.dumps(value).decode()
        else:
            out[column] = value
    return out


def envelope(
    table: str,
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    major: int | None,
    lsn: int,
    tx: int,
    order: tuple[int, int] | None,
    at: float | None,
) -> bytes:
    """Debezium's envelope; ``major`` is ``sequence[0]`` (the commit LSN, None in a snapshot),
    ``lsn`` the event's own, ``order`` (total, per table) the transaction block, ``at`` the
    commit time (epoch seconds; None: the snapshot's)."""
    ts_ms = int((at or T_SNAPSHOT.timestamp()) * 1000)
    source = {
        "version": "3.0.7.Final",
        "connector": "postgresql",
        "name": "benefits",
        "ts_ms": ts_ms,
        "snapshot": "true" if op == "r" else "false",
        "db": "benefits",
        "sequence": orjson.dumps([None if major is None else str(major), str(lsn)]).decode(),
        "schema": "public",
        "table": table,
        "txId": tx,
        "lsn": lsn,
        "xmin": None,
    }
    transaction = None
    if order is not None and major is not None:
        transaction = {"id": f"{tx}:{major}", "total_order": order[0], "data_collection_order": order[1]}
    doc = {"before": before, "after": after, "source": source, "transaction": transaction, "op": op}
    return orjson.dumps({**doc, "ts_ms": ts_ms + 150})


_ENUMS = {
    "Family.Status": {"A": "ACTIVE", "P": "PENDING", "S": "SUSPENDED", "T": "TERMINATED"},
    "Provider.ProviderType": {
        "MD": "PHYSICIAN",
        "NP": "NURSE_PRACTITIONER",
        "DDS": "DENTIST",
        "CLINIC": "CLINIC",
        "HOSP": "HOSPITAL",
    },
    "Provider.Status": {"A": "ACTIVE", "I": "INACTIVE", "S": "SUSPENDED"},
    "FamilyMember.Gender": {"F": "FEMALE", "M": "MALE", "X": "NON_BINARY", "U": "UNDISCLOSED"},
    "FamilyMember.Relationship": {
        "self": "SELF",
        "spouse": "SPOUSE",
        "child": "CHILD",
        "dependent": "DEPENDENT",
    },
}


def _millis(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def record(table: str, row: Row) -> tuple[str, str, Row]:
    """(entity, EntityId, record) of a row, exactly as examples/mapping.yaml describes it."""
    r = row
    at = _millis(r["updated_at"])
    if table == "family":
        eid = f"FAM-{r['family_id']}"
        return (
            "Family",
            eid,
            {
                "EntityId": eid,
                "FamilyName": r["family_name"],
                "Status": _ENUMS["Family.Status"][r["status"]],
                "PlanCode": r["plan_code"],
                "CoverageStartDate": r["coverage_start"],
                "CoverageEndDate": r["coverage_end"],
                "StateCode": r["address"]["state"],
                "PostalCode": r["address"]["zip"],
                "PrimaryEmail": r["email"],
                "DeductibleAmount": r["deductible"],
                "OutOfPocketMaximum": r["oop_max"],
                "UpdatedAt": at,
            },
        )
    if table == "provider":
        eid = f"PRV-{r['provider_id']}"
        return (
            "Provider",
            eid,
            {
                "EntityId": eid,
                "Npi": r["npi"],
                "DisplayName": r["display_name"],
                "ProviderType": _ENUMS["Provider.ProviderType"][r["provider_type"]],
                "TaxonomyCode": r["taxonomy_code"],
                "InNetwork": r["in_network"],
                "Status": _ENUMS["Provider.Status"][r["status"]],
                "StateCode": r["state_code"],
                "PostalCode": r["postal_code"],
                "UpdatedAt": at,
            },
        )
    if table == "family_member":
        eid = f"MEM-{r['member_id']}"
        return (
            "FamilyMember",
            eid,
            {
                "EntityId": eid,
                "FamilyId": f"FAM-{r['family_id']}",
                "MemberNumber": r["member_number"],
                "FirstName": r["first_name"],
                "LastName": r["last_name"],
                "BirthDate": r["birth_date"],
                "Gender": _ENUMS["FamilyMember.Gender"][r["gender"]],
                "Relationship": _ENUMS["FamilyMember.Relationship"][r["relationship"]],
                "EnrollmentDate": r["enrolled_on"],
                "TerminationDate": r["terminated_on"],
                "UpdatedAt": at,
            },
        )
    if table == "care_episode":
        eid = f"CARE-{r['episode_id']}"
        return (
            "Care",
            eid,
            {
                "EntityId": eid,
                "FamilyMemberId": f"MEM-{r['member_id']}",
                "ProviderId": f"PRV-{r['provider_id']}",
                "CareType": r["care_type"],
                "Status": r["status"],
                "ServiceStartDate": r["service_start"],
                "ServiceEndDate": r["service_end"],
                "DiagnosisCode": r["diagnosis_code"],
                "ProcedureCode": r["procedure_code"],
                "PlaceOfServiceCode": "11",
                "UpdatedAt": at,
            },
        )
    if table == "claim":
        eid = f"CLM-{r['claim_id']}"
        return (
            "Claim",
            eid,
            {
                "EntityId": eid,
                "CareId": f"CARE-{r['episode_id']}",
                "ProviderId": f"PRV-{r['provider_id']}",
                "ClaimNumber": r["claim_number"],
                "Status": r["status"],
                "SubmittedDate": r["submitted_on"],
                "BilledAmount": r["billed"],
                "AllowedAmount": r["allowed"],
                "PaidAmount": r["paid"],
                "MemberResponsibilityAmount": r["member_owes"],
                "DenialReasonCode": r["denial_code"],
                "UpdatedAt": at,
            },
        )
    eid = f"EOP-{r['payment_id']}"
    return (
        "EOP",
        eid,
        {
            "EntityId": eid,
            "ClaimId": f"CLM-{r['claim_id']}",
            "Status": r["status"],
            "IssuedDate": r["issued_on"],
            "Payee": r["payee"],
            "PaymentMethod": r["method"],
            "PaymentAmount": r["amount"],
            "MemberResponsibilityAmount": r["member_owes"],
            "PaymentReference": r["reference"],
            "UpdatedAt": at,
        },
    )
