"""Every class of bad input goes to the dead-letter topic with its reason; the good events around
it are applied; no seeded value appears in a header or a log line."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from connector.config import load_settings
from connector.ingest.service import IngestService
from connector.mapping import parse_mapping
from tests.integration.family_ingest import MAPPING
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

CANARY = "Quillfeather-Zanzibar"


def family(fid: int, **over: Any) -> dict[str, Any]:
    row = {
        "family_id": fid,
        "family_name": f"{CANARY} {fid}",
        "status": "A",
        "plan_code": "PPO-1",
        "coverage_start": 19_723,
        "coverage_end": None,
        "address": json.dumps({"state": "CA", "zip": "94107"}),
        "email": f"{CANARY.lower()}@example.org",
        "deductible": "AJiW",
        "oop_max": None,
        "updated_at": 1_732_000_000_000_000,
    }
    return {**row, **over}


def event(fid: int, op: str = "u", lsn: int = 0, table: str = "family", **row: Any) -> bytes:
    lsn = lsn or 40_000_000 + fid * 10
    source = {
        "version": "3.0.7.Final",
        "connector": "postgresql",
        "name": "b",
        "ts_ms": 1,
        "snapshot": "false",
        "db": "b",
        "sequence": json.dumps([str(lsn - 5), str(lsn)]),
        "schema": "public",
        "table": table,
        "txId": 1,
        "lsn": lsn,
        "xmin": None,
    }
    doc = {"before": None, "after": family(fid, **row), "source": source, "op": op, "ts_ms": 1}
    return json.dumps(doc).encode()


def key(fid: int) -> bytes:
    return json.dumps({"family_id": fid}).encode()


CASES: list[tuple[str, bytes | None, bytes | None]] = [
    ("invalid_json", key(101), event(101)[:40]),  # truncated
    ("invalid_json", key(102), b""),  # empty
    ("missing_key", None, event(103)),
    ("invalid_key", b"{not json", event(104)),
    ("key_mismatch", key(999), event(105)),
    ("unknown_op", key(106), event(106, op="x")),
    ("unknown_table", key(107), event(107, table="audit_log")),
    ("missing_primary_key", b"{}", event(108, family_id=None)),
    ("required_field_null", key(109), event(109, plan_code=None)),
    ("wrong_type", key(110), event(110, family_name=["x", CANARY])),
    ("unparseable_decimal", key(111), event(111, deductible=f"{CANARY}!")),
    ("date_out_of_range", key(112), event(112, coverage_start=9_000_000)),
    ("invalid_json", key(113), event(113).replace(b'"oop_max": null', b'"oop_max": NaN')),
    ("invalid_utf8", key(114), event(114).replace(CANARY.encode(), b"\xff\xfe" + CANARY.encode())),
    ("control_character", key(115), event(115, family_name=f"{CANARY}\u0007")),
    ("oversized_record", key(116), event(116, family_name=CANARY + "x" * 5000)),
    ("required_field_missing", key(117), event(117).replace(b'"plan_code"', b'"plan_tier"')),  # schema change
    ("unknown_enum_symbol", key(118), event(118, status="Q")),
]


def test_each_bad_input_class_is_dead_lettered_and_the_stream_goes_on(
    kafka: KafkaTestCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = kafka.new_topic(1, prefix="bad")
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, (_, k, v) in enumerate(CASES):
        records.append((key(i + 1), event(i + 1)))  # a good event before each bad one
        records.append((k, v))
    kafka.seed_topic(topic, records)
    settings = load_settings(
        kafka={"bootstrap_servers": kafka.bootstrap},
        ingest={
            "mapping_file": "unused.yaml",
            "group_id": unique("bad"),
            "state_topic": unique("state"),
            "dlq_topic": unique("dlq"),
            "state_dir": tmp_path / "store",
            "transactional_id": unique("txn"),
            "max_message_bytes": 4096,
            "batch_max_ms": 100,
        },
    )
    service = IngestService(settings, parse_mapping(MAPPING.format(topic=topic)))
    service.start()
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    with caplog.at_level(logging.DEBUG):
        thread.start()
        deadline = time.monotonic() + 60
        while service.counts["events"] < len(records) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        thread.join(30)
    assert service.counts["applied"] == len(CASES)  # every good event applied

    dlq = kafka.read_topic(
        settings.ingest.dlq_topic, len(CASES), overrides={"isolation.level": "read_committed"}
    )
    got = [
        (dict(m.headers())["carecloud.reason"].decode(), int(dict(m.headers())["carecloud.offset"]))
        for m in dlq
    ]
    assert got == [(reason, 2 * i + 1) for i, (reason, _, _) in enumerate(CASES)]
    by_offset = {int(dict(m.headers())["carecloud.offset"]): m for m in dlq}
    for i, (reason, k, v) in enumerate(CASES):
        m = by_offset[2 * i + 1]
        if reason == "oversized_record":
            assert m.value() is None  # by reference: position only
        else:
            assert (m.key(), m.value()) == (k, v)  # original bytes, ready for a replay after a fix
        for _, header in m.headers():
            assert CANARY.encode() not in (header or b"")
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert CANARY not in logged
    assert CANARY.lower() not in logged
