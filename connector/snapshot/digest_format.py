"""A delivered set's digest file and its content hash, and two digests compared.

The content hash is BLAKE2b (8 bytes) over the record's values *as stored* in the entity's
field order, each as a tag and its text (``_encode``). Field order, not the stored JSON's key
order: a row merged from a partial update keeps its keys in arrival order, a full row in
schema order, and the same values must hash the same. The extension computes the same hash
over the compiled spill (``fastpath/src/digest.rs``) at about 0.3 µs per record; this module
is the reference the equivalence tests hold it to, and the path without the extension.

A digest file is a sequence of records: a little-endian u32 EntityId length, the EntityId's
UTF-8 bytes, the 8 hash bytes. Comparing two is a merge of two sorted streams: memory stays
flat whatever the entity's size.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from connector import _fastpath
from connector.model import field_names
from connector.snapshot.exceptions import SnapshotConfigError

__all__ = [
    "CHUNK",
    "DIGEST_VERSION",
    "HASH_BYTES",
    "Changes",
    "Documents",
    "content_hash",
    "diff_files",
    "digest_entity",
    "write_digest",
]

DIGEST_VERSION = 1
"""Bumped when the hash's definition changes: digests of another version are not compared."""

HASH_BYTES = 8
_LEN = struct.Struct("<I")
CHUNK = 1 << 20
"""Bytes per read and write of a digest file."""


@dataclass(frozen=True, slots=True)
class Changes:
    """One entity's delivered set against its previous delivery."""

    since: str
    """The snapshot date of the previous delivery (ISO)."""
    added: int
    removed: int
    changed: int
    """Same EntityId, different content."""
    unchanged: int

    @property
    def previous(self) -> int:
        """Records in the previous delivery."""
        return self.removed + self.changed + self.unchanged

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Changes:
        return cls(raw["since"], raw["added"], raw["removed"], raw["changed"], raw["unchanged"])


def _encode(value: Any) -> bytes:
    """One stored value as the hash reads it (``fastpath/src/digest.rs`` writes the same)."""
    if value is None:
        return b"n"
    if value is True:
        return b"t"
    if value is False:
        return b"f"
    if isinstance(value, str):
        return b"s" + value.encode() + b"\xff"
    if isinstance(value, int | float):
        return b"i" + orjson.dumps(value) + b"\xff"  # the number's JSON text, as stored
    raise SnapshotConfigError(f"a stored value of type {type(value).__name__} is not a scalar")


def content_hash(fields: Sequence[str], values: Mapping[str, Any]) -> bytes:
    """The record's 8-byte content hash; ``values`` as stored (``StateReader.documents``)."""
    hasher = hashlib.blake2b(digest_size=HASH_BYTES)
    for name in fields:
        hasher.update(_encode(values.get(name)))
    return hasher.digest()


def write_digest(records: Iterable[tuple[str, Mapping[str, Any]]], fields: Sequence[str], path: Path) -> int:
    """Write the digest of ``records`` (``(EntityId, stored values)`` in EntityId order) to ``path``."""
    count = 0
    with path.open("wb", buffering=CHUNK) as out:
        for entity_id, values in records:
            raw = entity_id.encode()
            out.write(_LEN.pack(len(raw)))
            out.write(raw)
            out.write(content_hash(fields, values))
            count += 1
    return count


def _records(path: Path) -> Iterator[tuple[bytes, bytes]]:
    with path.open("rb", buffering=CHUNK) as source:
        previous = None
        while header := source.read(_LEN.size):
            if len(header) != _LEN.size:
                raise ValueError(f"{path.name}: a truncated digest record")
            entity_id = source.read(_LEN.unpack(header)[0])
            digest = source.read(HASH_BYTES)
            if len(digest) != HASH_BYTES:
                raise ValueError(f"{path.name}: a truncated digest record")
            if previous is not None and entity_id <= previous:
                raise ValueError("digest records are not in strictly increasing EntityId order")
            previous = entity_id
            yield entity_id, digest


def diff_files(previous: Path, current: Path, since: str) -> Changes:
    """Added, removed, changed and unchanged records from ``previous`` to ``current``; a
    damaged digest (truncated, out of order) is a ``ValueError``."""
    extension = _fastpath.load_or_none()  # missing or stale: compared in Python
    if extension is not None:
        added, removed, changed, unchanged = extension.digest_diff(str(previous), str(current))
        return Changes(since, added, removed, changed, unchanged)
    counts = [0, 0, 0, 0]
    old, new = _records(previous), _records(current)
    a, b = next(old, None), next(new, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            counts[1] += 1
            a = next(old, None)
        elif a is None or b[0] < a[0]:
            counts[0] += 1
            b = next(new, None)
        else:
            counts[2 if a[1] != b[1] else 3] += 1
            a, b = next(old, None), next(new, None)
    return Changes(since, *counts)


class Documents(Protocol):
    """The part of a cut's reader a digest needs (``StateReader``, ``CompiledStateReader``)."""

    def documents(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]: ...


def digest_entity(state: Documents, entity: str, held_out: Collection[str], path: Path) -> int:
    """Write the digest of what ``entity`` delivers (its rows minus ``held_out``) to ``path``."""
    fields = list(field_names(entity))
    spill = getattr(state, "spill", None)  # the compiled reader: hashed in the extension
    if spill is not None and hasattr(spill, "digest"):
        try:
            return int(spill.digest(entity, fields, set(held_out), str(path)))
        except ValueError as exc:
            raise SnapshotConfigError(str(exc)) from None
    records = ((i, values) for i, values in state.documents(entity) if i not in held_out)
    return write_digest(records, fields, path)
