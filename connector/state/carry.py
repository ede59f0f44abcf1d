"""Carrying unchanged-TOAST values across a primary-key update whose keys sit in different partitions.

Debezium sends a primary-key update as a delete under the old key (header
``__debezium.newkey``) and a create under the new key (``__debezium.oldkey``); the create may
carry the unchanged-TOAST placeholder for a value that only the old key's row holds. When the
two keys hash to the same partition, ``apply_change`` carries the value over locally. When they
do not, no partition sees both rows, so the old key's partition *offers* its row to every
partition (the carry topic, written in its own Kafka transaction) and each partition *receives*
the offer in its own transaction, in its own order:

- the new key's row is there and was created after the donor: the offer fills its missing
  fields, and its missing source columns, exactly as an older upsert would (``merge``'s rule 1,
  so every order of the two events gives the same row);
- it is not there yet: the offer waits as a *pending carry* under a reserved key, written as a
  stamped delete marker (never delivered, aged out by the purge), and the create takes it when
  it comes;
- the new key never comes to this partition: the pending carry ages out.

The offer brings the donor's source columns with its values (decision 0025), as the local
carry (``apply._carry_over``) does: a new row whose TOASTed column came this way would
otherwise keep a hole in its source columns, and the re-mapping pass could never bring it to a
new mapping (``no_source``).

The offer brings the donor's mapping version too, and a fill that gives the new row a value
from a donor under another mapping version than the row's labels it ``MIXED_MAPPING``
(``label_carried``, the local carry's rule as well): the state stage cannot know which of the
two versions is current (the donor may be the one not re-mapped yet, or the row may be), and a
row is never labelled with a mapping that did not make all of its values. The re-mapping pass
maps such a row again in the batch that wrote it (``RemapPass.written``), from the source
columns the carry completed; until then the snapshot holds its entity.

Pure decisions over a ``RowStore``: the ingest's ``BatchView`` and replay's ``MemoryStore``
both fit, so replay carries values the way ingest does. Kept in the state stage because it
only reads and writes rows; the ingest routes the offers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from connector.mapping.change import EntityChange
from connector.mapping.source_columns import SourceColumns, decode_source
from connector.model import ENTITY_NAMES
from connector.source.version import Version
from connector.state.codec import decode_row, encode_row, split_key, state_key
from connector.state.resolve import MIXED_MAPPING, StateRow, merge, source_of

if TYPE_CHECKING:  # apply imports this module: the protocol is needed for typing only
    from connector.state.apply import RowStore

__all__ = [
    "PENDING_PREFIX",
    "CarryOffer",
    "Received",
    "decode_offer",
    "encode_offer",
    "incomplete",
    "label_carried",
    "offer_of",
    "pending_entity",
    "receive",
    "take_pending",
]

PENDING_PREFIX = "~carry/"
"""Pending carries live under ``~carry/<Entity>/<new EntityId><US><old EntityId>``. ``~``
sorts after every entity name, so entity scans never meet them, and no entity name starts
with it."""

_US = "\x1f"
"""Separates the two EntityIds of a pending carry's key: an EntityId is printable text (the
model refuses control characters), so ``(new, old)`` pairs cannot collide the way a ``/``
could."""


@dataclass(frozen=True, slots=True)
class CarryOffer:
    """The old key's row, offered to whichever partition holds (or will hold) the new key."""

    entity: str
    new_id: str
    old_id: str
    version: Version
    values: dict[str, Any]
    source: SourceColumns | str | None = None
    """The donor's source columns (``StateRow.source``: as stored, their encoded text), None
    when it keeps none; they fill the new row's source columns as its values fill its fields."""
    mapping_version: str | None = None
    """The donor's mapping version (``StateRow.mapping_version``; None for a donor without one
    and for an offer written before offers carried it): a fill from another version labels the
    new row ``MIXED_MAPPING``, or None when one side has no version (``label_carried``)."""


class Received(enum.Enum):
    """What an offer did in one partition."""

    FILLED = "filled"
    PENDING = "pending"
    IGNORED = "ignored"


