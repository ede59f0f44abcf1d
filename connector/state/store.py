"""The local store: one rocksdict database per partition, a cache of the state topic.

It exists only to answer "what version do we hold for this key?" without a network hop.
It records the state-topic offset it reflects in the same write batch as the rows, so after
any crash it is caught up by reading the state topic from that offset; when it is missing
or unreadable it is deleted and rebuilt from the beginning of the state topic. Settings and
measurements: docs/decisions/0004-local-store.md.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from connector.state.exceptions import StoreCorruptedError, StoreError

__all__ = ["PartitionStore"]

# Sorts before every entity key ("<Entity>/<id>" starts with a capital letter).
_META_OFFSET = b"\x00meta/state-offset"
_OFFSET = struct.Struct(">q")
_LOCKED = ("While lock file", "lock hold by current process")
_NO_SPACE = "No space left on device"  # RocksDB's and the OS's words for ENOSPC, on every call


@cache
def _block_cache() -> Cache:
    """One block cache per process, shared by every partition's store."""
    return Cache(128 << 20)


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.lz4())
    options.set_atomic_flush(True)  # consistent recovery with the WAL off
    table = BlockBasedOptions()
    table.set_block_cache(_block_cache())
    table.set_bloom_filter(10, False)  # the ~50 % misses on ingest read no data block
    options.set_block_based_table_factory(table)
    return options


class PartitionStore:
    """The local cache of one state-topic partition."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rebuilt = False
        try:
            self._db = self._open(path)
        except Exception as exc:
            if any(marker in str(exc) for marker in _LOCKED):
                # Another live instance (or an unclosed handle) owns it: never delete it.
                raise StoreError(f"local store {path} is locked by another process") from None
            if _NO_SPACE in str(exc):  # a rebuild could not be written either: keep it, say why
                raise self._io_error(exc, "opened") from None
            self._db = self._start_again()  # unreadable: rebuild from Kafka
        self._write_options = WriteOptions()
        # WAL off, always (never mixed with WAL-on writes): a lost tail is re-read from Kafka.
        self._write_options.disable_wal = True  # type: ignore[method-assign,assignment]
        try:
            _ = self.next_offset
        except StoreCorruptedError:
            # The block that says how far this store reflects the state topic is damaged: the
            # store opens, but nothing can start from it. Start it again now, before anyone
            # reads it: failing here instead would fail the partition's assignment, and every
            # restart would meet the same damage. (Damage elsewhere is found by the read that
            # meets it, and the ingest rebuilds the store then.)
            self._db.close()
            self._db = self._start_again()

    @staticmethod
    def _open(path: Path) -> Rdict:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Rdict(str(path), _options())

    def _start_again(self) -> Rdict:
        """An empty store in place of an unusable one; the restore fills it from the state topic."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.rebuilt = True
        return self._open(self.path)

    @property
    def next_offset(self) -> int:
        """The first state-topic offset this store has not seen (0 when new)."""
        raw = self.get(_META_OFFSET)
        return 0 if raw is None else int(_OFFSET.unpack(raw)[0])

    def get(self, key: bytes) -> bytes | None:
        """The stored bytes; corruption found here (block checksum) is a typed error."""
        try:
            value = self._db.get(key)
        except Exception as exc:
            raise self._corrupted(exc) from None
        return None if value is None else bytes(value)

    def write(self, puts: Mapping[bytes, bytes | None], next_offset: int) -> None:
        """Apply rows and the new offset atomically (one write batch); ``None`` deletes the key,
        as a tombstone in the state topic does (a purged delete marker)."""
        batch = WriteBatch(raw_mode=True)
        for key, value in puts.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.commit(batch, next_offset)

    def commit(self, batch: WriteBatch, next_offset: int) -> None:
        """Apply a write batch built by the caller (in order: a later put of a key wins) and
        the new offset atomically: the restore fills one per consumed batch, without a dict."""
        batch.put(_META_OFFSET, _OFFSET.pack(next_offset))
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:  # rocksdict raises plain exceptions for I/O errors
            raise self._io_error(exc, "written") from None

    def items(self, prefix: bytes = b"", *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Rows in key order, optionally of one entity (``b"Claim/"``), from ``start`` on (that
        key included) when given (the re-mapping pass resumes there).

        A corrupt block ends rocksdict's iteration silently; ``status()`` turns that into
        ``StoreCorruptedError`` instead of a short result.
        """
        options = ReadOptions()
        if prefix:
            options.set_iterate_upper_bound(prefix[:-1] + bytes([prefix[-1] + 1]))
        it = self._db.iter(options)
        it.seek(max(prefix or b"\x01", start or b""))
        while it.valid():
            yield bytes(it.key()), bytes(it.value())
            it.next()
        try:
            it.status()
        except Exception as exc:
            error = self._corrupted(exc)
        else:
            return
        # Drop the iterator before raising: the traceback keeps this frame alive, and an open
        # iterator keeps the database (and its lock) open after ``destroy``, so the rebuilt
        # store at the same path could not be opened ("locked").
        del it
        raise error from None

    def _io_error(self, exc: Exception, doing: str) -> StoreError:
        """A typed error naming the cause an operator can act on; RocksDB's text is not quoted
        (it names files, which is harmless, but nothing here should echo a library's words)."""
        if _NO_SPACE in str(exc):
            return StoreError(
                f"local store {self.path} cannot be {doing}: its volume is full (no space left on "
                "device); free or grow the volume and start again: the store catches up from the "
                "state topic, so nothing committed is lost"
            )
        return StoreError(f"local store {self.path} cannot be {doing} ({type(exc).__name__})")

    def _corrupted(self, exc: Exception) -> StoreError:
        if "Corruption" in str(exc):
            return StoreCorruptedError(f"local store {self.path} is corrupt; it will be rebuilt from Kafka")
        return StoreError(f"local store {self.path} cannot be read ({type(exc).__name__})")

    def flush(self) -> None:
        self._db.flush()

    def close(self) -> None:
        """Flush and close. A failed flush (a full volume) is a typed error; the handle is
        released either way, and the unflushed rows are re-read from the state topic."""
        error: StoreError | None = None
        try:
            self._db.flush()
        except Exception as exc:
            error = self._io_error(exc, "flushed")
        try:
            self._db.close()
        except Exception as exc:
            error = error or self._io_error(exc, "closed")
        if error is not None:
            raise error

    def destroy(self) -> None:
        """Close and delete, for a rebuild."""
        try:
            self._db.close()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
