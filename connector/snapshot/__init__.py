"""Snapshot stage: when the daily run happens, what it checks, and which route each entity takes.

These modules are pure (no clock, no I/O): ``schedule`` (the window across DST changes and the
start-up decision), ``routing`` (file or API, and API batches) and ``checks`` (orphans and count
drops, as operator-readable reports). The run that reads the state and publishes builds on them.
"""

from connector.snapshot.checks import (
    CountCheck,
    EntityOrphans,
    MissingParent,
    Orphan,
    OrphanPolicy,
    OrphanReport,
    count_change,
    orphans,
)
from connector.snapshot.exceptions import NaiveDatetimeError, SnapshotArgumentError, SnapshotConfigError
from connector.snapshot.routing import API_BATCH_LIMIT, DEFAULT_FILE_THRESHOLD, Route, api_batches, route_for
from connector.snapshot.schedule import Action, Decision, Schedule, decide_on_startup, next_run, run_window

__all__ = [
    "API_BATCH_LIMIT",
    "DEFAULT_FILE_THRESHOLD",
    "Action",
    "CountCheck",
    "Decision",
    "EntityOrphans",
    "MissingParent",
    "NaiveDatetimeError",
    "Orphan",
    "OrphanPolicy",
    "OrphanReport",
    "Route",
    "Schedule",
    "SnapshotArgumentError",
    "SnapshotConfigError",
    "api_batches",
    "count_change",
    "decide_on_startup",
    "next_run",
    "orphans",
    "route_for",
    "run_window",
]
