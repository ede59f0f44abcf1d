"""A primary-key update carries an unchanged-TOAST value to the new key, in one store or across two.

The changes are the example's payment 1 -> 5 (examples/make_events.py): the old row, the
delete under the old key (header ``__debezium.newkey``) and the create under the new key
(header ``__debezium.oldkey``) whose ``reference`` column carried the TOAST placeholder.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from decimal import Decimal

import pytest

from connector.ingest.carry import send_offers
from connector.ingest.remap import remap_change, table_topics
from connector.mapping import Mapper, parse_mapping
from connector.mapping.change import EntityChange
from connector.mapping.source_columns import SourceColumns
from connector.source.version import Version
from connector.state.apply import MemoryStore, Outcome, apply_change
from connector.state.carry import CarryOffer, Received, decode_offer, encode_offer, receive
from connector.state.codec import decode_row, encode_row
from connector.state.resolve import MIXED_MAPPING, StateRow, source_of
from tests.unit.family_moves import FAMILY_MAPPING, FAMILY_ROLLOUT, NAME, family_update

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


# -- source columns (decision 0025): the carry brings the donor's, as it brings its values -----


class EncodedStore(MemoryStore):
    """A ``MemoryStore`` that keeps rows as the ingest's view does: encoded, read back untyped
    (source columns as their ``"src"`` text), so the carry meets the stored forms."""

    def put(self, entity: str, entity_id: str, row: StateRow) -> None:
        self.rows[(entity, entity_id)] = decode_row(entity, encode_row(row, deleted_at_ms=1), typed=False)


def _through_the_topic(offer: CarryOffer) -> CarryOffer:
    return decode_offer(*encode_offer(offer))


def _remapped(row: StateRow) -> EntityChange | None:
    """What the re-mapping pass makes of ``row`` under the rollout (None: ``no_source``)."""
    mapper = Mapper(parse_mapping(FAMILY_ROLLOUT), source_columns=True)
    return remap_change(mapper, table_topics(mapper), "Family", "FAM-22", row, 0)


@pytest.mark.parametrize("store_kind", [MemoryStore, EncodedStore], ids=["memory", "encoded"])
@pytest.mark.parametrize(
    "toasted", [frozenset({"family_name", "notes"}), frozenset({"notes"})], ids=["name", "unmapped"]
)
@pytest.mark.parametrize("create_at", [0, 1, 2, 3])
@pytest.mark.parametrize("duplicate", [False, True])
def test_across_partitions_the_offer_brings_the_source_columns_the_create_left_out(
    store_kind: type[MemoryStore], toasted: frozenset[str], create_at: int, duplicate: bool
) -> None:
    """In every order of the create and the offer (before it: the pending carry; after it: the
    fill), the new key's row ends with its source columns complete, the TOASTed ones the
    donor's, so the re-mapping pass can bring it to a new mapping instead of counting it
    ``no_source``. ``unmapped``: only a column no field reads was TOASTed, so every field is
    present and only the source columns have a hole."""
    old, delete, create = family_update(toasted)
    old_partition, new_partition, other = store_kind(), store_kind(), store_kind()
    steps: list[str] = ["old", "delete", "offer"]
    steps.insert(create_at, "create")
    if duplicate:
        steps.append("offer")
    offers: list[CarryOffer] = []
    for step in steps:
        if step == "old":
            run(old_partition, old)
        elif step == "delete":
            run(old_partition, delete)
            offers = [_through_the_topic(o) for o in _deliver(old_partition)]
            assert len(offers) == 1
        elif step == "create":
            run(new_partition, create)
        else:
            for store in (old_partition, new_partition, other):
                receive(store, offers[0])
    donor = source_of(old_partition.rows[("Family", "FAM-2")])  # the marker keeps its columns
    new = new_partition.rows[("Family", "FAM-22")]
    columns = source_of(new)
    assert donor is not None
    assert columns is not None
    assert new.complete
    assert columns.complete
    assert columns.columns == {**donor.columns, "family_id": 22}
    assert new.values["FamilyName"] == NAME
    assert [key for key, _ in new_partition.items()] == [("Family", "FAM-22")]
    remapped = _remapped(new)
    assert remapped is not None  # not no_source
    assert remapped.values["FamilyName"] == NAME
    assert remapped.values["PostalCode"] == json.loads(donor.columns["address"])["zip"]


@pytest.mark.parametrize(
    "toasted", [frozenset({"family_name", "notes"}), frozenset({"notes"})], ids=["name", "unmapped"]
)
@pytest.mark.parametrize("create_first", [True, False])
def test_in_one_partition_the_carry_brings_the_source_columns_too(
    toasted: frozenset[str], create_first: bool
) -> None:
    """The local carry (``_carry_over``), both orders of the delete and the create: the same
    source columns as across partitions, a TOASTed column no field reads included."""
    old, delete, create = family_update(toasted)
    store = MemoryStore()
    run(store, old, *((create, delete) if create_first else (delete, create)))
    new = store.rows[("Family", "FAM-22")]
    columns, donor = source_of(new), source_of(store.rows[("Family", "FAM-2")])
    assert columns is not None
    assert donor is not None
    assert columns.complete
    assert columns.columns == {**donor.columns, "family_id": 22}
    assert _remapped(new) is not None


def test_the_fill_takes_only_source_columns_the_row_lacks() -> None:
    """The cross-partition fill's version is made up (just below the row's): a column the new
    row filled from its own older event is newer than the donor's and must stay."""
    old, delete, create = family_update(frozenset({"family_name"}))
    old_partition, new_partition = MemoryStore(), MemoryStore()
    run(old_partition, old, delete)
    offer = _deliver(old_partition)[0]
    # The create had its own notes; a later update left notes (and the name) as TOAST.
    later = replace(
        create,
        version=Version(1, 300, 300, 0, 0),
        previous_entity_id=None,
        source=SourceColumns(
            "public.family",
            {k: v for k, v in create.source.columns.items() if k != "notes"},  # type: ignore[union-attr]
        ),
        unavailable=frozenset({"family_name", "notes"}),
    )
    mine = replace(create, source=SourceColumns("public.family", {**create.source.columns, "notes": "mine"}))  # type: ignore[union-attr]
    run(new_partition, mine, later)
    assert receive(new_partition, offer) is Received.FILLED
    columns = source_of(new_partition.rows[("Family", "FAM-22")])
    assert columns is not None
    assert columns.complete
    assert columns.columns["notes"] == "mine"
    assert columns.columns["family_name"] == NAME


