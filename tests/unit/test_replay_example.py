"""`carecloud-connector replay` on the example prints the state a reader of the events expects.

Every expectation below is derived from the scenario comments in examples/make_events.py,
not from a previous run's output.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector.cli import main
from connector.ingest.replay import RawMessage, ReplayResult, encode_json, read_events, replay
from connector.mapping import load_mapping
from connector.model import ENVELOPE_NAME, encode
from connector.model.samples import sample_envelope
from connector.source import Position
from connector.state.resolve import source_of

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

    from connector.ingest.replay import read_events, replay
    from connector.mapping import load_mapping
    from connector.model import raw_schema, validate

    result = replay(load_mapping(MAPPING), read_events(EVENTS))
    assert result.live
    for entity, _, record in result.live:
        validate(entity, record)  # the mapper relies on its converters instead of this, per event
        assert set(record) == {f["name"] for f in raw_schema(entity)["fields"]}
        assert all(
            isinstance(v, (str, int, bool, Decimal, date, datetime, type(None))) for v in record.values()
        )


# -- primary-key updates, transactions and partitions, on the example's own messages ---------------

PAYMENT = "benefits.public.payment"
FAMILY = "benefits.public.family"
CANARY = "Zyx-CANARY-4417"
"""Seeded into bad input lines; no output may contain it."""


def example_messages(topic: str) -> dict[int, RawMessage]:
    return {m.position.offset: m for m in read_events(EVENTS) if m.position.topic == topic}


def live_records(result: ReplayResult) -> dict[str, dict[str, Any]]:
    return {entity_id: record for _, entity_id, record in result.live}


# The example's payment offsets: 0 creates payment 1 (reference ACH-77); 1 deletes key 1 with
# header __debezium.newkey 5; 2 is its tombstone; 3 creates key 5 with header
# __debezium.oldkey 1 and the TOAST placeholder for reference.
@pytest.mark.parametrize("order", [(0, 3, 1, 2), (3, 0, 1, 2)], ids=["old-row-first", "create-first"])
def test_primary_key_update_whose_delete_arrives_after_the_create_still_carries_toast(
    order: tuple[int, ...],
) -> None:
    payments = example_messages(PAYMENT)
    result = replay(load_mapping(MAPPING), [payments[offset] for offset in order])
    live = live_records(result)
    assert list(live) == ["EOP-5"]  # the old EntityId is gone
    assert (live["EOP-5"]["PaymentReference"], live["EOP-5"]["PaymentAmount"]) == (
        "ACH-77",
        Decimal("125.00"),
    )
    assert result.dead_letters == []


@pytest.mark.parametrize("source_columns", [False, True], ids=["values", "source-columns"])
@pytest.mark.parametrize("create_first", [False, True], ids=["delete-first", "create-first"])
def test_primary_key_update_across_partitions_carries_the_toast_value(
    create_first: bool, source_columns: bool
) -> None:
    """State partition p holds source partition p: the old key's value is not there, so the old
    key's partition offers it to every partition (the carry topic) and the new row is complete
    whichever partition replay (or ingest) reads first; with source columns kept, its source
    columns are complete too (the TOASTed ``reference`` the old row's), so it can be re-mapped."""
    payments = example_messages(PAYMENT)
    create = payments[3]
    moved = RawMessage(Position(PAYMENT, 1, 0), create.key, create.value, create.headers)
    before = [payments[0], payments[1], payments[2]]
    order = [moved, *before] if create_first else [*before, moved]
    result = replay(load_mapping(MAPPING), order, source_columns=source_columns)
    assert result.dead_letters == []
    assert [(entity, entity_id) for entity, entity_id, _ in result.live] == [("EOP", "EOP-5")]
    assert result.live[0][2]["PaymentReference"] == "ACH-77"
    source = source_of(result.rows[("EOP", "EOP-5")])
    if not source_columns:
        assert source is None
        return
    assert source is not None
    assert source.complete
    assert source.columns["reference"] == "ACH-77"


def _family_update(read: RawMessage, name: str, lsn: int, offset: int, tx_id: str | None) -> RawMessage:
    """An UPDATE of family 1 in source transaction 808, as pgoutput numbers it."""
    assert read.value is not None
    value = orjson.loads(read.value)
    value["op"] = "u"
    value["after"]["family_name"] = name
    value["source"].update(snapshot="false", txId=808, lsn=lsn, sequence=json.dumps(["24700000", str(lsn)]))
    value["transaction"] = (
        None if tx_id is None else {"id": tx_id, "total_order": 1, "data_collection_order": 1}
    )
    return RawMessage(Position(FAMILY, 0, offset), read.key, orjson.dumps(value), None)


def test_one_transactions_changes_are_ordered_by_sequence_alone_not_by_transaction_id() -> None:
    """Debezium's PostgreSQL transaction id is "txId:lsn": its suffix differs within one
    transaction. Delivered in reverse order, the change with the higher sequence still wins,
    whatever the transaction ids say or whether they are there at all."""
    read = example_messages(FAMILY)[0]  # the snapshot read of family 1
    first, second = "808:24734567", "808:24734901"

    def run(earlier_id: str | None, later_id: str | None) -> ReplayResult:
        later = _family_update(read, "Okafor-Lind", 24_734_901, 1, later_id)
        earlier = _family_update(read, "Okafor-Reyes", 24_734_567, 2, earlier_id)
        return replay(load_mapping(MAPPING), [read, later, earlier])

    result = run(first, second)
    assert live_records(result)["FAM-1"]["FamilyName"] == "Okafor-Lind"
    assert result.stale == 1  # the earlier change, delivered last, replaced nothing
    assert run(second, first) == result
    assert run(None, None) == result
    assert run("808", "808") == result


# -- the replay input itself ------------------------------------------------------------------------


def _replay_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["replay", "--mapping", str(MAPPING), "--input", str(path)])
    out, err = capsys.readouterr()
    assert CANARY not in out + err
    return code, err


