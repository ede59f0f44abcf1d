"""What ``carecloud-connector status`` reports, and its tables (private to ``connector.ops.status``).

``connector.ops.status`` reads Kafka and the storage into a ``Status``; this module is the
report itself: the parts (each None, with its error, when it could not be read), their JSON for
scripts, and ``format_status``'s tables. State counts are from the latest manifest, and the
output says so. It reads nothing, so it is tested without Kafka or a storage.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["Delivery", "NextRun", "Status", "format_status"]


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
    transactions: dict[str, Any] | None = None
    """The latest manifest's ``checks.transactions`` (transaction tracking on): source
    transactions tracked at its cut, incomplete ones and the rows they held out, per entity."""
    mapping: dict[str, Any] | None = None
    """The latest manifest's ``checks.mapping``: per entity, its rows by mapping version at the
    cut, the current version, how many are under older ones, and whether they were mixed."""
    source_schema: list[dict[str, str | None]] | None = None
    """Mapped columns the newest message of a source topic says are dropped or retyped
    (``connector.ingest.schema_watch.check_topic_tails``): table, column, problem, field, found."""
    source_schema_error: str | None = None
    remap: dict[int, dict[str, Any]] | None = None
    """The re-mapping pass's progress per state partition, as the mapping registry holds it
    (``connector.ingest.remap``): versions it brings rows to, done, counts, rows left."""
    remap_error: str | None = None

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
            "transactions": self.transactions,
            "mapping": self.mapping,
            "source_schema": {"problems": self.source_schema, "error": self.source_schema_error},
            "remap": {
                "partitions": None
                if self.remap is None
                else {str(p): d for p, d in sorted(self.remap.items())},
                "error": self.remap_error,
            },
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


def _changes(changes: dict[str, Any] | None) -> list[Any]:
    if changes is None:
        return [None, None, None, None]
    return [changes["added"], changes["removed"], changes["changed"], changes["since"]]


def _transactions_line(day: dt.date | None, tx: dict[str, Any]) -> str:
    """``source transactions at the 2026-11-25 cut: 812 tracked, 1 incomplete (held out: Claim 1,
    EOP 2; listed in _report.json), 0 expired``."""
    held = ", ".join(f"{entity} {n}" for entity, n in tx.get("held_out", {}).items()) or "nothing"
    return (
        f"source transactions at the {day} cut: {tx.get('tracked', 0)} tracked, "
        f"{tx.get('incomplete', 0)} incomplete (held out: {held}; listed in _report.json), "
        f"{tx.get('expired', 0)} expired"
    )


def _remap_line(status: Status) -> str:
    """``re-mapping pass: done in 3 of 3 partitions; 1500 re-mapped, 2 failed (dead letters),
    0 without source columns, 0 left``."""
    if status.remap_error is not None:
        return f"re-mapping pass: unknown ({status.remap_error})"
    if not status.remap:
        return "re-mapping pass: no progress recorded (no mapping rolled out since rows kept source columns)"
    found = status.remap.values()
    done = sum(1 for d in found if d.get("done"))
    counts = {
        k: sum(d.get("counts", {}).get(k, 0) for d in found) for k in ("remapped", "failed", "no_source")
    }
    left = sum(d.get("left", 0) for d in found)
    return (
        f"re-mapping pass: done in {done} of {len(status.remap)} partitions; {counts['remapped']} re-mapped, "
        f"{counts['failed']} failed (dead letters), {counts['no_source']} without source columns, {left} left"
    )


def _mapping_line(day: dt.date | None, mapping: dict[str, Any]) -> str:
    """``mapping versions at the 2026-11-25 cut: Claim 120 rows under older versions (mixed:
    blocked); the other entities all current``."""
    older = [
        f"{entity} {body['older']} rows under older versions"
        + (" (mixed: blocked)" if body.get("mixed") else "")
        for entity, body in sorted(mapping.items())
        if body.get("older") or body.get("mixed")
    ]
    if not older:
        return f"mapping versions at the {day} cut: every entity's rows under its current mapping"
    return f"mapping versions at the {day} cut: {'; '.join(older)}; the other entities all current"


def _source_schema_line(status: Status) -> str:
    """``source schema: public.claim.paid dropped (Claim.PaidAmount reads it)``, from each source
    topic's newest message; names from the mapping only."""
    if status.source_schema is None:
        return f"source schema: not checked ({status.source_schema_error})"
    if not status.source_schema:
        return "source schema: every column the mapping reads is there (newest message of each topic)"
    parts = [
        f"{p['table']}.{p['column']} {p['problem']}"
        + (f" to {p['found']}" if p.get("found") else "")
        + f" ({p['field']} reads it)"
        for p in status.source_schema
    ]
    return f"source schema: {len(parts)} mapped column(s) no longer fit the mapping: " + "; ".join(parts)


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
        if status.transactions is not None:
            out.append(_transactions_line(status.manifest_day, status.transactions))
        if status.mapping is not None:
            out.append(_mapping_line(status.manifest_day, status.mapping))
    out.append(_source_schema_line(status))
    out.append(_remap_line(status))
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
