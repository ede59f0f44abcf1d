"""What changed since the last delivery: a digest of each delivered set, compared with the next.

A digest is one ``(EntityId, content hash)`` per delivered record, in EntityId order
(docs/decisions/0015). It is stored gzipped beside the date's files (``_digest.<Entity>.bin.gz``,
same access control as the report, which already holds EntityIds), named by the manifest, and
read back by the next delivery of the entity to count records added, removed and changed. It
holds no record values: an 8-byte hash cannot be turned back into a family's data.

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

import datetime as dt
import gzip
import hashlib
import io
import logging
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from connector import _fastpath
from connector.model import field_names
from connector.sinks.formats import GZIP_CONTENT_TYPE
from connector.sinks.keys import day_prefix
from connector.sinks.storage import Storage
from connector.snapshot.exceptions import SnapshotConfigError
from connector.snapshot.manifest import EntityResult

__all__ = [
    "DIGEST_PREFIX",
    "DIGEST_VERSION",
    "Changes",
    "DeliveryDigests",
    "content_hash",
    "diff_files",
    "digest_entity",
    "digest_key",
    "fetch_digest",
    "store_digest",
    "write_digest",
]

log = logging.getLogger(__name__)

DIGEST_VERSION = 1
"""Bumped when the hash's definition changes: digests of another version are not compared."""

HASH_BYTES = 8
DIGEST_PREFIX = "_digest."
"""Digest objects' names start with it (``digest_key``)."""
_LEN = struct.Struct("<I")
_CHUNK = 1 << 20


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


def digest_key(prefix: str, day: dt.date, entity: str) -> str:
    """``<prefix>/<YYYY-MM-DD>/_digest.<Entity>.bin.gz``: beside the files, sorted apart from them."""
    return f"{day_prefix(prefix, day)}{DIGEST_PREFIX}{entity}.bin.gz"


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
    with path.open("wb", buffering=_CHUNK) as out:
        for entity_id, values in records:
            raw = entity_id.encode()
            out.write(_LEN.pack(len(raw)))
            out.write(raw)
            out.write(content_hash(fields, values))
            count += 1
    return count


def _records(path: Path) -> Iterator[tuple[bytes, bytes]]:
    with path.open("rb", buffering=_CHUNK) as source:
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


def store_digest(storage: Storage, key: str, path: Path) -> None:
    """Upload the digest gzipped (level 1: its hashes do not compress; the EntityIds do)."""

    def chunks(source: BinaryIO) -> Iterator[bytes]:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: the gzip container
        while block := source.read(_CHUNK):
            if out := compressor.compress(block):
                yield out
        yield compressor.flush()

    with path.open("rb") as source:
        storage.put_stream(key, chunks(source), content_type=GZIP_CONTENT_TYPE)


def fetch_digest(storage: Storage, key: str, path: Path) -> bool:
    """Download a stored digest to ``path``; False when it is not there."""
    found = storage.get(key)
    if found is None:
        return False
    with gzip.GzipFile(fileobj=io.BytesIO(found[0])) as source, path.open("wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)
    return True


Differ = Callable[[Mapping[str, frozenset[str]]], Mapping[str, "Changes | None"]]
"""``plan.Differ``: every entity's changes at once."""


class _Config(Protocol):
    @property
    def prefix(self) -> str: ...

    @property
    def work_dir(self) -> Path | None: ...


class DeliveryDigests:
    """A run's digests: made in the plan, compared with the last delivery's, stored on delivery.

    A context manager over a scratch directory (the run's work directory), removed on exit.
    """

    def __init__(self, storage: Storage, config: _Config) -> None:
        self._storage, self._prefix, self._work = storage, config.prefix, config.work_dir
        self._dir: Path | None = None

    def __enter__(self) -> DeliveryDigests:
        if self._work is not None:
            self._work.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="carecloud-digest-", dir=self._work))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _path(self, name: str) -> Path:
        if self._dir is None:
            raise RuntimeError("DeliveryDigests is used outside its with block")
        return self._dir / name

    def differ(self, state: Documents, last: Mapping[str, EntityResult]) -> Differ:
        """For the plan: digest what each entity delivers and compare it with its last delivery.

        The entities run on two threads: the extension hashes without the GIL, and the last
        delivery's digest downloads meanwhile, so at 1M entities the plan phase takes about
        what one core needs for the largest entity (docs/benchmarks.md)."""

        def all_changes(held: Mapping[str, frozenset[str]]) -> dict[str, Changes | None]:
            with ThreadPoolExecutor(2, thread_name_prefix="snapshot-digest") as pool:
                futures = {entity: pool.submit(one, entity, held_out) for entity, held_out in held.items()}
                return {entity: future.result() for entity, future in futures.items()}

        def one(entity: str, held_out: frozenset[str]) -> Changes | None:
            current = self._path(f"{entity}.bin")
            digest_entity(state, entity, held_out, current)
            before = last.get(entity)
            found = before.digest if before is not None else None
            if found is None or found.get("version") != DIGEST_VERSION:
                return None  # first delivery, or one made before digests (or by another hash)
            previous = self._path(f"{entity}.previous.bin")
            try:
                if not fetch_digest(self._storage, found["key"], previous):
                    log.warning("snapshot: the digest of %s's last delivery is gone; not compared", entity)
                    return None
                return diff_files(previous, current, found["day"])
            except (ValueError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                log.warning(
                    "snapshot: the digest of %s's last delivery is damaged; not compared",
                    entity,
                    extra={"error": type(exc).__name__},
                )
                return None
            finally:
                previous.unlink(missing_ok=True)

        return all_changes

    def store(self, day: dt.date, result: EntityResult) -> EntityResult:
        """Store a delivered set's digest beside its files, named by its result."""
        if result.status != "delivered":
            return result
        key = digest_key(self._prefix, day, result.entity)
        store_digest(self._storage, key, self._path(f"{result.entity}.bin"))
        info = {"key": key, "day": day.isoformat(), "version": DIGEST_VERSION, "records": result.records}
        return replace(result, digest=info)
