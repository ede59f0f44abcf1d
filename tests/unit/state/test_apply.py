"""A primary-key update carries an unchanged-TOAST value to the new key, in one store or across two.

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
from connector.state.carry import CarryOffer, Received, decode_offer, encode_offer, receive

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


def _deliver(source: MemoryStore) -> list[CarryOffer]:
    """The offers the old key's partition made, taken for the test to deliver (the carry topic)."""
    offers = list(source.offers)
    source.offers.clear()
    return offers


@pytest.mark.parametrize("create_at", [0, 1, 2, 3])
@pytest.mark.parametrize("duplicate", [False, True])
def test_across_partitions_the_offer_fills_the_new_row_in_any_order(create_at: int, duplicate: bool) -> None:
    """Debezium keys by primary key, so the old and the new key may land in two partitions,
    each with its own store: the old key's partition offers its row to every partition, and the
    new key's row ends complete whether the create comes before or after the offer."""
    old_partition, new_partition, other = MemoryStore(), MemoryStore(), MemoryStore()
    steps: list[str] = ["old", "delete", "offer"]
    steps.insert(create_at if create_at < 3 else 3, "create")
    if duplicate:
        steps.append("offer")  # at-least-once: the same offer again
    offers: list[CarryOffer] = []
    for step in steps:
        if step == "old":
            run(old_partition, OLD)
        elif step == "delete":
            run(old_partition, DELETE)
            offers = _deliver(old_partition)
            assert len(offers) == 1
        elif step == "create":
            run(new_partition, CREATE)
        else:
            for store in (old_partition, new_partition, other):
                receive(store, offers[0])
    new = new_partition.rows[("EOP", "EOP-5")]
    assert new.complete
    assert new.values == {"EntityId": "EOP-5", **VALUES, "PaymentReference": "ACH-77"}
    assert [key for key, _ in new_partition.items()] == [("EOP", "EOP-5")]
    assert list(other.items()) == []  # a pending carry is not an entity: never delivered
    assert old_partition.rows[("EOP", "EOP-1")].deleted


def test_an_offer_never_resurrects_a_new_key_deleted_since() -> None:
    old_partition, new_partition = MemoryStore(), MemoryStore()
    run(old_partition, OLD, DELETE)
    offer = _deliver(old_partition)[0]
    later_delete = EntityChange("EOP", "EOP-5", True, Version(1, 24_700_000, 24_700_000, 0, 9), {})
    run(new_partition, CREATE, later_delete)
    assert receive(new_partition, offer) is Received.PENDING  # a marker may be an earlier life
    assert new_partition.rows[("EOP", "EOP-5")].deleted
    assert "PaymentReference" not in new_partition.rows[("EOP", "EOP-5")].values


def test_a_pending_offer_is_taken_only_by_the_create_of_its_own_update() -> None:
    """A create under the same new key from another old key must not take this offer's values."""
    old_partition, new_partition = MemoryStore(), MemoryStore()
    run(old_partition, OLD, DELETE)
    assert receive(new_partition, _deliver(old_partition)[0]) is Received.PENDING
    stranger = EntityChange(
        "EOP",
        "EOP-5",
        False,
        CREATE.version,
        CREATE.values,
        CREATE.missing,
        previous_entity_id="EOP-2",
    )
    run(new_partition, stranger)
    assert new_partition.rows[("EOP", "EOP-5")].missing == {"PaymentReference"}


def test_a_delete_of_a_row_never_seen_offers_nothing() -> None:
    store = MemoryStore()
    run(store, DELETE)
    assert store.offers == []


def test_an_offer_survives_the_carry_topic_byte_for_byte() -> None:
    store = MemoryStore()
    run(store, OLD, DELETE)
    offer = store.offers[0]
    key, value = encode_offer(offer)
    back = decode_offer(key, value)
    assert (back.entity, back.new_id, back.old_id, back.version) == ("EOP", "EOP-5", "EOP-1", OLD.version)
    assert back.values["PaymentReference"] == "ACH-77"
    assert back.values["PaymentAmount"] == "125.00"  # stored form, untyped, as the view holds it
    with pytest.raises(ValueError, match="not <Entity>"):
        decode_offer(b"Nope/EOP-5\x1fEOP-1", value)