def pending_entity(entity: str) -> str:
    """The ``RowStore`` entity name pending carries of ``entity`` are kept under."""
    return PENDING_PREFIX + entity


def _pending_id(new_id: str, old_id: str) -> str:
    return new_id + _US + old_id


def incomplete(row: StateRow) -> bool:
    """A row a carry may still fill: fields missing, or source columns missing a column.

    The second matters on its own: a TOASTed column no field reads leaves every field present
    but a hole in the source columns, and the re-mapping pass cannot re-map such a row
    (``no_source``), so a new mapping that reads the column would hold the entity forever. PK
    updates are rare, so decoding the source columns here costs nothing measurable."""
    if row.missing:
        return True
    source = source_of(row)
    return source is not None and not source.complete


def offer_of(change: EntityChange, stored: StateRow | None) -> CarryOffer | None:
    """The offer a primary-key update's delete makes, or None when there is nothing to carry.

    ``stored`` is the old key's row *before* the delete: only a live row has values that are
    current at the update (a marker's values are those of an earlier life of the key).
    """
    if not change.deleted or change.next_entity_id is None or stored is None or stored.deleted:
        return None
    if not stored.values:
        return None
    return CarryOffer(
        change.entity,
        change.next_entity_id,
        change.entity_id,
        stored.version,
        dict(stored.values),
        stored.source,
        stored.mapping_version,
    )


def receive(store: RowStore, offer: CarryOffer) -> Received:
    """Apply ``offer`` in one partition's store (a ``RowStore``).

    Versions of two partitions do not compare (each partition's versions carry its own
    snapshot generation, ``connector.source.version``), so nothing here compares the donor's
    version with the new key's. The new key cannot exist while the old one does (a primary
    key is unique), so a *live* new row still missing fields or source columns (``incomplete``)
    is the update's create (or a later change of it) and is filled. Anything else (absent, a
    marker of an earlier life, or live and complete, which may be an earlier life whose delete
    this partition has not read yet) keeps the offer pending for the create to take, with the
    donor's source columns.
    """
    target = store.get(offer.entity, offer.new_id)
    if target is not None and not target.deleted and incomplete(target):
        row = _fill(target, offer.entity, offer.new_id, offer.values, offer.source, offer.mapping_version)
        if row is not None:
            store.put(offer.entity, offer.new_id, row)
            return Received.FILLED
        if target.missing:
            return Received.IGNORED
        # Every field present and the offer fills no source column: pending, as for any
        # complete row before rows kept source columns.
    pending_id = _pending_id(offer.new_id, offer.old_id)
    held = store.get(pending_entity(offer.entity), pending_id)
    if held is not None and held.version >= offer.version:  # both versions are the old key's partition's
        return Received.IGNORED  # a duplicate offer (Debezium's at-least-once, a replayed batch)
    pending = StateRow(
        offer.version, True, offer.values, mapping_version=offer.mapping_version, source=offer.source
    )
    store.put(pending_entity(offer.entity), pending_id, pending)
    return Received.PENDING


def take_pending(store: RowStore, change: EntityChange, row: StateRow) -> StateRow | None:
    """The create's row filled from a pending offer of its old key, or None when none applies.
    A taken offer is dropped: a later update from the same old key must wait for its own."""
    if change.previous_entity_id is None or not incomplete(row):
        return None
    pending_id = _pending_id(change.entity_id, change.previous_entity_id)
    held = store.get(pending_entity(change.entity), pending_id)
    if held is None:
        return None
    store.drop(pending_entity(change.entity), pending_id)
    return _fill(row, change.entity, change.entity_id, held.values, held.source, held.mapping_version)


