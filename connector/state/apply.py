"""Applying entity changes to a row store, including what one row's merge cannot see.

``merge`` decides for one row. A primary-key update touches two rows: Debezium sends a
delete under the old key (header ``__debezium.newkey``) and a create under the new key
(``__debezium.oldkey``), and the create may carry the unchanged-TOAST placeholder for a value
that exists only under the old key. Whichever of the two arrives second carries the old
row's values over, as an *older* fill of the new row, so the merge's order-independence
holds. When the two keys sit in different partitions, the delete's row is also *offered* to
every partition (``connector.state.carry``): the store's ``offer`` sends it on, and the create
takes a pending offer that arrived before it. Either way the carry brings the old row's source
columns too, and runs for a new row missing a field *or* a source column (``carry.incomplete``):
a TOASTed column no field reads still leaves a hole the re-mapping pass cannot map past.
Both paths label a row given a value by a donor under another mapping version
``MIXED_MAPPING`` (``carry.label_carried``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Protocol

from connector.mapping.change import EntityChange
from connector.state.carry import CarryOffer, incomplete, label_carried, offer_of, take_pending
from connector.state.resolve import StateRow, merge, source_of

__all__ = ["MemoryStore", "Outcome", "RowStore", "apply_change"]


class Outcome(enum.Enum):
    """What a change did: the state's metrics count these."""

    APPLIED = "applied"
    STALE = "stale"


class RowStore(Protocol):
    """Rows keyed by (entity, EntityId); the local store and the in-memory replay both fit."""

    def get(self, entity: str, entity_id: str) -> StateRow | None: ...

    def put(self, entity: str, entity_id: str, row: StateRow) -> None: ...

    def drop(self, entity: str, entity_id: str) -> None:
        """Remove a row (a pending carry once taken)."""

    def offer(self, offer: CarryOffer) -> None:
        """Send a primary-key update's carry offer to every partition (see ``state.carry``)."""


class MemoryStore:
    """A dict-backed ``RowStore`` for replay and tests; its offers wait in ``offers`` for the
    caller to deliver to every partition's store."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StateRow] = {}
        self.offers: list[CarryOffer] = []

    def drop(self, entity: str, entity_id: str) -> None:
        self.rows.pop((entity, entity_id), None)

    def offer(self, offer: CarryOffer) -> None:
        self.offers.append(offer)

    def get(self, entity: str, entity_id: str) -> StateRow | None:
        return self.rows.get((entity, entity_id))

    def put(self, entity: str, entity_id: str, row: StateRow) -> None:
        self.rows[(entity, entity_id)] = row

    def items(self) -> Iterator[tuple[tuple[str, str], StateRow]]:
        """Entity rows sorted by entity then EntityId, for deterministic output (pending
        carries, under reserved names, are not entities)."""
        return iter(sorted((k, row) for k, row in self.rows.items() if not k[0].startswith("~")))


def apply_change(store: RowStore, change: EntityChange) -> Outcome:
    """Merge ``change`` into its row and carry values across a primary-key update."""
    stored = store.get(change.entity, change.entity_id)
    row = merge(stored, change)
    if row is None:
        return Outcome.STALE
    store.put(change.entity, change.entity_id, row)
    if change.previous_entity_id is not None and incomplete(row):
        donor = store.get(change.entity, change.previous_entity_id)
        if donor is not None:
            row = _carry_over(store, change.entity, change.entity_id, row, donor)
        if incomplete(row):  # the old key is in another partition: its offer may be here already
            filled = take_pending(store, change, row)
            if filled is not None:
                store.put(change.entity, change.entity_id, filled)
    elif change.next_entity_id is not None and stored is not None and not stored.deleted:
        target = store.get(change.entity, change.next_entity_id)
        if target is not None and incomplete(target):
            _carry_over(store, change.entity, change.next_entity_id, target, stored)
        offer = offer_of(change, stored)
        if offer is not None:
            store.offer(offer)
    return Outcome.APPLIED


def _carry_over(store: RowStore, entity: str, entity_id: str, row: StateRow, donor: StateRow) -> StateRow:
    """Fill ``row``'s missing fields and source columns from the old key's, as an older
    version would, labelled by ``carry.label_carried``; returns the row as it now stands."""
    if donor.version >= row.version or not donor.values:
        return row
    fill = EntityChange(
        entity,
        entity_id,
        False,
        donor.version,
        donor.values,
        mapping_version=donor.mapping_version,
        source=source_of(donor),
    )
    filled = merge(row, fill)
    if filled is None:
        return row
    filled = label_carried(row, filled, donor.mapping_version)
    store.put(entity, entity_id, filled)
    return filled
