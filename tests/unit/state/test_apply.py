"""A primary-key update carries an unchanged-TOAST value to the new key, within one store only.

The changes are the example's payment 1 -> 5 (examples/make_events.py): the old row, the
delete under the old key (header ``__debezium.newkey``) and the create under the new key
(header ``__debezium.oldkey``) whose ``reference`` column carried the TOAST placeholder.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from connector.mapping.change import EntityChange
from connector.source.version import Version
from connector.state.apply import MemoryStore, Outcome, apply_change

VALUES = {
    "ClaimId": "CLM-1",
    "Status": "ISSUED",
    "Payee": "PROVIDER",
    "PaymentMethod": "ACH",
    "PaymentAmount": Decimal("125.00"),
}
OLD = EntityChange(
    "EOP",
    "EOP-1",
    False,
    Version(1, 24_300_000, 24_320_000, 0, 0),
    {"EntityId": "EOP-1", **VALUES, "PaymentReference": "ACH-77"},
)
# One UPDATE statement: the delete and the create share the source transaction.
DELETE = EntityChange(
    "EOP", "EOP-1", True, Version(1, 24_600_000, 24_620_000, 0, 1), {}, next_entity_id="EOP-5"
)
CREATE = EntityChange(
    "EOP",
    "EOP-5",
    False,
    Version(1, 24_600_000, 24_630_000, 0, 3),
    {"EntityId": "EOP-5", **VALUES},
    frozenset({"PaymentReference"}),
    previous_entity_id="EOP-1",
)


def run(store: MemoryStore, *changes: EntityChange) -> None:
    for change in changes:
        assert apply_change(store, change) is Outcome.APPLIED


def test_delete_arriving_after_the_create_carries_the_toast_value_over() -> None:
    store = MemoryStore()
    run(store, CREATE, OLD)  # the old row became known only after the create under the new key
    assert store.rows[("EOP", "EOP-5")].missing == {"PaymentReference"}
    run(store, DELETE)
    new = store.rows[("EOP", "EOP-5")]
    assert new.complete
    assert new.values == {"EntityId": "EOP-5", **VALUES, "PaymentReference": "ACH-77"}
    assert store.rows[("EOP", "EOP-1")].deleted


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations((OLD, DELETE, CREATE))),
    ids=lambda o: "-".join("old" if c is OLD else "delete" if c is DELETE else "create" for c in o),
)
def test_any_order_ends_complete_when_the_old_values_precede_the_delete(
    order: tuple[EntityChange, ...],
) -> None:
    store = MemoryStore()
    for change in order:
        apply_change(store, change)
    assert store.rows[("EOP", "EOP-1")].deleted
    new = store.rows[("EOP", "EOP-5")]
    if order.index(OLD) < order.index(DELETE):
        assert new.complete
        assert new.values["PaymentReference"] == "ACH-77"
    else:
        # A delete that came first left a marker without values and the older row is stale
        # against it: nothing to carry, so the row is held out, never given a made-up value.
        assert new.missing == {"PaymentReference"}
        assert "PaymentReference" not in new.values
        assert not new.complete


@pytest.mark.parametrize("create_at", [0, 1, 2])
def test_across_partitions_the_new_row_stays_incomplete(create_at: int) -> None:
    """Debezium keys by primary key, so the old and the new key may land in two partitions,
    each with its own store: the old values are not visible to the new key's store."""
    old_partition, new_partition = MemoryStore(), MemoryStore()
    changes: list[tuple[MemoryStore, EntityChange]] = [(old_partition, OLD), (old_partition, DELETE)]
    changes.insert(create_at, (new_partition, CREATE))
    for store, change in changes:
        assert apply_change(store, change) is Outcome.APPLIED
    new = new_partition.rows[("EOP", "EOP-5")]
    assert new.missing == {"PaymentReference"}
    assert "PaymentReference" not in new.values
    assert not new.complete
    assert list(new_partition.rows) == [("EOP", "EOP-5")]
    marker = old_partition.rows[("EOP", "EOP-1")]
    assert marker.deleted
    assert marker.values["PaymentReference"] == "ACH-77"  # kept, but in the other partition
    assert list(old_partition.rows) == [("EOP", "EOP-1")]