def label_carried(row: StateRow, filled: StateRow, donor_version: str | None) -> StateRow:
    """``filled``, ``row`` after a carry from a donor under ``donor_version``, labelled.

    When the carry gave the row a value (a field missing, or filled from an older event) and
    the two mapping versions differ, no one mapping made all of its values: the row is labelled
    ``MIXED_MAPPING``, whichever of the two is current (this stage cannot know). Equal versions
    keep the label; so does a fill of source columns only, which changes no value.

    A side without a version (written before rows carried one) is under the version the
    registry adopted for such rows, which this stage does not know either; the row is then
    labelled None, read as that version by the snapshot and the pass (``unversioned``). If it
    is the current mapping, a versioned side is under it too (rows written since carry the
    current version unless the mapping changed), and the row is whole: a pre-upgrade row moved
    by a primary-key update is not held for nothing. If it is not current, the row counts as
    older and is re-mapped or held, as a mix must be."""
    if donor_version == row.mapping_version or filled.mapping_version == MIXED_MAPPING:
        return filled
    if filled.missing == row.missing and filled.field_versions == row.field_versions:
        return filled  # source columns only
    if donor_version is None or row.mapping_version is None:
        return replace(filled, mapping_version=None)
    return replace(filled, mapping_version=MIXED_MAPPING)


def _fill(
    row: StateRow,
    entity: str,
    entity_id: str,
    values: dict[str, Any],
    source: SourceColumns | str | None,
    mapping_version: str | None,
) -> StateRow | None:
    """``row`` with its missing fields and source columns taken from the old key's, as an
    upsert just below the row's own version would fill them (``merge``'s rule 1): only missing
    ones, and never past a delete the row has seen; labelled by ``label_carried``."""
    offered = {name: values[name] for name in row.missing if name in values}
    columns = _offered_source(row, source)
    if not offered and columns is None:
        return None
    v = row.version
    just_below = Version(v.phase, v.major, v.minor, v.row, v.offset - 1)
    fill = EntityChange(
        entity, entity_id, False, just_below, offered, mapping_version=mapping_version, source=columns
    )
    filled = merge(row, fill)
    return None if filled is None else label_carried(row, filled, mapping_version)


def _offered_source(row: StateRow, source: SourceColumns | str | None) -> SourceColumns | None:
    """The donor's source columns the row lacks (of the same table), or None.

    Only *missing* columns, as only missing fields are offered: the fill's version is made up
    (just below the row's, the donor's being another partition's), so it must not compete with
    a column the row filled from its own older event (``filled``), which is newer than the
    donor's. ``apply._carry_over`` passes the donor's columns whole because there the donor's
    version is real and ``SourceColumns.filled_from`` compares it."""
    if source is None:
        return None
    mine = source_of(row)
    if mine is None or mine.complete:
        return None
    donor = decode_source(source) if isinstance(source, str) else source
    if donor.table != mine.table:
        return None
    columns = {name: donor.columns[name] for name in mine.missing if name in donor.columns}
    return SourceColumns(donor.table, columns) if columns else None


def encode_offer(offer: CarryOffer) -> tuple[bytes, bytes]:
    """The offer as a carry-topic record: key ``<Entity>/<new><US><old>``, value the donor as a
    live state row (the state's own codec, so values keep their stored form, the source
    columns their ``"src"`` text and the mapping version its ``"mv"``)."""
    key = state_key(offer.entity, _pending_id(offer.new_id, offer.old_id))
    donor = StateRow(
        offer.version, False, offer.values, mapping_version=offer.mapping_version, source=offer.source
    )
    return key, encode_row(donor)


def decode_offer(key: bytes | None, value: bytes | None) -> CarryOffer:
    """Inverse of ``encode_offer``; a record that is not an offer raises ``ValueError`` (the
    carry topic is the connector's own, so that is a bug or a stranger writing to it). An offer
    written before offers carried source columns has no ``"src"``: its ``source`` is None; one
    written before they carried the donor's mapping version has no ``"mv"``: its
    ``mapping_version`` is None (a fill from it labels the row None: ``label_carried``)."""
    if key is None or value is None:
        raise ValueError("a carry record without key or value")
    entity, pair = split_key(key)
    new_id, sep, old_id = pair.partition(_US)
    if entity not in ENTITY_NAMES or not sep:
        raise ValueError("a carry record whose key is not <Entity>/<new EntityId><US><old EntityId>")
    row = decode_row(entity, value, typed=False)
    return CarryOffer(entity, new_id, old_id, row.version, row.values, row.source, row.mapping_version)
