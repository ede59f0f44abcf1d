"""The PostgreSQL source every SQL-driven test shares: the example mapping's six tables, their
seed rows, the oracle that maps ``SELECT *`` by hand, and the steps around Debezium and ingest.

The oracle (``expected_records``) shares no code with the connector's mapping: a test that
delivers a snapshot compares it with the database's own rows mapped here. The tests that drive
SQL (``test_source_*.py``) import from this module, never from each other.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from connector.devtools.debezium import postgres_connector
from connector.devtools.postgres import PostgresServer
from connector.ingest.service import IngestService
from tests.kafka_helpers import KafkaTestCluster

ROOT = Path(__file__).resolve().parents[2]
MAPPING = (ROOT / "examples" / "mapping.yaml").read_text()
DAY = dt.date(2026, 11, 25)
PARTITIONS = 3
TABLES = ("family", "provider", "family_member", "care_episode", "claim", "payment")
BIG = 2**53 + 1  # not a double: an id that a float-based JSON reader would corrupt

DDL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.family (family_id bigint PRIMARY KEY, family_name text NOT NULL, status text NOT NULL,
  plan_code text NOT NULL, coverage_start date NOT NULL, coverage_end date, address jsonb, email text,
  deductible numeric(12,2) NOT NULL, oop_max numeric(12,2), updated_at timestamp NOT NULL);
CREATE TABLE {s}.provider (provider_id bigint PRIMARY KEY, npi text NOT NULL, display_name text NOT NULL,
  provider_type text NOT NULL, taxonomy_code text, in_network boolean NOT NULL, status text NOT NULL,
  state_code text, postal_code text, updated_at timestamp NOT NULL);
CREATE TABLE {s}.family_member (member_id bigint PRIMARY KEY, family_id bigint NOT NULL,
  member_number text NOT NULL, first_name text NOT NULL, last_name text NOT NULL, birth_date date NOT NULL,
  gender text NOT NULL, relationship text NOT NULL, enrolled_on date NOT NULL, terminated_on date,
  updated_at timestamp NOT NULL);
CREATE TABLE {s}.care_episode (episode_id bigint PRIMARY KEY, member_id bigint NOT NULL,
  provider_id bigint NOT NULL, care_type text NOT NULL, status text NOT NULL, service_start date NOT NULL,
  service_end date, diagnosis_code text, procedure_code text, updated_at timestamp NOT NULL);
CREATE TABLE {s}.claim (claim_id bigint PRIMARY KEY, episode_id bigint NOT NULL, provider_id bigint NOT NULL,
  claim_number text NOT NULL, status text NOT NULL, submitted_on date NOT NULL, billed numeric(12,2) NOT NULL,
  allowed numeric(12,2), paid numeric(12,2), member_owes numeric(12,2), denial_code text,
  updated_at timestamp NOT NULL);
CREATE TABLE {s}.payment (payment_id bigint PRIMARY KEY, claim_id bigint NOT NULL, status text NOT NULL,
  issued_on date NOT NULL, payee text NOT NULL, method text NOT NULL, amount numeric(12,2) NOT NULL,
  member_owes numeric(12,2) NOT NULL, reference text, updated_at timestamp NOT NULL);
"""