@pytest.mark.parametrize(
    "bad",
    [
        f"not json {CANARY}",
        f'["{CANARY}"]',
        f'{{"topic": "{CANARY}"}}',
        f'{{"topic": "t", "offset": "{CANARY}"}}',
    ],
    ids=["not-json", "not-an-object", "no-offset", "offset-not-a-number"],
)
def test_a_bad_input_line_is_named_by_its_number_and_exits_1(
    tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS.read_text().splitlines()[0] + "\n\n" + bad + "\n")
    code, err = _replay_cli(events, capsys)
    assert code == 1
    assert "error: input line 3: expected a JSON object with topic, partition, offset" in err


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("value_b64", f"{CANARY}!"),
        ("value_b64", f"{CANARY}é"),
        ("value_b64", 12345),
        ("key_b64", [CANARY]),
    ],
    ids=["bad-alphabet", "not-ascii", "a-number", "key-a-list"],
)
def test_b64_that_is_not_base64_is_named_and_exits_1(
    tmp_path: Path, field: str, bad: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    line = {"topic": FAMILY, "partition": 0, "offset": 9, "key": {"family_id": 1}, "value": None, field: bad}
    events.write_text(EVENTS.read_text().splitlines()[0] + "\n" + json.dumps(line) + "\n")
    code, err = _replay_cli(events, capsys)
    assert code == 1
    assert f"error: input line 2: {field} is not base64" in err


def test_headers_that_are_not_an_object_are_named_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    line = {"topic": FAMILY, "offset": 9, "key": {"family_id": 1}, "value": None, "headers": [CANARY]}
    events.write_text(json.dumps(line) + "\n")
    code, err = _replay_cli(events, capsys)
    assert code == 1
    assert "error: input line 1: headers must be an object" in err


def test_null_value_b64_is_a_tombstone_like_a_null_value(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    line = {"topic": FAMILY, "offset": 9, "key_b64": None, "value_b64": None}
    events.write_text(json.dumps(line) + "\n")
    result = replay(load_mapping(MAPPING), read_events(events))
    assert (result.tombstones, result.live, result.dead_letters) == (1, [], [])


def test_key_b64_and_value_b64_lines_replay_exactly_like_their_json(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    binary = tmp_path / "events.jsonl"
    with binary.open("w") as out:
        for line in EVENTS.read_text().splitlines():
            doc = json.loads(line)
            for part in ("key", "value"):
                if doc.get(part) is not None:
                    doc[f"{part}_b64"] = base64.b64encode(orjson.dumps(doc.pop(part))).decode()
            out.write(json.dumps(doc) + "\n")
    text = binary.read_text()
    assert "key_b64" in text
    assert '"value": {' not in text  # every message is binary now; tombstones stay "value": null
    runs = []
    for path in (EVENTS, binary):
        assert main(["replay", "--mapping", str(MAPPING), "--input", str(path), "--json"]) == 0
        runs.append(capsysbinary.readouterr().out)
    assert runs[0] == runs[1]
    assert runs[0].count(b'"dead_letter"') == 6


def test_native_envelope_topic_takes_binary_avro_lines(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        MAPPING.read_text().replace("topics:\n", "topics:\n  benefits.native.eop: {format: native-avro}\n", 1)
    )
    upsert = sample_envelope("EOP", "UPSERT", version=3)
    events = tmp_path / "events.jsonl"
    line = {
        "topic": "benefits.native.eop",
        "partition": 0,
        "offset": 0,
        "key_b64": base64.b64encode(upsert["EntityId"].encode()).decode(),
        "value_b64": base64.b64encode(encode(ENVELOPE_NAME, upsert)).decode(),
    }
    events.write_text(json.dumps(line) + "\n")
    assert main(["replay", "--mapping", str(mapping), "--input", str(events), "--json"]) == 0
    (doc,) = [json.loads(raw) for raw in capsysbinary.readouterr().out.splitlines()]
    assert doc == json.loads(
        encode_json({"entity": "EOP", "entity_id": "eop-0001", "record": upsert["Payload"]})
    )
