"""What a run will deliver: the checks and the routing applied to the state as of the cut.

The plan is computed from the cut's state before anything is published, so the manifest and
the report describe exactly what was delivered, and the same cut always gives the same plan.
It streams: the orphan check reads each entity's rows that may be orphans (``candidates``:
every row for the Python reader; for the compiled one, only those its merge join could not
clear), parents are looked up in the cut's on-disk copy (``present``) rather than in sets, so
memory holds only the orphans' EntityIds, not the state.

Held out of an entity's delivery: rows still missing an unchanged-TOAST value (``incomplete``)
and, under ``hold_out``, orphans (with the cascade of ``checks.orphans``). Blocked: entities
whose count dropped too far (unless overridden) and, under ``block``, entities with orphans;
a blocked entity blocks its children.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from connector.model import ENTITY_NAMES, REFERENCES
from connector.snapshot.checks import (
    ChangeCheck,
    CountCheck,
    OrphanPolicy,
    OrphanReport,
    change_check,
    count_change,
    orphans,
)
from connector.snapshot.digest import Changes
from connector.snapshot.routing import Route, route_for

__all__ = ["EntityPlan", "Plan", "StateView", "make_plan"]


class StateView(Protocol):
    """The part of ``StateReader`` the plan needs (a cut's state)."""

    def present(self, entity: str) -> Container[str]: ...

    def count(self, entity: str) -> int: ...

    def candidates(self, entity: str, fields: Sequence[str]) -> Iterator[tuple[str, ...]]:
        """``(EntityId, parent ids...)`` of at least every row that may be an orphan (every
        row is correct; a reader that can rule rows out cheaply yields fewer)."""
        ...

    def incomplete(self, entity: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class EntityPlan:
    """One entity's delivery as decided before publishing."""

    entity: str
    records: int
    """Records to deliver: live and complete, minus held-out ones."""
    held_out: frozenset[str]
    """EntityIds left out (orphans under ``hold_out``, and incomplete rows)."""
    route: Route
    blocked_because: str | None
    changes: Changes | None = None
    """Against the entity's last delivery; None when there is no digest to compare with."""


@dataclass(frozen=True, slots=True)
class Plan:
    entities: tuple[EntityPlan, ...]
    """In ``ENTITY_NAMES`` order: parents before children."""
    orphans: OrphanReport
    counts: tuple[CountCheck, ...]
    incomplete: dict[str, tuple[str, ...]]
    changes: tuple[ChangeCheck, ...] = ()

    def checks_json(self) -> dict[str, Any]:
        """For the manifest, logs and metrics: counts and verdicts, never an EntityId."""
        return {
            "orphan_policy": self.orphans.policy.value,
            "orphans": self.orphans.counts(),
            "incomplete": {entity: len(ids) for entity, ids in self.incomplete.items()},
            "count_change": [asdict(check) for check in self.counts],
            "changes": [asdict(check) for check in self.changes],
        }

    def report_json(self) -> dict[str, Any]:
        """For the operator's report beside the snapshot: the checks with the EntityIds."""
        return {
            "orphans": asdict(self.orphans),
            "incomplete": {entity: list(ids) for entity, ids in self.incomplete.items()},
            "count_change": [asdict(check) for check in self.counts],
            "changes": [asdict(check) for check in self.changes],
        }


Differ = Callable[[Mapping[str, frozenset[str]]], Mapping[str, Changes | None]]
"""``{entity: held out} -> {entity: changes}`` against each entity's last delivery, asked once
for every entity (``SnapshotRun`` digests the sets, several at a time)."""


def make_plan(
    state: StateView,
    *,
    policy: OrphanPolicy = OrphanPolicy.HOLD_OUT,
    previous: Mapping[str, int] | None = None,
    max_drop_ratio: float = 0.5,
    overrides: Collection[str] = (),
    file_threshold: int = 5000,
    api_enabled: bool = False,
    previous_routes: Mapping[str, Route] | None = None,
    api_return_below: int | None = None,
    changes: Differ | None = None,
    max_change_ratio: float = 0.5,
) -> Plan:
    """Run the checks over the cut's state and route every entity.

    ``changes`` is asked once, with what each entity would hold out, for what each delivery
    changes against the entity's last one; ``overrides`` lift the change check too."""
    incomplete = {entity: tuple(state.incomplete(entity)) for entity in ENTITY_NAMES}
    present = {entity: state.present(entity) for entity in ENTITY_NAMES}
    report = _checked(state, orphans(_association_rows(state), present, policy=policy))
    counts = {entity: _count(state, entity, report) for entity in ENTITY_NAMES}
    checks = tuple(
        count_change(
            entity, (previous or {}).get(entity), counts[entity], max_drop_ratio, entity in overrides
        )
        for entity in ENTITY_NAMES
    )
    held = {entity: report.held_out(entity) | frozenset(incomplete[entity]) for entity in ENTITY_NAMES}
    found = dict(changes(held)) if changes else dict.fromkeys(ENTITY_NAMES)
    churn = tuple(
        change_check(entity, found[entity], max_change_ratio, entity in overrides) for entity in ENTITY_NAMES
    )
    jumped = {check.entity for check in churn if check.blocked}
    blocked = [check.entity for check in checks if check.blocked]
    blocked += [entity for entity in ENTITY_NAMES if entity in jumped and entity not in blocked]
    if blocked:  # rare: scan again so the block cascades to the children, as the check defines
        report = _checked(state, orphans(_association_rows(state), present, policy=policy, blocked=blocked))
        counts = {entity: _count(state, entity, report) for entity in ENTITY_NAMES}
    plans = []
    for result in report.entities:
        entity = result.entity
        because = result.blocked_because
        if entity in jumped:
            because = "changed records beyond the allowed ratio"
        elif entity in blocked:
            because = "count dropped beyond the allowed ratio"
        plans.append(
            EntityPlan(
                entity,
                counts[entity],
                report.held_out(entity) | frozenset(incomplete[entity]),
                route_for(
                    counts[entity],
                    file_threshold=file_threshold,
                    api_enabled=api_enabled,
                    previous=(previous_routes or {}).get(entity),
                    api_return_below=api_return_below,
                ),
                because,
                found[entity],
            )
        )
    return Plan(tuple(plans), report, checks, incomplete, churn)


def _association_rows(state: StateView) -> dict[str, Iterator[tuple[str, ...]]]:
    return {
        entity: state.candidates(entity, [ref.field for ref in REFERENCES[entity]])
        for entity in ENTITY_NAMES
        if REFERENCES[entity]
    }


def _checked(state: StateView, report: OrphanReport) -> OrphanReport:
    """The report with every complete row counted as checked, not only the candidates read."""
    entities = tuple(
        replace(result, checked=state.count(result.entity)) if REFERENCES[result.entity] else result
        for result in report.entities
    )
    return replace(report, entities=entities)


def _count(state: StateView, entity: str, report: OrphanReport) -> int:
    """Complete live rows minus held-out orphans (incomplete rows are never delivered)."""
    return state.count(entity) - len(report.held_out(entity))
