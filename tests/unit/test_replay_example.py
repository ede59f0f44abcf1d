"""`carecloud-connector replay` on the example prints the state a reader of the events expects.

Every expectation below is derived from the scenario comments in examples/make_events.py,
not from a previous run's output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.cli import main

ROOT = Path(__file__).parents[2]
MAPPING = ROOT / "examples" / "mapping.yaml"
EVENTS = ROOT / "examples" / "events.jsonl"


@pytest.fixture(scope="module")
def output() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector.cli",
            "replay",
            "--mapping",
            str(MAPPING),
            "--input",
            str(EVENTS),
            "--json",
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    live: dict[str, dict[str, Any]] = {}
    dead: list[dict[str, Any]] = []
    for line in proc.stdout.splitlines():
        doc = json.loads(line)
        if "dead_letter" in doc:
            dead.append(doc["dead_letter"])
        else:
            live[doc["entity_id"]] = doc | {"record": doc["record"]}
    return live, dead


def test_the_committed_example_is_what_its_generator_writes(tmp_path: Path) -> None:
    fresh = tmp_path / "events.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_events.py"), str(fresh)],
        check=True,
        capture_output=True,
    )
    assert fresh.read_text() == EVENTS.read_text()


def test_live_entities_are_exactly_the_expected_set(output: Any) -> None:
    live, _ = output
    assert sorted(live) == [
        "CARE-1",
        "CARE-2",
        "CLM-1",
        "CLM-3",
        "CLM-4",
        "EOP-5",
        "FAM-1",
        "FAM-2",
        "FAM-3",
        "MEM-1",
        "MEM-2",
        "MEM-3",
        "PRV-1",
        "PRV-2",
    ]
    assert all(doc["record"]["EntityId"] == eid for eid, doc in live.items())


def test_output_is_sorted_by_entity_then_entity_id(output: Any) -> None:
    live, _ = output
    keys = [(doc["entity"], eid) for eid, doc in live.items()]
    assert keys == sorted(keys)


def test_out_of_order_and_duplicate_updates_end_at_the_newest(output: Any) -> None:
    claim = output[0]["CLM-1"]["record"]
    assert claim["Status"] == "PAID"
    assert (claim["AllowedAmount"], claim["PaidAmount"], claim["MemberResponsibilityAmount"]) == (
        "150.00",
        "125.00",
        "25.00",
    )


def test_delete_then_late_older_update_stays_deleted(output: Any) -> None:
    assert "CLM-2" not in output[0]


def test_delete_then_recreate_is_live_with_the_new_values(output: Any) -> None:
    assert output[0]["CLM-3"]["record"]["BilledAmount"] == "80.00"


def test_long_transaction_committed_last_wins_despite_its_lower_lsn(output: Any) -> None:
    claim = output[0]["CLM-4"]["record"]
    assert (claim["Status"], claim["DenialReasonCode"]) == ("DENIED", "CO-50")


def test_resnapshot_read_does_not_undo_a_streaming_change(output: Any) -> None:
    assert output[0]["FAM-2"]["record"]["Status"] == "SUSPENDED"


def test_unchanged_toast_column_keeps_its_previous_value(output: Any) -> None:
    care = output[0]["CARE-1"]["record"]
    assert (care["DiagnosisCode"], care["ProcedureCode"]) == ("Z00.00", "99214")


def test_primary_key_update_moves_the_entity_and_carries_the_toast_value(output: Any) -> None:
    live, _ = output
    assert "EOP-1" not in live
    eop = live["EOP-5"]["record"]
    assert (eop["ClaimId"], eop["PaymentReference"], eop["PaymentAmount"]) == ("CLM-1", "ACH-77", "125.00")


def test_associations_use_the_parents_entity_ids(output: Any) -> None:
    live, _ = output
    assert live["MEM-3"]["record"]["FamilyId"] == "FAM-2"
    assert (live["CARE-2"]["record"]["FamilyMemberId"], live["CARE-2"]["record"]["ProviderId"]) == (
        "MEM-3",
        "PRV-2",
    )
    assert live["CLM-3"]["record"]["CareId"] == "CARE-1"


def test_good_event_after_malformed_ones_is_applied(output: Any) -> None:
    family = output[0]["FAM-3"]["record"]
    assert (family["Status"], family["CoverageEndDate"]) == ("TERMINATED", "2025-01-01")


def test_dead_letters_name_position_and_reason(output: Any) -> None:
    _, dead = output
    assert [(d["topic"].rsplit(".", 1)[1], d["offset"], d["reason"]) for d in dead] == [
        ("family", 5, "invalid_json"),
        ("family", 6, "unknown_op"),
        ("family", 7, "key_mismatch"),
        ("provider", 2, "unknown_enum_symbol"),
        ("claim", 13, "unparseable_decimal"),
        ("payment", 4, "toast_without_previous_value"),
    ]


def test_readable_summary_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--mapping", str(MAPPING), "--input", str(EVENTS)]) == 0
    text = capsys.readouterr().out
    assert "Claim                 3" in text
    assert "dead letters: 6" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n")
    assert main(["replay", "--mapping", str(bad), "--input", str(EVENTS)]) == 1
    assert "version: must be 1" in capsys.readouterr().err
    assert main(["replay", "--mapping", str(MAPPING), "--input", str(tmp_path / "nope.jsonl")]) == 1
    assert "cannot read events file" in capsys.readouterr().err


def test_every_mapped_record_conforms_to_its_entity_schema() -> None:
    from datetime import date, datetime
    from decimal import Decimal

    from connector.mapping import load_mapping
    from connector.model import raw_schema, validate
    from connector.replay import read_events, replay

    result = replay(load_mapping(MAPPING), read_events(EVENTS))
    assert result.live
    for entity, _, record in result.live:
        validate(entity, record)  # the mapper relies on its converters instead of this, per event
        assert set(record) == {f["name"] for f in raw_schema(entity)["fields"]}
        assert all(
            isinstance(v, (str, int, bool, Decimal, date, datetime, type(None))) for v in record.values()
        )
