"""Writes examples/events.jsonl: Debezium PostgreSQL (pgoutput) events for examples/mapping.yaml.

Run ``python examples/make_events.py`` to regenerate. Each block below is one scenario a
mapping check must get right; tests/unit/test_replay_example.py states the state a reader of
this file expects. The messages are shaped as Debezium 3.x emits them with the JSON converter
and ``schemas.enable=false``: decimals in ``precise`` mode as base64, dates as epoch days,
timestamps as epoch microseconds, ``source.sequence`` as a JSON string.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("events.jsonl")
PREFIX = "benefits.public."
SNAPSHOT_LSN = 24_023_128
T0 = 1_732_000_000_000_000  # epoch micros
offsets: dict[str, int] = {}
lines: list[dict[str, Any]] = []


def money(text: str) -> str:
    """Debezium's precise decimal: base64 of the unscaled big-endian two's-complement integer."""
    unscaled = int(text.replace(".", ""))
    return base64.b64encode(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)).decode()


def emit(
    table: str,
    op: str,
    key: dict[str, Any],
    row: dict[str, Any] | None,
    *,
    lsn: int,
    commit: int | None,
    tx: int,
    headers: dict[str, Any] | None = None,
    value: Any = "auto",
    offset: int | None = None,
) -> None:
    topic = PREFIX + table
    off = offsets.get(topic, 0) if offset is None else offset
    offsets[topic] = max(offsets.get(topic, 0), off + 1)
    if value == "auto":
        value = {
            "before": row if op == "d" else None,
            "after": None if op == "d" else row,
            "source": {
                "version": "3.0.7.Final",
                "connector": "postgresql",
                "name": "benefits",
                "ts_ms": 1_732_000_000_000 + lsn % 100_000,
                "snapshot": "true" if op == "r" else "false",
                "db": "benefits",
                "sequence": json.dumps([None if commit is None else str(commit), str(lsn)]),
                "schema": "public",
                "table": table,
                "txId": tx,
                "lsn": lsn,
                "xmin": None,
            },
            "transaction": None
            if op == "r"
            else {"id": f"{tx}:{lsn}", "total_order": 1, "data_collection_order": 1},
            "op": op,
            "ts_ms": 1_732_000_000_100,
        }
    line: dict[str, Any] = {"topic": topic, "partition": 0, "offset": off, "key": key}
    if isinstance(value, bytes):  # not JSON at all: the replay input carries it as base64
        line["value_b64"] = base64.b64encode(value).decode()
    else:
        line["value"] = value
    if headers:
        line["headers"] = headers
    lines.append(line)


def family(fid: int, name: str, status: str = "A", **over: Any) -> dict[str, Any]:
    row = {
        "family_id": fid,
        "family_name": name,
        "status": status,
        "plan_code": "PPO-500",
        "coverage_start": 19_723,
        "coverage_end": None,
        "address": json.dumps({"state": "CA", "zip": "9410" + str(fid)}),
        "email": None,
        "deductible": money("1500.00"),
        "oop_max": money("6000.00"),
        "updated_at": T0,
    }
    return {**row, **over}


def provider(pid: int, name: str) -> dict[str, Any]:
    return {
        "provider_id": pid,
        "npi": f"19{pid:08d}",
        "display_name": name,
        "provider_type": "MD",
        "taxonomy_code": "207Q00000X",
        "in_network": True,
        "status": "A",
        "state_code": "CA",
        "postal_code": "94107",
        "updated_at": T0,
    }


def member(mid: int, fid: int, first: str, rel: str) -> dict[str, Any]:
    return {
        "member_id": mid,
        "family_id": fid,
        "member_number": f"M{mid:05d}",
        "first_name": first,
        "last_name": "Okafor",
        "birth_date": 5_000 + mid,
        "gender": "F",
        "relationship": rel,
        "enrolled_on": 19_723,
        "terminated_on": None,
        "updated_at": T0,
    }


def care(eid: int, mid: int, pid: int, **over: Any) -> dict[str, Any]:
    row = {
        "episode_id": eid,
        "member_id": mid,
        "provider_id": pid,
        "care_type": "PRIMARY_CARE",
        "status": "COMPLETED",
        "service_start": 19_800,
        "service_end": 19_800,
        "diagnosis_code": "Z00.00",
        "procedure_code": "99213",
        "updated_at": T0,
    }
    return {**row, **over}


def claim(cid: int, eid: int, pid: int, status: str, billed: str, **over: Any) -> dict[str, Any]:
    row = {
        "claim_id": cid,
        "episode_id": eid,
        "provider_id": pid,
        "claim_number": f"C-{cid:04d}",
        "status": status,
        "submitted_on": 19_801,
        "billed": money(billed),
        "allowed": None,
        "paid": None,
        "member_owes": None,
        "denial_code": None,
        "updated_at": T0,
    }
    return {**row, **over}


def payment(pay_id: int, cid: int, amount: str, **over: Any) -> dict[str, Any]:
    row = {
        "payment_id": pay_id,
        "claim_id": cid,
        "status": "ISSUED",
        "issued_on": 19_830,
        "payee": "PROVIDER",
        "method": "ACH",
        "amount": money(amount),
        "member_owes": money("25.00"),
        "reference": "ACH-77",
        "updated_at": T0,
    }
    return {**row, **over}


def build() -> None:
    # Initial snapshot (op=r): every row shares one LSN and sequence[0] is null.
    for fid, name in ((1, "Okafor"), (2, "Lindqvist"), (3, "Haddad")):
        emit("family", "r", {"family_id": fid}, family(fid, name), lsn=SNAPSHOT_LSN, commit=None, tx=700)
    for pid, name in ((1, "Bayview Family Medicine"), (2, "Mission Pediatrics")):
        emit(
            "provider", "r", {"provider_id": pid}, provider(pid, name), lsn=SNAPSHOT_LSN, commit=None, tx=700
        )
    for mid, fid, first, rel in (
        (1, 1, "Adaeze", "self"),
        (2, 1, "Chidi", "child"),
        (3, 2, "Astrid", "self"),
    ):
        emit(
            "family_member",
            "r",
            {"member_id": mid},
            member(mid, fid, first, rel),
            lsn=SNAPSHOT_LSN,
            commit=None,
            tx=700,
        )
    emit("care_episode", "r", {"episode_id": 1}, care(1, 1, 1), lsn=SNAPSHOT_LSN, commit=None, tx=700)
    emit(
        "care_episode",
        "r",
        {"episode_id": 2},
        care(2, 3, 2, care_type="SPECIALIST"),
        lsn=SNAPSHOT_LSN,
        commit=None,
        tx=700,
    )

    # Streaming. Family 2 suspended (tx 801), then the initial snapshot's read of family 2 is
    # delivered again, later, with the old status: a read never outranks a change streamed after
    # its snapshot (a re-snapshot, at a later LSN, would: docs/decisions/0019).
    emit(
        "family",
        "u",
        {"family_id": 2},
        family(2, "Lindqvist", "S"),
        lsn=24_100_000,
        commit=24_090_000,
        tx=801,
    )
    emit("family", "r", {"family_id": 2}, family(2, "Lindqvist", "A"), lsn=SNAPSHOT_LSN, commit=None, tx=700)

    # Claim 1: two updates delivered out of order (PAID, commit 24_300_000, lands before
    # APPROVED, commit 24_200_000); then a duplicate of the PAID message (same offset).
    emit(
        "claim",
        "c",
        {"claim_id": 1},
        claim(1, 1, 1, "SUBMITTED", "180.00"),
        lsn=24_150_000,
        commit=24_140_000,
        tx=802,
    )
    paid = claim(
        1, 1, 1, "PAID", "180.00", allowed=money("150.00"), paid=money("125.00"), member_owes=money("25.00")
    )
    emit("claim", "u", {"claim_id": 1}, paid, lsn=24_310_000, commit=24_300_000, tx=804, offset=2)
    emit(
        "claim",
        "u",
        {"claim_id": 1},
        claim(1, 1, 1, "APPROVED", "180.00", allowed=money("150.00")),
        lsn=24_210_000,
        commit=24_200_000,
        tx=803,
        offset=1,
    )
    emit("claim", "u", {"claim_id": 1}, paid, lsn=24_310_000, commit=24_300_000, tx=804, offset=2)

    # Claim 2: created, deleted, then a late older update (delivered after the delete) must
    # not bring it back; the delete's tombstone is not a second delete.
    emit(
        "claim",
        "c",
        {"claim_id": 2},
        claim(2, 2, 2, "SUBMITTED", "420.00"),
        lsn=24_160_000,
        commit=24_140_000,
        tx=802,
    )
    emit(
        "claim",
        "d",
        {"claim_id": 2},
        {
            "claim_id": 2,
            **dict.fromkeys(
                (
                    "episode_id",
                    "provider_id",
                    "claim_number",
                    "status",
                    "submitted_on",
                    "billed",
                    "allowed",
                    "paid",
                    "member_owes",
                    "denial_code",
                    "updated_at",
                )
            ),
        },
        lsn=24_410_000,
        commit=24_400_000,
        tx=806,
    )
    emit("claim", "d", {"claim_id": 2}, None, lsn=0, commit=0, tx=0, value=None)  # tombstone
    emit(
        "claim",
        "u",
        {"claim_id": 2},
        claim(2, 2, 2, "PENDING", "420.00"),
        lsn=24_220_000,
        commit=24_200_000,
        tx=803,
    )

    # Claim 3: deleted (before carries only the key, REPLICA IDENTITY DEFAULT) and re-created.
    emit(
        "claim",
        "c",
        {"claim_id": 3},
        claim(3, 1, 2, "SUBMITTED", "75.50"),
        lsn=24_170_000,
        commit=24_140_000,
        tx=802,
    )
    emit("claim", "d", {"claim_id": 3}, {"claim_id": 3}, lsn=24_420_000, commit=24_400_000, tx=806)
    emit(
        "claim",
        "c",
        {"claim_id": 3},
        claim(3, 1, 2, "SUBMITTED", "80.00"),
        lsn=24_610_000,
        commit=24_600_000,
        tx=808,
    )

    # A long transaction (tx 805) that began before tx 806 but committed after it: its event
    # has a LOWER LSN than tx 806's events, yet is newer. Claim 4 ends DENIED.
    emit(
        "claim",
        "c",
        {"claim_id": 4},
        claim(4, 2, 2, "SUBMITTED", "990.00"),
        lsn=24_180_000,
        commit=24_140_000,
        tx=802,
    )
    emit(
        "claim",
        "u",
        {"claim_id": 4},
        claim(4, 2, 2, "PENDING", "990.00"),
        lsn=24_430_000,
        commit=24_400_000,
        tx=806,
    )
    emit(
        "claim",
        "u",
        {"claim_id": 4},
        claim(4, 2, 2, "DENIED", "990.00", denial_code="CO-50"),
        lsn=24_250_000,
        commit=24_500_000,
        tx=805,
    )

    # Care 1: an update whose unchanged TOAST column carries the placeholder: the diagnosis
    # code keeps its previous value.
    emit(
        "care_episode",
        "u",
        {"episode_id": 1},
        care(
            1, 1, 1, status="COMPLETED", procedure_code="99214", diagnosis_code="__debezium_unavailable_value"
        ),
        lsn=24_260_000,
        commit=24_250_000,
        tx=807,
    )

    # EOP: payment 1 created; its primary key changed to 5 (delete under the old key with
    # header newkey, tombstone, create under the new key with header oldkey) and the create
    # carries the TOAST placeholder for `reference`, a value that exists only under key 1.
    emit(
        "payment", "c", {"payment_id": 1}, payment(1, 1, "125.00"), lsn=24_320_000, commit=24_300_000, tx=804
    )
    emit(
        "payment",
        "d",
        {"payment_id": 1},
        {"payment_id": 1},
        lsn=24_620_000,
        commit=24_600_000,
        tx=808,
        headers={"__debezium.newkey": {"payment_id": 5}},
    )
    emit("payment", "d", {"payment_id": 1}, None, lsn=0, commit=0, tx=0, value=None)
    emit(
        "payment",
        "c",
        {"payment_id": 5},
        payment(5, 1, "125.00", reference="__debezium_unavailable_value"),
        lsn=24_630_000,
        commit=24_600_000,
        tx=808,
        headers={"__debezium.oldkey": {"payment_id": 1}},
    )
    # Payment 2: an update with the placeholder and no earlier value anywhere: incomplete.
    emit(
        "payment",
        "u",
        {"payment_id": 2},
        payment(2, 4, "10.00", reference="__debezium_unavailable_value"),
        lsn=24_640_000,
        commit=24_600_000,
        tx=808,
    )

    # Malformed events: each goes to the dead letters, the events around them are applied.
    emit("family", "u", {"family_id": 3}, None, lsn=0, commit=0, tx=0, value=b'{"before": null, "after": {')
    emit("family", "x", {"family_id": 3}, family(3, "Haddad"), lsn=24_700_000, commit=24_690_000, tx=809)
    emit("family", "u", {"family_id": 9}, family(3, "Haddad", "T"), lsn=24_710_000, commit=24_690_000, tx=809)
    emit(
        "provider",
        "u",
        {"provider_id": 2},
        {**provider(2, "Mission Pediatrics"), "status": "Z"},
        lsn=24_720_000,
        commit=24_690_000,
        tx=809,
    )
    emit(
        "claim",
        "c",
        {"claim_id": 6},
        {**claim(6, 1, 1, "SUBMITTED", "12.00"), "billed": "not-base64!"},
        lsn=24_730_000,
        commit=24_690_000,
        tx=809,
    )
    emit(
        "family",
        "u",
        {"family_id": 3},
        family(3, "Haddad", "T", coverage_end=20_089),
        lsn=24_740_000,
        commit=24_690_000,
        tx=809,
    )


if __name__ == "__main__":
    import sys

    build()
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    print(f"wrote {len(lines)} events to {out}")