# Rows the initial snapshot reads (op r). Family 2's name is ~10 kB of hex: TOASTed out of line.
SEED = """
INSERT INTO {s}.provider VALUES
  (1, '1234567890', 'Dr. Ada', 'MD', '207Q00000X', true, 'A', 'CA', '94110', '2024-01-01 08:00:00.123456'),
  (2, '2234567890', 'Bay Clinic', 'CLINIC', NULL, false, 'A', NULL, NULL, '2024-01-01 08:00:00');
INSERT INTO {s}.family VALUES
  (1, 'Lovelace', 'A', 'GOLD', '2024-01-01', NULL, '{{"state": "CA", "zip": "94110"}}', 'ada@example.com',
   1500.00, 6000.00, '2024-01-02 09:10:11.999999'),
  (2, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 320) AS i), 'P', 'SILVER', '2023-07-01',
   '2025-06-30', NULL, NULL, 0.00, NULL, '2024-01-02 09:10:11'),
  ({big}, 'Bigint', 'A', 'BRONZE', '2024-02-01', NULL, '{{"state": "NY"}}', NULL, 250.50, NULL,
   '2041-03-04 05:06:07.008');
INSERT INTO {s}.family_member VALUES
  (10, 1, 'M-10', 'Ada', 'Lovelace', '1948-02-29', 'F', 'self', '2024-01-01', NULL, '2024-01-02 00:00:00'),
  (11, 1, 'M-11', 'Byron', 'Lovelace', '1969-12-31', 'M', 'child', '2024-01-01', NULL, '2024-01-02 00:00:00'),
  (20, 2, 'M-20', 'Grace', 'Hopper', '1906-12-09', 'X', 'self', '2023-07-01', NULL, '2024-01-02 00:00:00'),
  ({big}, {big}, 'M-BIG', 'Big', 'Int', '1970-01-01', 'U', 'self', '2024-02-01', NULL, '2024-02-01 00:00:00');
INSERT INTO {s}.care_episode VALUES
  (100, 10, 1, 'PRIMARY_CARE', 'COMPLETED', '2024-03-01', '2024-03-01', 'Z00.00', '99213',
   '2024-03-02 00:00:00'),
  (101, 11, 2, 'DENTAL', 'SCHEDULED', '2024-04-01', NULL, NULL, NULL, '2024-03-02 00:00:00');
INSERT INTO {s}.claim VALUES
  (1000, 100, 1, 'C-1000', 'SUBMITTED', '2024-03-03', 180.00, NULL, NULL, NULL, NULL, '2024-03-03 00:00:00'),
  (1001, 100, 1, 'C-1001', 'SUBMITTED', '2024-03-04', 99999999.99, NULL, NULL, NULL, NULL,
   '2024-03-04 00:00:00'),
  (1002, 101, 2, 'C-1002', 'SUBMITTED', '2024-04-02', 75.25, NULL, NULL, NULL, NULL, '2024-04-02 00:00:00');
INSERT INTO {s}.payment VALUES
  (5000, 1000, 'ISSUED', '2024-03-10', 'PROVIDER', 'ACH', 144.00, 36.00, 'R-5000', '2024-03-10 00:00:00'),
  (5001, 1002, 'ISSUED', '2024-04-10', 'MEMBER', 'CHECK', 0.01, 0.00, NULL, '2024-04-10 00:00:00');
"""

# Changes streamed after the snapshot, in transactions of their own.

# Changes streamed after the snapshot, in transactions of their own.
CHANGES = """
UPDATE {s}.family SET status = 'A', updated_at = '2024-05-01 00:00:00' WHERE family_id = 2;
INSERT INTO {s}.family VALUES
  (3, (SELECT string_agg(md5((i * 7)::text), '') FROM generate_series(1, 320) AS i), 'A', 'GOLD',
   '2024-05-01', NULL, '{{"zip": "10001"}}', 'c@example.com', 10.10, 20.20, '2024-05-01 00:00:00');
UPDATE {s}.family SET plan_code = 'PLATINUM', updated_at = '2024-05-02 00:00:00' WHERE family_id = 3;
UPDATE {s}.claim SET status = 'APPROVED', allowed = billed, updated_at = '2024-05-03 00:00:00'
  WHERE claim_id IN (1000, 1001, 1002);
UPDATE {s}.claim SET status = 'PAID', paid = 144.00, member_owes = 36.00 WHERE claim_id = 1000;
UPDATE {s}.provider SET in_network = NOT in_network, updated_at = '2039-01-19 03:14:08' WHERE provider_id = 2;
UPDATE {s}.family_member SET terminated_on = '2024-06-30' WHERE member_id = 11;
DELETE FROM {s}.payment WHERE payment_id = 5001;
DELETE FROM {s}.family_member WHERE member_id = 20;
INSERT INTO {s}.family_member VALUES
  (20, 2, 'M-20', 'Grace B.', 'Hopper', '1906-12-09', 'F', 'spouse', '2023-07-01', NULL,
   '2024-05-04 00:00:00');
BEGIN;
INSERT INTO {s}.payment VALUES
  (5002, 1001, 'ISSUED', '2024-05-05', 'PROVIDER', 'VIRTUAL_CARD', 1.00, 0.00, NULL, '2024-05-05 00:00:00');
UPDATE {s}.payment SET amount = 2.00 WHERE payment_id = 5002;
DELETE FROM {s}.payment WHERE payment_id = 5002;
COMMIT;
BEGIN;
INSERT INTO {s}.care_episode VALUES
  (102, {big}, 1, 'TELEHEALTH', 'IN_PROGRESS', '2024-05-06', NULL, 'F41.1', NULL, '2024-05-06 00:00:00');
INSERT INTO {s}.claim VALUES
  ({big}, 102, 1, 'C-BIG', 'DENIED', '2024-05-07', 12.34, 0.00, 0.00, 12.34, 'CO-50', '2024-05-07 00:00:00');
COMMIT;
BEGIN;
UPDATE {s}.family SET family_id = CASE family_id WHEN 2 THEN 22 ELSE 35 END WHERE family_id IN (2, 3);
UPDATE {s}.family_member SET family_id = 22 WHERE family_id = 2;
COMMIT;
UPDATE {s}.family SET plan_code = 'BRONZE', updated_at = '2024-05-08 00:00:00' WHERE family_id = 22;
UPDATE {s}.provider SET display_name = '{sentinel}' WHERE provider_id = 1;
"""


