"""Integrity checks run before publishing: orphaned references and suspicious count drops.

Each check is a pure function that returns a report an operator can read: frozen dataclasses of
strings, numbers and booleans, so ``json.dumps(dataclasses.asdict(report))`` writes them into
the run's report and the manifest. Reports hold EntityIds and nothing else from the records.
EntityIds are allowed in the operator's report file, which is stored beside the snapshot with
the same access controls; they must not reach logs or metrics, which get ``counts()`` instead.

Orphans. An association (``connector.model.REFERENCES``: FamilyMember→Family,
Care→FamilyMember/Provider, Claim→Care/Provider, EOP→Claim) whose parent is not in the snapshot
is an orphan. The policy says what happens to it:

- ``HOLD_OUT``: the entity is delivered without its orphans, which are listed by EntityId. A
  held-out record is then missing for its own children (a Claim whose Care is held out), so the
  check walks ``ENTITY_NAMES`` parent-before-child and treats held-out parents as absent: the
  cascade ends with no delivered record pointing at an undelivered one.
- ``BLOCK``: an entity with any orphan is not delivered at all (CareCloud keeps the last file).

Either way a blocked entity (by this check, or passed in ``blocked`` by another, such as the
count check) blocks every entity below it: its children would reference records CareCloud has
not received.

Count change. An entity that shrank by more than ``max_drop_ratio`` since the last delivered
snapshot is blocked unless an operator overrides it: a half-empty source table must not replace
a full one at CareCloud. Growth is not limited.

Changed records. An entity of which more than ``max_change_ratio`` of the last delivery
changed content or went away (``connector.snapshot.digest``) is blocked the same way, until an
operator overrides it: the count can stay level while every value or every EntityId moved.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from connector.model import ENTITY_NAMES, REFERENCES
from connector.snapshot.digest import Changes
from connector.snapshot.exceptions import SnapshotArgumentError, SnapshotConfigError

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


class OrphanPolicy(StrEnum):
    """What to do with an entity's orphans."""

    HOLD_OUT = "hold_out"
    """Deliver the entity without them; list them in the report."""
    BLOCK = "block"
    """Deliver none of the entity; list them in the report."""


@dataclass(frozen=True, slots=True)
class MissingParent:
    """One association of an orphan whose parent is not delivered."""

    field: str
    """The association field, e.g. ``CareId``."""
    parent: str
    """The parent entity, e.g. ``Care``."""
    parent_id: str
    """The EntityId the field holds."""
    cause: str
    """``absent``: not in the snapshot; ``held_out``: in it, but held out as an orphan itself."""


@dataclass(frozen=True, slots=True)
class Orphan:
    """A record with at least one association to a parent that is not delivered."""

    entity_id: str
    missing: tuple[MissingParent, ...]


@dataclass(frozen=True, slots=True)
class EntityOrphans:
    """The orphan check's result for one entity."""

    entity: str
    checked: int
    """Records whose associations were checked (0 for an entity without associations)."""
    orphans: tuple[Orphan, ...]
    """Sorted by EntityId, so the same state gives the same report."""
    blocked: bool
    blocked_because: str | None
    """``orphans``, ``parent <Entity> blocked``, ``blocked by an earlier check``, or None."""


@dataclass(frozen=True, slots=True)
class OrphanReport:
    """The orphan check over all six entities, in ``ENTITY_NAMES`` order."""

    policy: OrphanPolicy
    entities: tuple[EntityOrphans, ...]

    def held_out(self, entity: str) -> frozenset[str]:
        """EntityIds to leave out of ``entity``'s delivery (always empty under ``BLOCK``)."""
        if self.policy is not OrphanPolicy.HOLD_OUT:
            return frozenset()
        return frozenset(orphan.entity_id for orphan in self._entity(entity).orphans)

    @property
    def blocked(self) -> tuple[str, ...]:
        """Entities not to deliver, parent-before-child."""
        return tuple(result.entity for result in self.entities if result.blocked)

    def counts(self) -> dict[str, dict[str, int | bool]]:
        """Per entity: checked, orphans, blocked; no EntityIds, so safe for logs and metrics."""
        return {
            result.entity: {
                "checked": result.checked,
                "orphans": len(result.orphans),
                "blocked": result.blocked,
            }
            for result in self.entities
        }

    def _entity(self, entity: str) -> EntityOrphans:
        for result in self.entities:
            if result.entity == entity:
                return result
        raise SnapshotArgumentError(f"unknown entity {entity!r}")


