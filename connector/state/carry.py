"""Carrying unchanged-TOAST values across a primary-key update whose keys sit in different partitions.

Debezium sends a primary-key update as a delete under the old key (header
``__debezium.newkey``) and a create under the new key (``__debezium.oldkey``); the create may
carry the unchanged-TOAST placeholder for a value that only the old key's row holds. When the
two keys hash to the same partition, ``apply_change`` carries the value over locally. When they
do not, no partition sees both rows, so the old key's partition *offers* its row to every
partition (the carry topic, written in its own Kafka transaction) and each partition *receives*
the offer in its own transaction, in its own order:

- the new key's row is there and was created after the donor: the offer fills its missing
  fields exactly as an older upsert would (``merge``'s rule 1, so every order of the two events
  gives the same row);
- it is not there yet: the offer waits as a *pending carry* under a reserved key, written as a
  stamped delete marker (never delivered, aged out by the purge), and the create takes it when
  it comes;
- the new key never comes to this partition: the pending carry ages out.

Pure decisions over a ``RowStore``: the ingest's ``BatchView`` and replay's ``MemoryStore``
both fit, so replay carries values the way ingest does. Kept in the state stage because it
only reads and writes rows; the ingest routes the offers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector.mapping.change import EntityChange
from connector.model import ENTITY_NAMES
from connector.source.version import Version
from connector.state.codec import decode_row, encode_row, split_key, state_key
from connector.state.resolve import StateRow, merge

if TYPE_CHECKING:  # apply imports this module: the protocol is needed for typing only
    from connector.state.apply import RowStore

__all__ = [
    "PENDING_PREFIX",
    "CarryOffer",
    "Received",
    "decode_offer",
    "encode_offer",
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
        change.entity, change.next_entity_id, change.entity_id, stored.version, dict(stored.values)
    )


def receive(store: RowStore, offer: CarryOffer) -> Received:
    """Apply ``offer`` in one partition's store (a ``RowStore``).

    Versions of two partitions do not compare (each partition's versions carry its own
    snapshot generation, ``connector.source.version``), so nothing here compares the donor's
    version with the new key's. The new key cannot exist while the old one does (a primary
    key is unique), so a *live* new row still missing fields is the update's create (or a later
    change of it) and is filled. Anything else (absent, a marker of an earlier life, or live and
    complete, which may be an earlier life whose delete this partition has not read yet) keeps
    the offer pending for the create to take.
    """
    target = store.get(offer.entity, offer.new_id)
    if target is not None and not target.deleted and target.missing:
        row = _fill(target, offer.entity, offer.new_id, offer.values)
        if row is None:
            return Received.IGNORED
        store.put(offer.entity, offer.new_id, row)
        return Received.FILLED
    pending_id = _pending_id(offer.new_id, offer.old_id)
    held = store.get(pending_entity(offer.entity), pending_id)
    if held is not None and held.version >= offer.version:  # both versions are the old key's partition's
        return Received.IGNORED  # a duplicate offer (Debezium's at-least-once, a replayed batch)
    store.put(pending_entity(offer.entity), pending_id, StateRow(offer.version, True, offer.values))
    return Received.PENDING


def take_pending(store: RowStore, change: EntityChange, row: StateRow) -> StateRow | None:
    """The create's row filled from a pending offer of its old key, or None when none applies.
    A taken offer is dropped: a later update from the same old key must wait for its own."""
    if change.previous_entity_id is None or not row.missing:
        return None
    pending_id = _pending_id(change.entity_id, change.previous_entity_id)
    held = store.get(pending_entity(change.entity), pending_id)
    if held is None:
        return None
    store.drop(pending_entity(change.entity), pending_id)
    return _fill(row, change.entity, change.entity_id, held.values)


def _fill(row: StateRow, entity: str, entity_id: str, values: dict[str, Any]) -> StateRow | None:
    """``row`` with its missing fields taken from the old key's values, as an upsert just below
    the row's own version would fill them (``merge``'s rule 1): only missing fields, and never
    past a delete the row has seen."""
    offered = {name: values[name] for name in row.missing if name in values}
    if not offered:
        return None
    v = row.version
    just_below = Version(v.phase, v.major, v.minor, v.row, v.offset - 1)
    return merge(row, EntityChange(entity, entity_id, False, just_below, offered))


def encode_offer(offer: CarryOffer) -> tuple[bytes, bytes]:
    """The offer as a carry-topic record: key ``<Entity>/<new><US><old>``, value the donor as a
    live state row (the state's own codec, so values keep their stored form)."""
    key = state_key(offer.entity, _pending_id(offer.new_id, offer.old_id))
    return key, encode_row(StateRow(offer.version, False, offer.values))


def decode_offer(key: bytes | None, value: bytes | None) -> CarryOffer:
    """Inverse of ``encode_offer``; a record that is not an offer raises ``ValueError`` (the
    carry topic is the connector's own, so that is a bug or a stranger writing to it)."""
    if key is None or value is None:
        raise ValueError("a carry record without key or value")
    entity, pair = split_key(key)
    new_id, sep, old_id = pair.partition(_US)
    if entity not in ENTITY_NAMES or not sep:
        raise ValueError("a carry record whose key is not <Entity>/<new EntityId><US><old EntityId>")
    row = decode_row(entity, value, typed=False)
    return CarryOffer(entity, new_id, old_id, row.version, row.values)
