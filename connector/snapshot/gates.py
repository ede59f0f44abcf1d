"""The count and change gates: an entity that shrank or changed too much since its last delivery.

Count change. An entity that shrank by more than ``max_drop_ratio`` since the last delivered
snapshot is blocked unless an operator overrides it: a half-empty source table must not replace
a full one at CareCloud. Growth is not limited.

Changed records. An entity of which more than ``max_change_ratio`` of the last delivery
changed content or went away (``connector.snapshot.digest``) is blocked the same way, until an
operator overrides it: the count can stay level while every value or every EntityId moved.

Both compare exactly, in fractions, with the ratio read as the decimal it is written as. An
entity either gate blocks is passed to the orphan check (``connector.snapshot.orphan_check``)
as blocked, so its children are blocked too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from connector.model import ENTITY_NAMES
from connector.snapshot.digest import Changes
from connector.snapshot.exceptions import SnapshotArgumentError, SnapshotConfigError

__all__ = ["ChangeCheck", "CountCheck", "change_check", "count_change"]


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
