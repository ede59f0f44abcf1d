"""Snapshot stage: when the daily run happens, what it checks, and which route each entity takes.

The decisions are pure (no clock, no I/O): ``schedule`` (the window across DST changes and the
start-up decision), ``routing`` (file or API, and API batches), ``checks`` (orphans and count
drops, as operator-readable reports) and ``plan`` (both applied to a cut's state). The run
(``run``: lease, pinned cut, files, manifest last) and the daily loop (``scheduler``) act on
them; ``lease``, ``lag`` and ``manifest`` are the run's parts.
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
from connector.snapshot.exceptions import (
    LeaseBusyError,
    LeaseLostError,
    NaiveDatetimeError,
    SnapshotArgumentError,
    SnapshotConfigError,
)
from connector.snapshot.manifest import EntityResult, Manifest
from connector.snapshot.routing import API_BATCH_LIMIT, DEFAULT_FILE_THRESHOLD, Route, api_batches, route_for
from connector.snapshot.run import Outcome, RunConfig, RunResult, SnapshotRun
from connector.snapshot.schedule import Action, Decision, Schedule, decide_on_startup, next_run, run_window
from connector.snapshot.scheduler import Scheduler

__all__ = [
    "API_BATCH_LIMIT",
    "DEFAULT_FILE_THRESHOLD",
    "Action",
    "CountCheck",
    "Decision",
    "EntityOrphans",
    "EntityResult",
    "LeaseBusyError",
    "LeaseLostError",
    "Manifest",
    "MissingParent",
    "NaiveDatetimeError",
    "Orphan",
    "OrphanPolicy",
    "OrphanReport",
    "Outcome",
    "Route",
    "RunConfig",
    "RunResult",
    "Schedule",
    "Scheduler",
    "SnapshotArgumentError",
    "SnapshotConfigError",
    "SnapshotRun",
    "api_batches",
    "count_change",
    "decide_on_startup",
    "next_run",
    "orphans",
    "route_for",
    "run_window",
]