# -- the oracle: the database's rows, mapped by hand (no connector code) -----------------------

FAMILY_STATUS = {"A": "ACTIVE", "P": "PENDING", "S": "SUSPENDED", "T": "TERMINATED"}
PROVIDER_TYPE = {
    "MD": "PHYSICIAN",
    "NP": "NURSE_PRACTITIONER",
    "DDS": "DENTIST",
    "CLINIC": "CLINIC",
    "HOSP": "HOSPITAL",
}
PROVIDER_STATUS = {"A": "ACTIVE", "I": "INACTIVE", "S": "SUSPENDED"}
GENDER = {"F": "FEMALE", "M": "MALE", "X": "NON_BINARY", "U": "UNDISCLOSED"}
RELATIONSHIP = {"self": "SELF", "spouse": "SPOUSE", "child": "CHILD", "dependent": "DEPENDENT"}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _money(value: Any) -> str:
    return "" if value is None else f"{Decimal(str(value)):.2f}"


def _millis(value: str) -> str:
    """PostgreSQL's ISO timestamp (no zone: UTC) at millisecond precision, as ``...sss`` + ``Z``."""
    whole, _, fraction = value.partition(".")
    return f"{whole}.{(fraction + '000')[:3]}Z"


def family_record(r: dict[str, Any]) -> dict[str, str]:
    address = r["address"] or {}
    return {
        "EntityId": f"FAM-{r['family_id']}",
        "FamilyName": r["family_name"],
        "Status": FAMILY_STATUS[r["status"]],
        "PlanCode": r["plan_code"],
        "CoverageStartDate": r["coverage_start"],
        "CoverageEndDate": _text(r["coverage_end"]),
        "StateCode": _text(address.get("state")),
        "PostalCode": _text(address.get("zip")),
        "PrimaryEmail": _text(r["email"]),
        "DeductibleAmount": _money(r["deductible"]),
        "OutOfPocketMaximum": _money(r["oop_max"]),
        "UpdatedAt": _millis(r["updated_at"]),
    }


def provider_record(r: dict[str, Any]) -> dict[str, str]:
    return {
        "EntityId": f"PRV-{r['provider_id']}",
        "Npi": r["npi"],
        "DisplayName": r["display_name"],
        "ProviderType": PROVIDER_TYPE[r["provider_type"]],
        "TaxonomyCode": _text(r["taxonomy_code"]),
        "InNetwork": "true" if r["in_network"] else "false",
        "Status": PROVIDER_STATUS[r["status"]],
        "StateCode": _text(r["state_code"]),
        "PostalCode": _text(r["postal_code"]),
        "UpdatedAt": _millis(r["updated_at"]),
    }


def member_record(r: dict[str, Any]) -> dict[str, str]:
    return {
        "EntityId": f"MEM-{r['member_id']}",
        "FamilyId": f"FAM-{r['family_id']}",
        "MemberNumber": r["member_number"],
        "FirstName": r["first_name"],
        "LastName": r["last_name"],
        "BirthDate": r["birth_date"],
        "Gender": GENDER[r["gender"]],
        "Relationship": RELATIONSHIP[r["relationship"]],
        "EnrollmentDate": r["enrolled_on"],
        "TerminationDate": _text(r["terminated_on"]),
        "UpdatedAt": _millis(r["updated_at"]),
    }


def care_record(r: dict[str, Any]) -> dict[str, str]:
    return {
        "EntityId": f"CARE-{r['episode_id']}",
        "FamilyMemberId": f"MEM-{r['member_id']}",
        "ProviderId": f"PRV-{r['provider_id']}",
        "CareType": r["care_type"],
        "Status": r["status"],
        "ServiceStartDate": r["service_start"],
        "ServiceEndDate": _text(r["service_end"]),
        "DiagnosisCode": _text(r["diagnosis_code"]),
        "ProcedureCode": _text(r["procedure_code"]),
        "PlaceOfServiceCode": "11",
        "UpdatedAt": _millis(r["updated_at"]),
    }