@dataclass(frozen=True, slots=True)
class CountCheck:
    """The count-change check for one entity."""

    entity: str
    previous: int | None
    """Records in the last delivered snapshot; None when there is none."""
    current: int
    drop_ratio: float | None
    """``(previous - current) / previous``; negative for growth; None without a previous count > 0."""
    max_drop_ratio: float
    exceeded: bool
    """The entity shrank by more than ``max_drop_ratio``."""
    overridden: bool
    """Exceeded, but an operator allowed delivery."""
    blocked: bool


@dataclass(frozen=True, slots=True)
class ChangeCheck:
    """The changed-records check for one entity: its delivered set against its last delivery."""

    entity: str
    since: str | None
    """The date of the last delivery compared with; None when there is no digest to compare."""
    previous: int | None
    added: int | None
    removed: int | None
    changed: int | None
    """Same EntityId, other content."""
    churn_ratio: float | None
    """``(changed + removed) / previous``: the share of the last delivery that is not delivered
    again as it was; None without a previous delivery of at least one record."""
    max_change_ratio: float
    exceeded: bool
    overridden: bool
    blocked: bool


def change_check(
    entity: str,
    changes: Changes | None,
    max_change_ratio: float = 0.5,
    override: bool = False,
) -> ChangeCheck:
    """Block ``entity`` when more than ``max_change_ratio`` of its last delivery changed or went.

    A jump in changed records is as suspicious as a drop in count: a mapping that rewrites every
    value, a source restored from another environment, EntityIds that moved (the same count of
    records, all removed and added again). Added records are not counted (growth is not
    limited, as in the count check). The comparison is exact, as ``count_change``'s is; no
    earlier digest, or an empty last delivery, never blocks; 1.0 turns the check off.
    """
    if entity not in ENTITY_NAMES:
        raise SnapshotArgumentError(f"unknown entity {entity!r}")
    _check_ratio("max_change_ratio", max_change_ratio)
    if changes is None:
        return ChangeCheck(entity, None, None, None, None, None, None, max_change_ratio, False, False, False)
    previous = changes.previous
    if previous == 0:
        ratio = None
        exceeded = False
    else:
        churn = Fraction(changes.changed + changes.removed, previous)
        ratio = float(churn)
        exceeded = churn > Fraction(str(max_change_ratio))
    return ChangeCheck(
        entity,
        changes.since,
        previous,
        changes.added,
        changes.removed,
        changes.changed,
        ratio,
        max_change_ratio,
        exceeded,
        exceeded and override,
        exceeded and not override,
    )


def _check_ratio(name: str, ratio: float) -> None:
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and 0 <= ratio <= 1):
        raise SnapshotConfigError(f"{name} must be a number between 0 and 1")


