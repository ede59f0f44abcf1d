"""``carecloud-connector status``: where ingest and delivery stand, read-only.

It crosses stages on purpose (ingest lag, the snapshot's manifests and schedule), which is why
it sits in ``connector.ops`` above the stages rather than in one (``.importlinter``: no stage
imports it). Everything it reads is read-only: the ingest
group's committed offsets and the source topics' end offsets (an admin client, never a group
member, so it cannot trigger a rebalance), the newest message of each source topic partition
(its schema checked against the mapping: a dropped or retyped column the mapping reads), and
the storage's published manifests.

State entity counts come from the latest published manifest (delivered + held out at that
run's cut), not from reading the whole state topic: the output says so and names the date. A
part that cannot be read (Kafka or the storage away) is reported and the rest still printed;
the exit code is then 1. A storage that is not configured (an ingest-only deployment) is not an
error.

This module reads; what it reports, and the tables, are ``_status_report``'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from typing import Any

import orjson

from connector.config import Settings, SettingsError
from connector.errors import ConnectorError
from connector.model import ENTITY_NAMES
from connector.ops._status_report import Delivery, NextRun, Status, format_status
from connector.sinks.keys import control_key, manifest_key
from connector.sinks.storage import Storage
from connector.snapshot.manifest import EntityResult, Manifest, latest_manifest_before
from connector.snapshot.schedule import Schedule, next_run

__all__ = [
    "Delivery",
    "NextRun",
    "Status",
    "add_status_command",
    "collect",
    "find_deliveries",
    "format_status",
    "schedule_status",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_WALK_BACK = 7
"""Older manifests read at most, for entities the latest run did not deliver."""


def schedule_status(schedule: Schedule, now: dt.datetime) -> NextRun:
    """The next run's window (``next_run``) and today's date in the schedule's zone."""
    day, start, deadline = next_run(schedule, now)
    return NextRun(schedule.zone, now.astimezone(schedule.tz).date(), day, start, deadline)


def _route(result: EntityResult) -> str:
    return f"file ({result.storage})" if result.route == "file" and result.storage else result.route


def find_deliveries(storage: Storage, prefix: str, today: dt.date) -> tuple[Manifest | None, list[Delivery]]:
    """The latest manifest and each entity's last delivery, walking back for entities it did not deliver."""
    latest = latest_manifest_before(storage, prefix, today + dt.timedelta(days=2))
    if latest is None:
        return None, [Delivery(entity, None) for entity in ENTITY_NAMES]
    found: dict[str, tuple[Manifest, EntityResult]] = {}
    manifest: Manifest | None = latest
    for _ in range(_WALK_BACK):
        if manifest is None:
            break
        for result in manifest.entities:
            if result.status == "delivered" and result.entity not in found:
                found[result.entity] = (manifest, result)
        if all(entity in found for entity in ENTITY_NAMES):
            break
        manifest = latest_manifest_before(storage, prefix, manifest.day)
    deliveries = []
    for entity in ENTITY_NAMES:
        current = latest.entity(entity)
        status = current.status if current is not None else None
        changes = current.changes if current is not None else None
        if entity in found:
            m, r = found[entity]
            deliveries.append(Delivery(entity, status, m.day, _route(r), r.records, m.created_at, changes))
        else:
            deliveries.append(Delivery(entity, status, changes=changes))
    return latest, deliveries


def gather_storage(status: Status, storage: Storage, prefix: str, today: dt.date) -> None:
    """Fill the manifest-derived parts; a storage error is recorded, not raised."""
    status.storage = storage.name
    try:
        latest, status.deliveries = find_deliveries(storage, prefix, today)
        status.today_published = storage.stat(manifest_key(prefix, today)) is not None
        if not status.today_published:
            status.today_held = _held(storage, prefix, today)
    except ConnectorError as exc:
        status.storage_error = f"{type(exc).__name__}: {exc}"
        return
    except (ValueError, KeyError, TypeError) as exc:  # a manifest that does not parse
        status.storage_error = f"unreadable manifest ({type(exc).__name__})"
        return
    if latest is not None:
        status.manifest_day = latest.day
        status.counts = {r.entity: r.records + r.held_out for r in latest.entities}
        status.transactions = latest.checks.get("transactions")
        status.mapping = latest.checks.get("mapping")