def test_an_offer_round_trips_with_and_without_source_columns() -> None:
    old, delete, _ = family_update(frozenset({"family_name"}))
    store = MemoryStore()
    run(store, old, delete)
    offer = store.offers[0]
    assert isinstance(offer.source, SourceColumns)
    back = decode_offer(*encode_offer(offer))
    assert (back.entity, back.new_id, back.old_id, back.version) == ("Family", "FAM-22", "FAM-2", old.version)
    assert source_of(StateRow(back.version, False, {}, source=back.source)) == offer.source
    assert decode_offer(*encode_offer(back)) == back  # the stored text goes through unchanged
    bare = replace(offer, source=None)
    key, value = encode_offer(bare)
    assert b'"src"' not in value  # byte for byte what an offer was before offers kept columns
    assert decode_offer(key, value).source is None


def test_an_offer_too_large_with_its_source_columns_is_sent_without_them() -> None:
    old, delete, _ = family_update(frozenset({"family_name"}))
    store = MemoryStore()
    run(store, old, delete)
    offer = store.offers[0]
    key, value = encode_offer(offer)

    class Sent:
        def __init__(self) -> None:
            self.records: list[tuple[str, bytes, bytes, int]] = []

        def produce(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
            self.records.append((topic, value, key, partition))

    roomy, tight = Sent(), Sent()
    assert send_offers(roomy, "carry", 2, [offer], len(key) + len(value)) == 2  # type: ignore[arg-type]
    assert send_offers(tight, "carry", 2, [offer], len(key) + len(value) - 1) == 2  # type: ignore[arg-type]
    assert [decode_offer(k, v) for _, v, k, _ in roomy.records] == [decode_offer(key, value)] * 2
    assert [decode_offer(k, v) for _, v, k, _ in tight.records] == [
        replace(decode_offer(key, value), source=None)
    ] * 2


# -- mapping versions (decisions 0023, 0025): a carry between two never keeps either label ----

# A rollout of a carried column's mapping: status T now maps to SUSPENDED (the status column
# stands for any TOASTed column whose field's mapping changed).
FAMILY_CHANGED = FAMILY_MAPPING.replace("T: TERMINATED}", "T: SUSPENDED}")
V_OLD = Mapper(parse_mapping(FAMILY_MAPPING)).versions["Family"]
V_CUR = Mapper(parse_mapping(FAMILY_CHANGED)).versions["Family"]
WHERE = ["local-create-first", "local-delete-first", "across-0", "across-1", "across-2", "across-3"]


def _moved(
    old: EntityChange, delete: EntityChange, create: EntityChange, where: str, store_kind: type[MemoryStore]
) -> StateRow:
    """The new key's row after the update, carried locally (in the order ``where`` names) or
    across partitions (the create at position n of old, delete, offer, with a duplicate offer)."""
    if where.startswith("local"):
        store = store_kind()
        run(store, old, *((create, delete) if where == "local-create-first" else (delete, create)))
        return store.rows[("Family", "FAM-22")]
    old_partition, new_partition = store_kind(), store_kind()
    steps = ["old", "delete", "offer"]
    steps.insert(int(where.rsplit("-", 1)[1]), "create")
    offers: list[CarryOffer] = []
    for step in [*steps, "offer"]:
        if step == "old":
            run(old_partition, old)
        elif step == "delete":
            run(old_partition, delete)
            offers = [_through_the_topic(o) for o in _deliver(old_partition)]
        elif step == "create":
            run(new_partition, create)
        else:
            receive(new_partition, offers[0])
    return new_partition.rows[("Family", "FAM-22")]


@pytest.mark.parametrize("store_kind", [MemoryStore, EncodedStore], ids=["memory", "encoded"])
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("case", ["donor-older", "row-older"])
def test_a_carry_between_two_mapping_versions_labels_the_row_mixed(
    store_kind: type[MemoryStore], where: str, case: str
) -> None:
    """``donor-older``: a mapping rolled out, the old key's row not re-mapped yet, then the
    update: the create is mapped by the current mapping, its TOASTed name and status come from
    the donor's older values. ``row-older``: the create came before the rollout (older, waiting
    for its values) and the donor was re-mapped before its delete. Neither label is true of all
    the values: the row is labelled mixed, so the snapshot holds it and the pass re-maps it."""
    donor, mover = (
        (FAMILY_MAPPING, FAMILY_CHANGED) if case == "donor-older" else (FAMILY_CHANGED, FAMILY_MAPPING)
    )
    old, delete, create = family_update(frozenset({"family_name", "status", "notes"}), donor, mover)
    new = _moved(old, delete, create, where, store_kind)
    assert new.complete
    assert new.values["FamilyName"] == NAME
    assert new.values["Status"] == ("TERMINATED" if case == "donor-older" else "SUSPENDED")  # the donor's
    assert new.mapping_version == MIXED_MAPPING
    columns = source_of(new)
    assert columns is not None
    assert columns.complete  # so the pass can map it again at once


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("mapping", [FAMILY_MAPPING, FAMILY_CHANGED], ids=["old", "current"])
def test_a_carry_under_one_mapping_version_keeps_its_label(where: str, mapping: str) -> None:
    old, delete, create = family_update(frozenset({"family_name", "status"}), mapping, mapping)
    new = _moved(old, delete, create, where, EncodedStore)
    assert new.complete
    assert new.mapping_version == Mapper(parse_mapping(mapping)).versions["Family"]


@pytest.mark.parametrize("where", WHERE)
def test_a_carry_of_source_columns_only_keeps_the_rows_label(where: str) -> None:
    """Only a column no field reads was TOASTed: the carry gives the row no value, only source
    columns, so the label of the mapping that made every value stays."""
    old, delete, create = family_update(frozenset({"notes"}), FAMILY_MAPPING, FAMILY_CHANGED)
    new = _moved(old, delete, create, where, EncodedStore)
    assert new.mapping_version == V_CUR
    columns = source_of(new)
    assert columns is not None
    assert columns.complete


def test_an_offer_round_trips_the_donors_mapping_version() -> None:
    old, delete, _ = family_update(frozenset({"family_name"}), FAMILY_MAPPING, FAMILY_CHANGED)
    store = MemoryStore()
    run(store, old, delete)
    offer = store.offers[0]
    assert offer.mapping_version == V_OLD
    key, value = encode_offer(offer)
    assert value.endswith(f',"mv":"{V_OLD}"}}'.encode())
    assert decode_offer(key, value) == _through_the_topic(offer)
    assert decode_offer(key, value).mapping_version == V_OLD
    before = encode_offer(replace(offer, mapping_version=None))[1]  # an offer written before
    assert b'"mv"' not in before
    assert decode_offer(key, before).mapping_version is None
    # Held as a pending carry, it keeps the version until the create takes it.
    new_partition = EncodedStore()
    assert receive(new_partition, _through_the_topic(offer)) is Received.PENDING
    ((_, pending),) = new_partition.rows.items()
    assert pending.mapping_version == V_OLD


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("side", ["donor", "row"])
def test_a_carry_with_a_row_written_before_versions_labels_it_as_such_rows(where: str, side: str) -> None:
    """A side without a version (written before rows carried one) is under whatever version the
    registry adopted for such rows, which the state stage does not know: the row is labelled
    None, read as that version by the snapshot and the pass. Never ``mixed``: a pre-upgrade row
    moved by a primary-key update, with no mapping change since, must not hold its entity (its
    legacy side keeps no source columns, so the pass could not clear a mixed label)."""
    old, delete, create = family_update(frozenset({"family_name", "status"}))
    if side == "donor":
        old = replace(old, mapping_version=None)
    else:
        create = replace(create, mapping_version=None)
    new = _moved(old, delete, create, where, EncodedStore)
    assert new.complete
    assert new.values["FamilyName"] == NAME
    assert new.mapping_version is None
