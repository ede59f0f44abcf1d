"""Integrity checks run before publishing: orphaned references and suspicious count drops.

Each check is a pure function that returns a report an operator can read: frozen dataclasses of
strings, numbers and booleans, so ``json.dumps(dataclasses.asdict(report))`` writes them into
the run's report and the manifest. Reports hold EntityIds and nothing else from the records.
EntityIds are allowed in the operator's report file, which is stored beside the snapshot with
the same access controls; they must not reach logs or metrics, which get ``counts()`` instead.

Two concerns, one module each, their names importable from here:

- orphans (``connector.snapshot.orphan_check``): associations whose parent is not delivered,
  held out or blocked by the policy, the cascade running parent-before-child;
- the count and change gates (``connector.snapshot.gates``): an entity that shrank, or of
  which too much changed or went, since its last delivery is blocked until an operator
  overrides it.
"""

from __future__ import annotations

from connector.snapshot.gates import ChangeCheck, CountCheck, change_check, count_change
from connector.snapshot.orphan_check import (
    EntityOrphans,
    MissingParent,
    Orphan,
    OrphanPolicy,
    OrphanReport,
    orphans,
)

__all__ = [
    "ChangeCheck",
    "CountCheck",
    "EntityOrphans",
    "MissingParent",
    "Orphan",
    "OrphanPolicy",
    "OrphanReport",
    "change_check",
    "count_change",
    "orphans",
]