def orphans(
    rows: Mapping[str, Iterable[Sequence[str]]],
    present: Mapping[str, Container[str]],
    *,
    policy: OrphanPolicy = OrphanPolicy.HOLD_OUT,
    blocked: Collection[str] = (),
) -> OrphanReport:
    """Find the records whose parents are not delivered; apply ``policy``; cascade down.

    ``rows[entity]``, for each entity with associations, yields ``(EntityId, parent ids...)``
    with the parent ids in ``REFERENCES[entity]`` order; it is read once, so it may stream
    from the state store. ``present[entity]``, for each parent entity, answers ``id in ...``
    for the EntityIds in the snapshot (a set, or a view over the store). Only the orphans are
    held in memory. ``blocked`` names entities another check has already blocked.
    """
    unknown = [name for name in blocked if name not in ENTITY_NAMES]
    if unknown:
        raise SnapshotArgumentError(f"blocked names unknown entities: {', '.join(sorted(unknown))}")
    held_out: dict[str, frozenset[str]] = {}
    blocked_now: set[str] = set()
    results = []
    for entity in ENTITY_NAMES:
        references = REFERENCES[entity]
        found: list[Orphan] = []
        checked = 0
        if references:
            if entity not in rows:
                raise SnapshotArgumentError(f"no rows given for {entity}, which has associations")
            parents = [
                (ref, _parents(present, ref.parent), held_out.get(ref.parent, frozenset()))
                for ref in references
            ]
            for row in rows[entity]:
                checked += 1
                if len(row) != len(references) + 1:
                    raise SnapshotArgumentError(
                        f"a {entity} row must hold the EntityId and {len(references)} parent id(s), in "
                        f"REFERENCES order; row {checked} holds {len(row)} values"
                    )
                missing = tuple(
                    MissingParent(
                        ref.field, ref.parent, parent_id, "held_out" if parent_id in out else "absent"
                    )
                    for (ref, ids, out), parent_id in zip(parents, row[1:], strict=True)
                    if parent_id in out or parent_id not in ids
                )
                if missing:
                    found.append(Orphan(row[0], missing))
        found.sort(key=lambda orphan: orphan.entity_id)
        because = _blocked_because(entity, found, policy, blocked, blocked_now)
        if because is not None:
            blocked_now.add(entity)
        if policy is OrphanPolicy.HOLD_OUT:
            held_out[entity] = frozenset(orphan.entity_id for orphan in found)
        results.append(EntityOrphans(entity, checked, tuple(found), because is not None, because))
    return OrphanReport(policy, tuple(results))


def count_change(
    entity: str,
    previous: int | None,
    current: int,
    max_drop_ratio: float = 0.5,
    override: bool = False,
) -> CountCheck:
    """Block ``entity`` when it shrank by more than ``max_drop_ratio`` of ``previous``, unless overridden.

    Exactly the ratio passes (from 1000 to 500 at 0.5): the comparison is exact, in fractions,
    with the ratio read as the decimal it is written as (0.29 is 29/100, not the float below it).
    No previous snapshot, or a previous count of 0, never blocks. ``max_drop_ratio`` 1.0 turns
    the check off; 0.0 blocks any shrink.
    """
    if entity not in ENTITY_NAMES:
        raise SnapshotArgumentError(f"unknown entity {entity!r}")
    _check_ratio("max_drop_ratio", max_drop_ratio)
    if current < 0 or (previous is not None and previous < 0):
        raise SnapshotArgumentError("record counts must not be negative")
    if previous is None or previous == 0:
        return CountCheck(entity, previous, current, None, max_drop_ratio, False, False, False)
    drop = Fraction(previous - current, previous)
    exceeded = drop > Fraction(str(max_drop_ratio))  # 0.29 as 29/100, not its binary neighbour
    return CountCheck(
        entity,
        previous,
        current,
        float(drop),
        max_drop_ratio,
        exceeded,
        exceeded and override,
        exceeded and not override,
    )


def _parents(present: Mapping[str, Container[str]], parent: str) -> Container[str]:
    if parent not in present:
        raise SnapshotArgumentError(f"no EntityIds given for {parent}, a parent entity")
    return present[parent]


def _blocked_because(
    entity: str, found: list[Orphan], policy: OrphanPolicy, given: Collection[str], blocked: set[str]
) -> str | None:
    if entity in given:
        return "blocked by an earlier check"
    for ref in REFERENCES[entity]:
        if ref.parent in blocked:
            return f"parent {ref.parent} blocked"
    if found and policy is OrphanPolicy.BLOCK:
        return "orphans"
    return None
