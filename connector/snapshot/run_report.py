"""What a snapshot run tells: the operator's report beside the snapshot, and the metrics.

The report (``_report.json``, step 7 of ``connector.snapshot.run``) holds the checks' findings
with EntityIds: it is stored beside the snapshot, under the same access controls. The metrics
get counts, sizes and the time spent per phase only; their label values are fixed names.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator

import orjson

from connector.ops.metrics import Metrics
from connector.sinks.keys import control_key
from connector.sinks.storage import Storage
from connector.snapshot.manifest import Manifest, RunRecord
from connector.snapshot.plan import Plan

__all__ = ["report_plan", "report_published", "timed", "write_report"]

JSON = "application/json"


def write_report(storage: Storage, prefix: str, day: dt.date, record: RunRecord, plan: Plan) -> str:
    """Store the operator's report of ``plan`` (with EntityIds); returns its key."""
    key = control_key(prefix, day, "_report.json")
    body = {"snapshot_id": record.snapshot_id, "day": day.isoformat(), **plan.report_json()}
    storage.put_bytes(key, orjson.dumps(body, option=orjson.OPT_INDENT_2), content_type=JSON)
    return key


def report_plan(metrics: Metrics | None, plan: Plan) -> None:
    """The plan's metrics: entity counts and what changed, blocked entities included."""
    if metrics is None:
        return
    for entity_plan in plan.entities:
        metrics.set_state_entities(entity_plan.entity, entity_plan.records)
        if (changes := entity_plan.changes) is not None:
            metrics.set_changes(entity_plan.entity, changes.added, changes.removed, changes.changed)


def report_published(
    metrics: Metrics | None, storage: Storage, manifest: Manifest, plan: Plan, phases: dict[str, float]
) -> None:
    """Metrics of a published run: counts and sizes only (label values are fixed names)."""
    if metrics is None:
        return
    metrics.observe_phases(phases)
    report_plan(metrics, plan)
    for result in manifest.entities:
        if result.status != "delivered":
            continue
        route = "api" if result.api is not None else result.storage or storage.name
        metrics.delivered(route, result.entity, result.records, result.bytes or 0)
        metrics.delivery_succeeded(result.entity, manifest.created_at)


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block takes to ``phases[name]`` (``RunResult.phases``)."""
    started = time.monotonic()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.monotonic() - started
