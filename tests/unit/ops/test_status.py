"""status's pure parts: deliveries found in manifests (over a real storage), the schedule, the output."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson

from connector.model import ENTITY_NAMES
from connector.ops.status import (
    Delivery,
    Status,
    find_deliveries,
    format_status,
    gather_storage,
    schedule_status,
)
from connector.sinks.keys import control_key, manifest_key
from connector.sinks.local import LocalStorage
from connector.snapshot.manifest import EntityResult, Manifest
from connector.snapshot.schedule import Schedule

PREFIX = "carecloud"


CLAIM_CHANGES = {"since": "2026-03-07", "added": 2, "removed": 1, "changed": 3, "unchanged": 9}


def _publish(storage: LocalStorage, day: dt.date, blocked: frozenset[str] = frozenset()) -> None:
    entities = tuple(
        EntityResult(
            name,
            "blocked" if name in blocked else "delivered",
            "api" if name == "Provider" else "file",
            10 + i,
            "fp",
            held_out=1 if name == "Claim" else 0,
            storage=None if name == "Provider" else "s3",
            changes=CLAIM_CHANGES if name == "Claim" else None,
        )
        for i, name in enumerate(ENTITY_NAMES)
    )
    created = dt.datetime.combine(day, dt.time(9, 15), tzinfo=dt.UTC)
    manifest = Manifest("id", day, created, {}, {}, {}, entities, "report")
    storage.put_bytes(manifest_key(PREFIX, day), manifest.to_bytes(), content_type="application/json")


def test_an_entity_the_latest_run_blocked_shows_its_previous_delivery(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    _publish(storage, dt.date(2026, 3, 6))
    _publish(storage, dt.date(2026, 3, 7), blocked=frozenset({"Claim"}))
    latest, deliveries = find_deliveries(storage, PREFIX, dt.date(2026, 3, 7))
    assert latest is not None
    assert latest.day == dt.date(2026, 3, 7)
    by_entity = {d.entity: d for d in deliveries}
    claim = by_entity["Claim"]
    assert (claim.latest_status, claim.day, claim.route) == ("blocked", dt.date(2026, 3, 6), "file (s3)")
    assert by_entity["Provider"].route == "api"
    assert by_entity["Family"].day == dt.date(2026, 3, 7)


def test_no_manifest_means_no_delivery_and_today_unpublished(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    status = Status("g", schedule_status(Schedule(), dt.datetime(2026, 3, 8, 20, tzinfo=dt.UTC)))
    gather_storage(status, storage, PREFIX, dt.date(2026, 3, 8))
    assert status.deliveries == [Delivery(name, None) for name in ENTITY_NAMES]
    assert status.today_published is False
    assert "no published manifest in local" in format_status(status)


def test_next_run_in_the_zone_and_utc_across_the_spring_change() -> None:
    # 2026-03-08 is the spring-forward day in Los Angeles: the next day's window is in PDT.
    run = schedule_status(Schedule(), dt.datetime(2026, 3, 8, 20, tzinfo=dt.UTC))
    assert (run.today, run.day) == (dt.date(2026, 3, 8), dt.date(2026, 3, 9))
    assert run.as_json()["start"] == "2026-03-09T00:30-07:00"
    assert run.as_json()["deadline_utc"] == "2026-03-09T10:00+00:00"
    assert run.describe() == (
        "next run 2026-03-09 (America/Los_Angeles): start 00:30 PDT = 2026-03-09 07:30 UTC; "
        "deadline 03:00 PDT = 2026-03-09 10:00 UTC"
    )


def test_output_tables_and_json(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    _publish(storage, dt.date(2026, 3, 8))
    status = Status("ingest", schedule_status(Schedule(), dt.datetime(2026, 3, 8, 20, tzinfo=dt.UTC)))
    status.lag = {"src.family/0": 3, "src.family/1": 0}
    gather_storage(status, storage, PREFIX, dt.date(2026, 3, 8))
    text = format_status(status)
    lines = [line.split() for line in text.splitlines()]
    assert "ingest lag (group ingest): 3 event(s)" in text
    assert ["src.family", "0", "3"] in lines
    assert "state counts are from the latest manifest (2026-03-08)" in text
    assert [
        "Claim",
        "15",
        "delivered",
        "2026-03-08",
        "file",
        "(s3)",
        "14",
        "2026-03-08T09:15:00+00:00",
        "2",
        "1",
        "3",
        "2026-03-07",
    ] in lines
    assert "today 2026-03-08: published" in text
    assert not status.failed
    doc = orjson.loads(orjson.dumps(status.as_json()))
    assert doc["lag"]["total"] == 3
    assert doc["state_counts"]["entities"]["Claim"] == 15  # delivered + held out
    assert doc["deliveries"]["Claim"]["changes"] == CLAIM_CHANGES
    assert doc["deliveries"]["Provider"] == {
        "latest_status": "delivered",
        "changes": None,
        "day": "2026-03-08",
        "route": "api",
        "records": 11,
        "created_at": "2026-03-08T09:15:00+00:00",
    }
    assert doc["today"] == {"day": "2026-03-08", "published": True, "held": None}


def test_unreadable_parts_are_reported_and_fail_the_exit_code() -> None:
    status = Status("g", schedule_status(Schedule(), dt.datetime(2026, 3, 8, 20, tzinfo=dt.UTC)))
    status.lag_error = "TransientError: cannot measure the ingest lag"
    status.storage_error = "CARECLOUD_S3_BUCKET: required"
    text = format_status(status)
    assert "unavailable (TransientError" in text
    assert "storage not configured (CARECLOUD_S3_BUCKET" in text
    assert status.failed


def test_a_held_date_says_what_it_waits_for_and_until_when(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    _publish(storage, dt.date(2026, 3, 7))
    pending = {
        "snapshot_id": "id",
        "day": "2026-03-08",
        "decide_by": "2026-03-08T10:30:00+00:00",
        "entities": [
            {"entity": "Family", "status": "blocked"},
            {"entity": "Provider", "status": "delivered"},
        ],
    }
    key = control_key(PREFIX, dt.date(2026, 3, 8), "_pending.json")
    storage.put_bytes(key, orjson.dumps(pending), content_type="application/json")
    status = Status("g", schedule_status(Schedule(), dt.datetime(2026, 3, 8, 20, tzinfo=dt.UTC)))
    gather_storage(status, storage, PREFIX, dt.date(2026, 3, 8))
    assert status.today_held == {"waiting": ["Family"], "decide_by": "2026-03-08T10:30:00+00:00"}
    assert "held: Family blocked or refused, waiting for an override or a fix until 2026-03-08T10:30" in (
        format_status(status)
    )
    assert status.as_json()["today"]["held"]["waiting"] == ["Family"]


def test_rows_held_out_for_an_incomplete_source_transaction_get_a_line(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    day = dt.date(2026, 3, 7)
    entities = tuple(EntityResult(name, "delivered", "file", 10, "fp", storage="s3") for name in ENTITY_NAMES)
    created = dt.datetime.combine(day, dt.time(9, 15), tzinfo=dt.UTC)
    checks = {
        "transactions": {"tracked": 812, "incomplete": 1, "expired": 0, "held_out": {"Claim": 1, "EOP": 2}}
    }
    manifest = Manifest("id", day, created, {}, {}, checks, entities, "report")
    storage.put_bytes(manifest_key(PREFIX, day), manifest.to_bytes(), content_type="application/json")
    status = Status("g", schedule_status(Schedule(), dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC)))
    gather_storage(status, storage, PREFIX, day)
    assert status.as_json()["transactions"] == checks["transactions"]
    assert (
        "source transactions at the 2026-03-07 cut: 812 tracked, 1 incomplete (held out: Claim 1, EOP 2; "
        "listed in _report.json), 0 expired"
    ) in format_status(status)


def test_rows_under_older_mapping_versions_get_a_line_per_entity(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    day = dt.date(2026, 3, 7)
    entities = tuple(EntityResult(name, "delivered", "file", 10, "fp", storage="s3") for name in ENTITY_NAMES)
    created = dt.datetime.combine(day, dt.time(9, 15), tzinfo=dt.UTC)
    checks = {
        "mapping": {
            "Claim": {"versions": {"aaa": 120, "bbb": 880}, "current": "bbb", "older": 120, "mixed": True},
            "Family": {"versions": {"ccc": 10}, "current": "ccc", "older": 0, "mixed": False},
        }
    }
    manifest = Manifest("id", day, created, {}, {}, checks, entities, "report")
    storage.put_bytes(manifest_key(PREFIX, day), manifest.to_bytes(), content_type="application/json")
    status = Status("g", schedule_status(Schedule(), dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC)))
    gather_storage(status, storage, PREFIX, day)
    assert status.as_json()["mapping"] == checks["mapping"]
    assert (
        "mapping versions at the 2026-03-07 cut: Claim 120 rows under older versions (mixed: blocked); "
        "the other entities all current"
    ) in format_status(status)