def claim_record(r: dict[str, Any]) -> dict[str, str]:
    return {
        "EntityId": f"CLM-{r['claim_id']}",
        "CareId": f"CARE-{r['episode_id']}",
        "ProviderId": f"PRV-{r['provider_id']}",
        "ClaimNumber": r["claim_number"],
        "Status": r["status"],
        "SubmittedDate": r["submitted_on"],
        "BilledAmount": _money(r["billed"]),
        "AllowedAmount": _money(r["allowed"]),
        "PaidAmount": _money(r["paid"]),
        "MemberResponsibilityAmount": _money(r["member_owes"]),
        "DenialReasonCode": _text(r["denial_code"]),
        "UpdatedAt": _millis(r["updated_at"]),
    }


def eop_record(r: dict[str, Any]) -> dict[str, str]:
    return {
        "EntityId": f"EOP-{r['payment_id']}",
        "ClaimId": f"CLM-{r['claim_id']}",
        "Status": r["status"],
        "IssuedDate": r["issued_on"],
        "Payee": r["payee"],
        "PaymentMethod": r["method"],
        "PaymentAmount": _money(r["amount"]),
        "MemberResponsibilityAmount": _money(r["member_owes"]),
        "PaymentReference": _text(r["reference"]),
        "UpdatedAt": _millis(r["updated_at"]),
    }


ORACLE: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, str]]]] = {
    "Family": ("family", family_record),
    "Provider": ("provider", provider_record),
    "FamilyMember": ("family_member", member_record),
    "Care": ("care_episode", care_record),
    "Claim": ("claim", claim_record),
    "EOP": ("payment", eop_record),
}


def expected_records(
    pg: PostgresServer,
    database: str,
    schema: str,
    oracle: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, str]]]] = ORACLE,
) -> dict[str, list[dict[str, str]]]:
    """Every entity as CareCloud should receive it: ``SELECT *`` of its table, mapped by
    ``oracle`` (the example mapping's by hand, unless a test maps differently)."""
    return {
        entity: sorted((to_record(row) for row in pg.rows(f"{schema}.{table}", database)), key=record_id)
        for entity, (table, to_record) in oracle.items()
    }


def record_id(record: dict[str, str]) -> str:
    return record["EntityId"]


# -- the source and the ingest -------------------------------------------------------------------


