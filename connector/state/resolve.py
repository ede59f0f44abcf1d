"""The pure decision at the heart of the state: what a change does to a stored row.

The stored row is a last-writer-wins map with versioned delete markers, merged field by
field, which makes the merge commutative, associative and idempotent: any delivery order of
the same events, with duplicates and replays, ends in the same state (the property test
proves it). The rules:

1. A change at or below the row's version does not replace the row (replays, duplicates,
   late older updates). It may still *fill* a field the newer version left unavailable
   (unchanged TOAST) or one filled earlier from an even older version, provided it is newer
   than every delete the row has seen: the value of an unchanged column is the value at the
   newest older version that carried it.
2. A newer delete turns the row into a versioned marker. The marker keeps the last values
   (so a primary-key update can carry TOAST values over to the new key) and the delete's
   version as ``delete_floor``: nothing older may ever resurrect or fill the row.
3. A newer upsert replaces the row's values; fields it lacks are taken from the stored row
   when the stored row is live, else stay missing until an older event fills them.
4. An older delete (a create already arrived after it) raises ``delete_floor`` and drops
   fields that were filled from before it.

A row whose ``missing`` is not empty is incomplete: the snapshot holds it out and reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connector.mapping.change import EntityChange
from connector.mapping.source_columns import SourceColumns, decode_source
from connector.source.version import Version

__all__ = ["MIXED_MAPPING", "StateRow", "merge", "source_of"]

MIXED_MAPPING = "mixed"
"""The mapping version of a row whose values a primary-key carry took partly from a donor under
another mapping version (``connector.state.carry``): no one mapping made all of its values, so
neither version may label it (docs/decisions/0021, 0025). Never a real version (those are hex,
``connector.mapping.versions``), so it is older than every current one: the snapshot holds its
entity (``snapshot.mapping_check``) and the re-mapping pass maps the row again from its source
columns, in the batch that wrote it. Only the carry sets it; ordinary events are mapped by the
running mapper, and ``_mixed_version`` labels their partial rows with the stored, older version."""


@dataclass(slots=True)
class StateRow:
    """The state of one entity: its newest version, live or a delete marker.

    ``field_versions`` lists only the fields whose value came from a version older than
    ``version`` (filled after a partial update); every other present field is at ``version``.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which
    made construction about four times slower on the per-event path (bench/ingest.py). It is
    still treated as immutable: nothing assigns to it after construction.
    """

    version: Version
    deleted: bool
    values: dict[str, Any]
    missing: frozenset[str] = frozenset()
    field_versions: dict[str, Version] = field(default_factory=dict)
    delete_floor: Version | None = None
    mapping_version: str | None = None
    """The version of the mapping whose output the row's values are (``"mv"`` in the encoded
    row); None for a row written before rows carried it, or by no mapping file;
    ``MIXED_MAPPING`` for a row a primary-key carry filled from a donor under another one."""
    source: SourceColumns | str | None = None
    """The merged source columns the values were mapped from (``"src"``), or their encoded
    text as read from a stored row (decoded only when needed: ``source_of``); None for a row
    written without them (before they were kept, or with ``source_columns`` off)."""

    @property
    def complete(self) -> bool:
        return not self.deleted and not self.missing


_OLDEST = Version(-1, -1, -1, -1, -1)


def _newer_than_floor(version: Version, floor: Version | None) -> bool:
    return floor is None or version > floor


def source_of(row: StateRow | None) -> SourceColumns | None:
    """The row's source columns, decoded from their stored text if need be."""
    if row is None or row.source is None:
        return None
    if isinstance(row.source, str):
        return decode_source(row.source)
    return row.source


def _new_source(stored: StateRow | None, change: EntityChange) -> SourceColumns | None:
    """The source columns of the row a newer upsert writes: the change's, each column it left
    out as unchanged TOAST taken from the stored (live) row's columns, or missing."""
    if change.source is None:
        return None
    if not change.unavailable:
        return change.source
    if stored is None or stored.deleted:
        return change.source.merged_over(None, change.version, change.unavailable)
    return change.source.merged_over(source_of(stored), stored.version, change.unavailable)


