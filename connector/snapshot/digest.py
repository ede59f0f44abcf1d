"""What changed since the last delivery: a digest of each delivered set, compared with the next.

A digest is one ``(EntityId, content hash)`` per delivered record, in EntityId order
(docs/decisions/0015). It is stored gzipped beside the date's files (``_digest.<Entity>.bin.gz``,
same access control as the report, which already holds EntityIds), named by the manifest, and
read back by the next delivery of the entity to count records added, removed and changed. It
holds no record values: an 8-byte hash cannot be turned back into a family's data.

How a digest is made and compared (the content hash, the file's layout) is in
``digest_format``, whose names are importable from here; this module stores a delivered set's
digest and fetches the last one, for a run (``DeliveryDigests``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import logging
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Protocol

from connector.sinks.formats import GZIP_CONTENT_TYPE
from connector.sinks.keys import day_prefix
from connector.sinks.storage import Storage
from connector.snapshot.digest_format import (
    CHUNK,
    DIGEST_VERSION,
    Changes,
    Documents,
    content_hash,
    diff_files,
    digest_entity,
    write_digest,
)
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

DIGEST_PREFIX = "_digest."
"""Digest objects' names start with it (``digest_key``)."""


def digest_key(prefix: str, day: dt.date, entity: str) -> str:
    """``<prefix>/<YYYY-MM-DD>/_digest.<Entity>.bin.gz``: beside the files, sorted apart from them."""
    return f"{day_prefix(prefix, day)}{DIGEST_PREFIX}{entity}.bin.gz"


def store_digest(storage: Storage, key: str, path: Path) -> None:
    """Upload the digest gzipped (level 1: its hashes do not compress; the EntityIds do)."""

    def chunks(source: BinaryIO) -> Iterator[bytes]:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: the gzip container
        while block := source.read(CHUNK):
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
        shutil.copyfileobj(source, out, CHUNK)
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