def wait_for_message(kafka: KafkaTestCluster, topic: str, needle: bytes, timeout: float) -> float:
    """Seconds until a message of ``topic`` containing ``needle`` is read."""
    start = time.monotonic()
    consumer = kafka.consumer(None, {"enable.partition.eof": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    try:
        while time.monotonic() - start < timeout:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and needle in (msg.value() or b""):
                return time.monotonic() - start
    finally:
        consumer.close()
    raise AssertionError(f"{needle!r} not on {topic} in {timeout:.0f} s")


def end_offsets(kafka: KafkaTestCluster, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = kafka.consumer(None)
    try:
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for topic in topics
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def seeded_connector(
    postgres: PostgresServer,
    database: str,
    schema: str,
    prefix: str,
    *,
    schemas: bool = False,
    **overrides: str,
) -> dict[str, str]:
    """The six tables created and seeded in ``schema``, and a Debezium connector's configuration
    capturing them under ``prefix`` (its slot dropped when it stops); the test registers it."""
    postgres.execute(DDL.format(s=schema), database)
    postgres.execute(SEED.format(s=schema, big=BIG), database)
    return postgres_connector(
        prefix,
        port=postgres.port,
        database=database,
        topic_prefix=prefix,
        tables=[f"{schema}.{table}" for table in TABLES],
        schemas=schemas,
        partitions=PARTITIONS,
        **{"slot.drop.on.stop": "true", **overrides},
    )


def key_moves(kafka: KafkaTestCluster, topic: str, count: int = 2) -> list[tuple[int, int]]:
    """(old key's partition, new key's partition) of each primary-key update Debezium sent: the
    delete names the new key in its ``__debezium.newkey`` header, the create is keyed by it."""

    def payload(raw: bytes | None) -> str:
        doc = json.loads(raw or b"null")
        return json.dumps(doc.get("payload", doc) if isinstance(doc, dict) else doc, sort_keys=True)

    consumer = kafka.consumer(None, {"enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    deleted_at: dict[str, int] = {}  # new key -> partition of the delete under the old key
    created_at: dict[str, int] = {}  # new key -> partition of the create under it
    eof: set[int] = set()
    try:
        while len(eof) < PARTITIONS:
            msg = consumer.poll(5)
            assert msg is not None, "the source topic did not reach its end"
            if msg.error() is not None:
                eof.add(msg.partition() or 0)
                continue
            headers = dict(msg.headers() or [])
            if "__debezium.newkey" in headers:
                deleted_at[payload(headers["__debezium.newkey"])] = msg.partition() or 0
            elif "__debezium.oldkey" in headers:
                created_at[payload(msg.key())] = msg.partition() or 0
    finally:
        consumer.close()
    assert len(deleted_at) == count, deleted_at
    assert deleted_at.keys() == created_at.keys(), (deleted_at, created_at)
    return [(deleted_at[key], created_at[key]) for key in sorted(deleted_at)]


def run_facts(manifest: Any, entity: str) -> dict[str, Any]:
    """What the snapshot run recorded about ``entity``: its delivery and every check naming it."""
    found: dict[str, Any] = {
        f"result.{name}": getattr(r, name)
        for r in manifest.entities
        if r.entity == entity
        for name in ("status", "records", "held_out", "reason")
    }
    for name, check in manifest.checks.items():
        if isinstance(check, dict) and entity in check:
            found[name] = check[entity]
        elif name == "sweep":
            found[name] = check
    return found


def state_history(kafka: KafkaTestCluster, topic: str, entity: str, ids: set[str]) -> list[str]:
    """Every state record of ``ids``, in log order per partition: where it is, its version, and
    whether it is a delete, lacks fields or has fields filled by an older change (no values)."""
    wanted = {f"{entity}/{entity_id}".encode() for entity_id in ids}
    consumer = kafka.consumer(None, {"enable.partition.eof": True, "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[str] = []
    eof: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(eof) < PARTITIONS and time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is None:
                continue
            if msg.error() is not None:
                eof.add(msg.partition())
                continue
            if msg.key() in wanted or (msg.key() or b"").startswith(b"~carry/" + entity.encode()):
                value = msg.value()
                doc: dict[str, Any] = json.loads(value) if value else {}
                shape = {k: doc[k] for k in ("v", "d", "m", "fv") if k in doc} if doc else "tombstone"
                found.append(f"{msg.partition()}@{msg.offset()} {msg.key()!r} {shape}")
    finally:
        consumer.close()
    return found


def committed_partitions(
    kafka: KafkaTestCluster, group: str, topics: list[str]
) -> dict[tuple[str, int], TopicPartition]:
    """The group's committed position of every partition of ``topics``, metadata included."""
    consumer = kafka.consumer(group, {"enable.auto.commit": False})
    try:
        parts = consumer.committed(
            [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)], timeout=10
        )
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp for tp in parts}


def committed_offsets(kafka: KafkaTestCluster, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """The group's committed offset of every partition of ``topics`` (0 where none is)."""
    return {k: max(tp.offset, 0) for k, tp in committed_partitions(kafka, group, topics).items()}


def mapping_for(prefix: str, schema: str, mapping: str = MAPPING) -> str:
    """``mapping`` (the example's by default) over the topics Debezium writes under ``prefix``
    for the tables of ``schema``."""
    return mapping.replace("benefits.public.", f"{prefix}.{schema}.").replace("\n  public.", f"\n  {schema}.")


def ingest_to_end(
    service: IngestService,
    kafka: KafkaTestCluster,
    group: str,
    ends: dict[tuple[str, int], int],
    *,
    timeout_s: float = 90,
    carry: bool = False,
) -> dict[str, int]:
    """Run the started ``service``'s batches until ``group`` has committed every partition of
    ``ends`` (``end_offsets``) to its end, and with ``carry`` until it has also taken in every
    primary-key update's offer it sent to the carry topic, as it would in production; its counts."""
    topics = sorted({topic for topic, _ in ends})
    deadline = time.monotonic() + timeout_s
    while committed_offsets(kafka, group, topics) != ends:
        assert time.monotonic() < deadline, (committed_offsets(kafka, group, topics), ends)
        service.run_batch()

    def received() -> int:
        return sum(service.counts[f"carry_{outcome}"] for outcome in ("filled", "pending", "ignored"))

    while carry and received() < service.counts["carry_offers"]:
        assert time.monotonic() < deadline, dict(service.counts)
        service.run_batch()
    return dict(service.counts)