def merge(stored: StateRow | None, change: EntityChange) -> StateRow | None:
    """The row after ``change``, or ``None`` when the change leaves ``stored`` as it is.

    ``None`` lets the caller skip the write (and count the change as stale) cheaply.
    """
    if stored is None:
        if change.deleted:
            return StateRow(
                change.version, True, {}, delete_floor=change.version, mapping_version=change.mapping_version
            )
        return StateRow(
            change.version,
            False,
            dict(change.values),
            change.missing,
            mapping_version=change.mapping_version,
            source=_new_source(None, change),
        )

    if change.version > stored.version:
        if change.deleted:
            # The marker keeps the values it had, so it keeps their mapping version too.
            return StateRow(
                change.version,
                True,
                stored.values,
                frozenset(),
                {},
                change.version,
                stored.mapping_version,
                stored.source,
            )
        return _newer_upsert(stored, change)

    if change.version == stored.version:
        return None
    if change.deleted:
        return _older_delete(stored, change.version)
    return _older_fill(stored, change)


def _newer_upsert(stored: StateRow, change: EntityChange) -> StateRow:
    if not change.missing:
        return StateRow(
            change.version,
            False,
            dict(change.values),
            delete_floor=stored.delete_floor,
            mapping_version=change.mapping_version,
            source=_new_source(stored, change),
        )
    values = dict(change.values)
    missing: set[str] = set()
    field_versions: dict[str, Version] = {}
    for name in change.missing:
        if not stored.deleted and name in stored.values:
            values[name] = stored.values[name]
            field_versions[name] = stored.field_versions.get(name, stored.version)
        else:
            missing.add(name)
    return StateRow(
        change.version,
        False,
        values,
        frozenset(missing),
        field_versions,
        stored.delete_floor,
        _mixed_version(stored, change, bool(field_versions)),
        _new_source(stored, change),
    )


def _mixed_version(stored: StateRow, change: EntityChange, kept_values: bool) -> str | None:
    """The mapping version of a row whose values come partly from ``stored`` (unchanged-TOAST
    fields kept): the change's when no value was kept or both agree, else the stored row's,
    which is older (or None): a row is never labelled with a mapping that did not make all of
    its values, so the snapshot's version check sees it as not yet re-mapped."""
    if not kept_values or stored.mapping_version == change.mapping_version:
        return change.mapping_version
    return stored.mapping_version


def _older_fill(stored: StateRow, change: EntityChange) -> StateRow | None:
    """Fill missing or older-filled fields from an older upsert; rule 1."""
    if not _newer_than_floor(change.version, stored.delete_floor):
        return None
    filled = {
        name: change.values[name]
        for name in stored.missing | stored.field_versions.keys()
        if name in change.values and stored.field_versions.get(name, _OLDEST) < change.version
    }
    source = _filled_source(stored, change)
    if not filled and source is None:
        return None
    return StateRow(
        stored.version,
        stored.deleted,
        {**stored.values, **filled},
        stored.missing - filled.keys(),
        {**stored.field_versions, **dict.fromkeys(filled, change.version)},
        stored.delete_floor,
        _mixed_version(stored, change, True) if filled else stored.mapping_version,
        stored.source if source is None else source,
    )


def _filled_source(stored: StateRow, change: EntityChange) -> SourceColumns | None:
    """The stored row's source columns with those missing or filled from older events filled
    from an older upsert's (rule 1, as for fields); None when that changes nothing."""
    if change.source is None or stored.source is None:
        return None
    source = source_of(stored)
    if source is None or (source.complete and not source.filled):
        return None
    return source.filled_from(change.source, change.version)


def _older_delete(stored: StateRow, version: Version) -> StateRow | None:
    """A delete older than the row but newer than its floor; rule 4."""
    if not _newer_than_floor(version, stored.delete_floor):
        return None
    dropped = {name for name, v in stored.field_versions.items() if v < version}
    if not dropped:
        return StateRow(
            stored.version,
            stored.deleted,
            stored.values,
            stored.missing,
            stored.field_versions,
            version,
            stored.mapping_version,
            _source_dropped(stored, version),
        )
    values = {k: v for k, v in stored.values.items() if k not in dropped}
    kept = {k: v for k, v in stored.field_versions.items() if k not in dropped}
    return StateRow(
        stored.version,
        stored.deleted,
        values,
        stored.missing | dropped,
        kept,
        version,
        stored.mapping_version,
        _source_dropped(stored, version),
    )


def _source_dropped(stored: StateRow, version: Version) -> SourceColumns | str | None:
    """The stored row's source columns without those filled from before an older delete."""
    source = source_of(stored)
    if source is None:
        return None
    dropped = source.dropped_before(version)
    return stored.source if dropped is source else dropped