def _held(storage: Storage, prefix: str, day: dt.date) -> dict[str, Any] | None:
    """What a held date waits for: the entities not delivered and until when."""
    found = storage.get(control_key(prefix, day, "_pending.json"))
    if found is None:
        return None
    pending = orjson.loads(found[0])
    waiting = [e["entity"] for e in pending["entities"] if e["status"] != "delivered"]
    return {"waiting": waiting, "decide_by": pending["decide_by"]}


def gather_lag(status: Status, measure: Callable[[], dict[str, int]]) -> None:
    try:
        status.lag = measure()
    except ConnectorError as exc:
        status.lag_error = f"{type(exc).__name__}: {exc}"


def gather_source_schemas(status: Status, check: Callable[[], list[Any]]) -> None:
    """The mapped columns each source topic's newest message says are dropped or retyped."""
    try:
        status.source_schema = [
            {"table": p.table, "column": p.column, "problem": p.problem, "field": p.field, "found": p.found}
            for p in check()
        ]
    except ConnectorError as exc:
        status.source_schema_error = f"{type(exc).__name__}: {exc}"


def gather_remap(status: Status, read: Callable[[], dict[int, dict[str, Any]]]) -> None:
    """The re-mapping pass's progress per state partition (the mapping registry's copy)."""
    try:
        status.remap = read()
    except ConnectorError as exc:
        status.remap_error = f"{type(exc).__name__}: {exc}"


def collect(
    settings: Settings, *, storage: Storage | None = None, clock: Callable[[], dt.datetime] = _now
) -> Status:
    """Read every part; Kafka and the storage are only read."""
    from connector.ingest.schema_watch import check_topic_tails
    from connector.mapping import load_mapping
    from connector.snapshot.lag import measure_lag
    from connector.snapshot.service import build_storage, schedule_of
    from connector.state.mapping_registry import read_registry

    status = Status(settings.ingest.group_id, schedule_status(schedule_of(settings), clock()))
    spec = load_mapping(settings.ingest.mapping_file)
    # Debezium's transaction topic is ingested too (its END records): its lag is the ingest's.
    topics = sorted(spec.topics) + ([spec.transaction_topic] if spec.transaction_topic else [])
    kafka = settings.kafka.client_config()
    gather_lag(status, lambda: measure_lag(kafka, settings.ingest.group_id, topics).partitions)
    registry = settings.ingest.schema_registry_url
    gather_source_schemas(status, lambda: check_topic_tails(kafka, spec, registry_url=registry))
    gather_remap(status, lambda: read_registry(kafka, settings.ingest.mapping_topic_name).remap)
    if storage is None:
        try:
            storage = build_storage(settings)
        except SettingsError as exc:  # not configured: an ingest-only deployment
            status.storage_error = "; ".join(exc.problems)
            return status
        except ConnectorError as exc:
            status.storage, status.storage_error = settings.snapshot.sink, f"{type(exc).__name__}: {exc}"
            return status
    try:
        gather_storage(status, storage, settings.snapshot.prefix, status.schedule.today)
    finally:
        close = getattr(storage, "close", None)
        if callable(close):
            close()
    return status


def add_status_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="ingest lag, state counts, last delivery per entity, next run and deadline (read-only)",
        description="Reads the ingest group's offsets and the published manifests; changes nothing. "
        "Exit 1 when Kafka or the configured storage could not be read (the rest is still printed).",
    )
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(handler=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.ops.logs import configure_logging_from

    settings = load_settings()
    configure_logging_from(settings)
    status = collect(settings)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(status.as_json()) + b"\n")
    else:
        print(format_status(status))
    return 1 if status.failed else 0
