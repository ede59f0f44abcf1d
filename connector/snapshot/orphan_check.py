"""The orphan check: associations whose parent is not delivered, held out or blocked.

An association (``connector.model.REFERENCES``: FamilyMember→Family, Care→FamilyMember/Provider,
Claim→Care/Provider, EOP→Claim) whose parent is not in the snapshot is an orphan. The policy
says what happens to it:

- ``HOLD_OUT``: the entity is delivered without its orphans, which are listed by EntityId. A
  held-out record is then missing for its own children (a Claim whose Care is held out), so the
  check walks ``ENTITY_NAMES`` parent-before-child and treats held-out parents as absent: the
  cascade ends with no delivered record pointing at an undelivered one.
- ``BLOCK``: an entity with any orphan is not delivered at all (CareCloud keeps the last file).

Either way a blocked entity (by this check, or passed in ``blocked`` by another, such as the
count check in ``connector.snapshot.gates``) blocks every entity below it: its children would
reference records CareCloud has not received. The report lists EntityIds, for the operator's
report only; logs and metrics get ``OrphanReport.counts()`` (``connector.snapshot.checks``).
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from connector.model import ENTITY_NAMES, REFERENCES
from connector.snapshot.exceptions import SnapshotArgumentError

__all__ = ["EntityOrphans", "MissingParent", "Orphan", "OrphanPolicy", "OrphanReport", "orphans"]


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
