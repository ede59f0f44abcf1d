"""What a run will deliver: the checks and the routing applied to the state as of the cut.

The plan is computed from the cut's state before anything is published, so the manifest and
the report describe exactly what was delivered, and the same cut always gives the same plan.
It streams: the orphan check reads each entity's rows that may be orphans (``candidates``:
every row for the Python reader; for the compiled one, only those its merge join could not
clear), parents are looked up in the cut's on-disk copy (``present``) rather than in sets, so
memory holds only the orphans' EntityIds, not the state.

Held out of an entity's delivery: rows still missing an unchanged-TOAST value (``incomplete``),
rows of a source transaction incomplete at the cut (``transactions``: they are taken out of the
parents' presence too, so their children are held as orphans) and, under ``hold_out``, orphans
(with the cascade of ``checks.orphans``). Blocked: entities whose count dropped too far (unless
overridden), under ``block`` entities with orphans, and entities of an incomplete transaction
too large to hold out row by row, and entities whose rows span mapping versions
(``mapping_check``); a blocked entity blocks its children.
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
from connector.snapshot.mapping_check import MappingCheck
from connector.snapshot.routing import Route, route_for
from connector.snapshot.transactions import TxCheck

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

    def documents(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(EntityId, values as stored) of every complete row, in EntityId order."""
        ...


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
    transactions: TxCheck | None = None
    """The cut's source transactions, with transaction tracking on; else None."""
    mapping: MappingCheck | None = None
    """The cut's rows by mapping version (``snapshot.mapping_check``); None: not checked."""

    def checks_json(self) -> dict[str, Any]:
        """For the manifest, logs and metrics: counts and verdicts, never an EntityId."""
        body = {
            "orphan_policy": self.orphans.policy.value,
            "orphans": self.orphans.counts(),
            "incomplete": {entity: len(ids) for entity, ids in self.incomplete.items()},
            "count_change": [asdict(check) for check in self.counts],
            "changes": [asdict(check) for check in self.changes],
        }
        if self.transactions is not None:
            body["transactions"] = self.transactions.counts_json()
        if self.mapping is not None:
            body["mapping"] = self.mapping.counts_json()
        return body

    def report_json(self) -> dict[str, Any]:
        """For the operator's report beside the snapshot: the checks with the EntityIds."""
        body = {
            "orphans": asdict(self.orphans),
            "incomplete": {entity: list(ids) for entity, ids in self.incomplete.items()},
            "count_change": [asdict(check) for check in self.counts],
            "changes": [asdict(check) for check in self.changes],
        }
        if self.transactions is not None:
            body["transactions"] = self.transactions.report_json()
        if self.mapping is not None:
            body["mapping"] = self.mapping.counts_json()
        return body


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
    transactions: TxCheck | None = None,
    mapping: MappingCheck | None = None,
) -> Plan:
    """Run the checks over the cut's state and route every entity.

    ``changes`` is asked once, with what each entity would hold out, for what each delivery
    changes against the entity's last one; ``overrides`` lift the change check too.
    ``transactions``: the cut's source transactions judged (``snapshot.transactions``); the
    rows of an incomplete one are held out. ``mapping``: the cut's rows by mapping version; an
    entity whose rows span versions is blocked (``snapshot.mapping_check``)."""
    incomplete = {entity: tuple(state.incomplete(entity)) for entity in ENTITY_NAMES}
    in_tx = transactions.held() if transactions is not None else {}
    tx_blocked = transactions.blocked() if transactions is not None else frozenset()
    mixed = mapping.mixed() if mapping is not None else frozenset()
    # Rows of an incomplete transaction that the cut would deliver (complete rows): held out,
    # and not present as parents, so the orphan check holds their children too.
    tx_held = {
        entity: frozenset(i for i in in_tx.get(entity, ()) if i in state.present(entity))
        for entity in ENTITY_NAMES
    }
    present = {entity: _Without(state.present(entity), tx_held[entity]) for entity in ENTITY_NAMES}
    every_row = any(tx_held.values())
    report = _checked(state, orphans(_association_rows(state, every_row), present, policy=policy))
    counts = {entity: _count(state, entity, report, tx_held[entity]) for entity in ENTITY_NAMES}
    checks = tuple(
        count_change(
            entity, (previous or {}).get(entity), counts[entity], max_drop_ratio, entity in overrides
        )
        for entity in ENTITY_NAMES
    )
    held = {
        entity: report.held_out(entity) | frozenset(incomplete[entity]) | tx_held[entity]
        for entity in ENTITY_NAMES
    }
    found = dict(changes(held)) if changes else dict.fromkeys(ENTITY_NAMES)
    churn = tuple(
        change_check(entity, found[entity], max_change_ratio, entity in overrides) for entity in ENTITY_NAMES
    )
    jumped = {check.entity for check in churn if check.blocked}
    blocked = [check.entity for check in checks if check.blocked]
    blocked += [entity for entity in ENTITY_NAMES if entity in jumped and entity not in blocked]
    blocked += [entity for entity in ENTITY_NAMES if entity in tx_blocked and entity not in blocked]
    blocked += [entity for entity in ENTITY_NAMES if entity in mixed and entity not in blocked]
    if blocked:  # rare: scan again so the block cascades to the children, as the check defines
        report = _checked(
            state, orphans(_association_rows(state, every_row), present, policy=policy, blocked=blocked)
        )
        counts = {entity: _count(state, entity, report, tx_held[entity]) for entity in ENTITY_NAMES}
    plans = []
    for result in report.entities:
        entity = result.entity
        because = result.blocked_because
        if entity in mixed and mapping is not None:  # a mix is never delivered, overrides or not
            because = mapping.reason(entity)
        elif entity in jumped:
            because = "changed records beyond the allowed ratio"
        elif entity in tx_blocked:
            because = "an incomplete source transaction too large to hold out row by row"
        elif entity in blocked:
            because = "count dropped beyond the allowed ratio"
        plans.append(
            EntityPlan(
                entity,
                counts[entity],
                report.held_out(entity) | frozenset(incomplete[entity]) | tx_held[entity],
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
    return Plan(tuple(plans), report, checks, incomplete, churn, transactions, mapping)


def _association_rows(state: StateView, every_row: bool = False) -> dict[str, Iterator[tuple[str, ...]]]:
    """Each child entity's ``(EntityId, parent ids...)``: the reader's candidates, or with
    ``every_row`` all of its rows (a parent held out by an incomplete transaction is not
    known to the reader, which only rules out rows whose parents are in the cut)."""
    out: dict[str, Iterator[tuple[str, ...]]] = {}
    for entity in ENTITY_NAMES:
        fields = [ref.field for ref in REFERENCES[entity]]
        if fields:
            out[entity] = _every_row(state, entity, fields) if every_row else state.candidates(entity, fields)
    return out


def _every_row(state: StateView, entity: str, fields: Sequence[str]) -> Iterator[tuple[str, ...]]:
    for entity_id, values in state.documents(entity):
        yield (entity_id, *(values[name] for name in fields))


def _checked(state: StateView, report: OrphanReport) -> OrphanReport:
    """The report with every complete row counted as checked, not only the candidates read."""
    entities = tuple(
        replace(result, checked=state.count(result.entity)) if REFERENCES[result.entity] else result
        for result in report.entities
    )
    return replace(report, entities=entities)


def _count(state: StateView, entity: str, report: OrphanReport, tx_held: frozenset[str] = frozenset()) -> int:
    """Complete live rows minus held-out orphans and rows of incomplete transactions
    (incomplete rows are never delivered, so never counted)."""
    orphaned = report.held_out(entity)
    return state.count(entity) - len(orphaned) - len(tx_held - orphaned)


class _Without:
    """A parent presence without the rows an incomplete transaction holds out."""

    __slots__ = ("_held", "_present")

    def __init__(self, present: Container[str], held: frozenset[str]) -> None:
        self._present, self._held = present, held

    def __contains__(self, entity_id: object) -> bool:
        return entity_id not in self._held and entity_id in self._present
