"""No entity is delivered with rows of two mappings (docs/decisions/0023).

Each state row carries the version of the mapping that produced it (``"mv"``,
``connector.mapping.versions``). At the cut, the complete rows of each entity are tallied by
version (the readers count them while loading); rows without a version (written before rows
carried one) are read as the registry's ``unversioned`` version of the entity
(``connector.state.mapping_registry``). An entity whose rows span more than one version is
*mixed*: a mapping was rolled out and not every row is re-mapped yet. A mixed entity is
blocked with the versions and counts as its reason (``CARECLOUD_SNAPSHOT_MAPPING_POLICY``,
hold), and its children with it, as a blocked entity always blocks its children.

A row labelled ``MIXED_MAPPING`` (``connector.state.resolve``: a primary-key carry gave it a
value from a row under another mapping version, and the re-mapping pass could not map it again
yet) is a mix on its own: its entity is blocked even when every row carries that one label, and
the reason says so. It counts as a row under an older version.

An entity whose rows are all under one version is delivered, even if that version is older
than the current mapping: it is consistent, and the rows are what the state holds. The counts
of rows under versions other than the current one are reported per entity (the manifest's
``checks.mapping``, ``status``, ``carecloud_state_rows_older_mapping``).

With ``CARECLOUD_SNAPSHOT_MAPPING_POLICY=wait`` the run first waits for ingest's re-mapping
pass (``connector.ingest.remap``) to finish in every state partition (``wait_for_remap``: the
pass's progress as the mapping registry holds it), bounded by the date's decision time (and the
lag wait's bound): only then is the cut taken, so a rollout's re-mapped rows are in it. At the
bound the cut goes ahead, and a mix still blocks the entity, as with ``hold``. The cut is pinned
for the date (a resumed run reuses it), so waiting after it could not help.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from connector.model import ENTITY_NAMES
from connector.state.mapping_registry import Registry
from connector.state.resolve import MIXED_MAPPING

__all__ = ["UNVERSIONED", "MappingCheck", "VersionTally", "check_mapping", "wait_for_remap"]

log = logging.getLogger(__name__)

UNVERSIONED = "unversioned"
"""How a row without a version that the registry cannot resolve is named in reports."""


class VersionTally(Protocol):
    """The part of a cut reader the check needs."""

    def mapping_versions(self, entity: str) -> Counter[str | None]: ...


@dataclass(frozen=True, slots=True)
class MappingCheck:
    """Each entity's complete rows at the cut by mapping version, and the current versions."""

    versions: dict[str, dict[str, int]]
    """``{entity: {version: rows}}``, rows without a version resolved through the registry."""
    current: dict[str, str]
    """``{entity: version}`` of the mapping ingest runs now (the registry's current)."""

    def mixed(self) -> frozenset[str]:
        """Entities whose rows span mapping versions, or with a row whose values do
        (``MIXED_MAPPING``): never delivered as they are."""
        return frozenset(entity for entity, found in self.versions.items() if _mixed(found))

    def older(self, entity: str) -> int:
        """Rows of ``entity`` under another version than the current one (0 without one)."""
        current = self.current.get(entity)
        if current is None:
            return 0
        return sum(n for version, n in self.versions.get(entity, {}).items() if version != current)

    def reason(self, entity: str) -> str:
        found = ", ".join(f"{version}: {n}" for version, n in sorted(self.versions[entity].items()))
        current = self.current.get(entity, "unknown")
        carried = self.versions[entity].get(MIXED_MAPPING, 0)
        if carried:
            return (
                f"{carried} row(s) whose values a primary-key update carried from a row under another "
                f"mapping version ({found}; current {current}): not re-mapped yet (the re-mapping pass "
                "counts them no_source or failed)"
            )
        return (
            f"rows under {len(self.versions[entity])} mapping versions ({found}; current {current}): "
            "not every row is re-mapped yet"
        )

    def counts_json(self) -> dict[str, Any]:
        """For the manifest (and ``status``): versions and counts, never an EntityId."""
        return {
            entity: {
                "versions": dict(sorted(found.items())),
                "current": self.current.get(entity),
                "older": self.older(entity),
                "mixed": _mixed(found),
            }
            for entity, found in self.versions.items()
        }


def _mixed(found: Mapping[str, int]) -> bool:
    return len(found) > 1 or MIXED_MAPPING in found


def check_mapping(
    state: VersionTally, current: Mapping[str, str], unversioned: Mapping[str, str]
) -> MappingCheck:
    """Tally the cut's rows by version (``unversioned``: what a row without one is under, per
    entity, from the registry)."""
    versions: dict[str, dict[str, int]] = {}
    for entity in ENTITY_NAMES:
        found: Counter[str] = Counter()
        for version, n in state.mapping_versions(entity).items():
            found[version if version is not None else unversioned.get(entity, UNVERSIONED)] += n
        if found:
            versions[entity] = dict(found)
    return MappingCheck(versions, dict(current))


def wait_for_remap(
    read: Callable[[], Registry],
    partitions: int,
    *,
    until: dt.datetime,
    clock: Callable[[], dt.datetime],
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 15.0,
) -> list[int]:
    """Policy ``wait``: poll the registry (``read``) until the re-mapping pass has finished in
    every one of the state's ``partitions``, or ``until``; the partitions still pending (empty:
    the pass is done, or there was nothing to do)."""
    waited = False
    while True:
        pending = read().remap_pending(partitions)
        if not pending:
            if waited:
                log.info("the re-mapping pass finished; cutting")
            return pending
        if clock() >= until:
            log.warning(
                "the re-mapping pass is not finished at the wait bound; cutting anyway (a mix is held)",
                extra={"partitions": len(pending)},
            )
            return pending
        log.info("waiting for the re-mapping pass before the cut", extra={"partitions": len(pending)})
        waited = True
        sleep(poll_s)
