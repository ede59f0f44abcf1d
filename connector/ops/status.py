"""``carecloud-connector status``: where ingest and delivery stand, read-only.

It crosses stages on purpose (ingest lag, the snapshot's manifests and schedule), which is why
it sits in ``connector.ops`` above the stages rather than in one (``.importlinter``: no stage
imports it). Everything it reads is read-only: the ingest
group's committed offsets and the source topics' end offsets (an admin client, never a group
member, so it cannot trigger a rebalance), and the storage's published manifests.

State entity counts come from the latest published manifest (delivered + held out at that
run's cut), not from reading the whole state topic: the output says so and names the date. A
part that cannot be read (Kafka or the storage away) is reported and the rest still printed;
the exit code is then 1. A storage that is not configured (an ingest-only deployment) is not an
error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from connector.config import Settings, SettingsError
from connector.errors import ConnectorError
from connector.model import ENTITY_NAMES
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


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entity: its status in the latest run, and its last successful delivery."""

    entity: str
    latest_status: str | None
    """``delivered``, ``blocked`` or ``failed`` in the latest manifest; None when it is absent."""
    day: dt.date | None = None
    route: str | None = None
    """``file (s3)``, ``file (sftp)`` or ``api``."""
    records: int | None = None
    created_at: dt.datetime | None = None
    """When the manifest that delivered it was published."""
    changes: dict[str, Any] | None = None
    """The latest run's set against the delivery before it (``EntityResult.changes``): what
    it delivered, or for a blocked entity the change that blocked it."""

    def as_json(self) -> dict[str, Any]:
        return {
            "latest_status": self.latest_status,
            "changes": self.changes,
            "day": self.day.isoformat() if self.day else None,
            "route": self.route,
            "records": self.records,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


@dataclass
class Status:
    """Everything ``status`` prints; each part is None (with an error) when it could not be read."""

    group: str
    schedule: NextRun
    lag: dict[str, int] | None = None
    """``"<topic>/<partition>"`` -> events published but not yet in the state."""
    lag_error: str | None = None
    storage: str | None = None
    storage_error: str | None = None
    manifest_day: dt.date | None = None
    counts: dict[str, int] = field(default_factory=dict)
    """Live entities at the latest manifest's cut (delivered + held out)."""
    deliveries: list[Delivery] = field(default_factory=list)
    today_published: bool | None = None
    today_held: dict[str, Any] | None = None
    """Today's date held open (``_pending.json``, no manifest): ``waiting`` entities, ``decide_by``."""

    @property
    def failed(self) -> bool:
        return self.lag_error is not None or (self.storage is not None and self.storage_error is not None)

    def as_json(self) -> dict[str, Any]:
        return {
            "lag": {
                "group": self.group,
                "total": None if self.lag is None else sum(self.lag.values()),
                "partitions": self.lag,
                "error": self.lag_error,
            },
            "state_counts": {
                "source": "latest manifest (delivered + held out at its cut)",
                "day": self.manifest_day.isoformat() if self.manifest_day else None,
                "entities": self.counts,
            },
            "deliveries": {d.entity: d.as_json() for d in self.deliveries},
            "next_run": self.schedule.as_json(),
            "today": {
                "day": self.schedule.today.isoformat(),
                "published": self.today_published,
                "held": self.today_held,
            },
            "storage": {"name": self.storage, "error": self.storage_error},
        }


@dataclass(frozen=True, slots=True)
class NextRun:
    """The next daily window and today's date, both in the schedule's zone."""

    zone: str
    today: dt.date
    day: dt.date
    start: dt.datetime
    """Aware, UTC."""
    deadline: dt.datetime
    """Aware, UTC."""

    def as_json(self) -> dict[str, Any]:
        tz = ZoneInfo(self.zone)
        return {
            "zone": self.zone,
            "day": self.day.isoformat(),
            "start": self.start.astimezone(tz).isoformat(timespec="minutes"),
            "deadline": self.deadline.astimezone(tz).isoformat(timespec="minutes"),
            "start_utc": self.start.isoformat(timespec="minutes"),
            "deadline_utc": self.deadline.isoformat(timespec="minutes"),
        }

    def describe(self) -> str:
        """``next run 2026-03-09 (America/Los_Angeles): start 00:30 PST = 2026-03-09 08:30 UTC; ...``."""
        tz = ZoneInfo(self.zone)

        def both(instant: dt.datetime) -> str:
            return f"{instant.astimezone(tz):%H:%M %Z} = {instant:%Y-%m-%d %H:%M} UTC"

        return f"next run {self.day} ({self.zone}): start {both(self.start)}; deadline {both(self.deadline)}"


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


def _changes(changes: dict[str, Any] | None) -> list[Any]:
    if changes is None:
        return [None, None, None, None]
    return [changes["added"], changes["removed"], changes["changed"], changes["since"]]


def format_status(status: Status) -> str:
    """Tables for people: lag per partition, then per entity, then the schedule."""
    from connector._table import table

    out = []
    if status.lag is None:
        out.append(f"ingest lag (group {status.group}): unavailable ({status.lag_error})")
    else:
        out.append(f"ingest lag (group {status.group}): {sum(status.lag.values()):,} event(s)")
        rows = []
        for key, lag in sorted(status.lag.items()):
            topic, _, partition = key.rpartition("/")
            rows.append([topic, int(partition), lag])
        out.append(table(["topic", "partition", "lag"], rows))
    out.append("")
    if status.storage is None:
        out.append(f"deliveries: storage not configured ({status.storage_error})")
    elif status.storage_error is not None:
        out.append(f"deliveries: {status.storage} unavailable ({status.storage_error})")
    elif status.manifest_day is None:
        out.append(f"deliveries: no published manifest in {status.storage}")
    else:
        out.append(
            f"per entity ({status.storage}); state counts are from the latest manifest "
            f"({status.manifest_day}): delivered + held out at its cut, not the live state now"
        )
        rows = [
            [
                d.entity,
                status.counts.get(d.entity),
                d.latest_status or "absent",
                d.day.isoformat() if d.day else "none found",
                d.route,
                d.records,
                d.created_at.isoformat(timespec="seconds") if d.created_at else None,
                *_changes(d.changes),
            ]
            for d in status.deliveries
        ]
        headers = ["entity", "state", "latest run", "last delivered", "route", "records", "created_at"]
        headers += ["added", "removed", "changed", "since"]
        out.append(table(headers, rows))
    out.append("")
    out.append(status.schedule.describe())
    published = {None: "unknown", True: "published", False: "not published"}[status.today_published]
    if status.today_held is not None:
        held = status.today_held
        published += (
            f"; held: {', '.join(held['waiting'])} blocked or refused, waiting for an override or a "
            f"fix until {held['decide_by']}"
        )
    out.append(f"today {status.schedule.today}: {published}")
    return "\n".join(out)


def collect(
    settings: Settings, *, storage: Storage | None = None, clock: Callable[[], dt.datetime] = _now
) -> Status:
    """Read every part; Kafka and the storage are only read."""
    from connector.mapping import load_mapping
    from connector.snapshot.lag import measure_lag
    from connector.snapshot.service import build_storage, schedule_of

    status = Status(settings.ingest.group_id, schedule_status(schedule_of(settings), clock()))
    topics = sorted(load_mapping(settings.ingest.mapping_file).topics)
    kafka = settings.kafka.client_config()
    gather_lag(status, lambda: measure_lag(kafka, settings.ingest.group_id, topics).partitions)
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
