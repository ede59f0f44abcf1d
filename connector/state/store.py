"""The local store: one rocksdict database per partition, a cache of the state topic.

It exists only to answer "what version do we hold for this key?" without a network hop.
It records the state-topic offset it reflects in the same write batch as the rows, so after
any crash it is caught up by reading the state topic from that offset; when it is missing
or unreadable it is deleted and rebuilt from the beginning of the state topic.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from connector.state.exceptions import StoreError

__all__ = ["PartitionStore"]

# Sorts before every entity key ("<Entity>/<id>" starts with a capital letter).
_META_OFFSET = b"\x00meta/state-offset"
_OFFSET = struct.Struct(">q")


class PartitionStore:
    """The local cache of one state-topic partition."""

    def __init__(self, path: Path, *, sync: bool = False) -> None:
        self.path = path
        self.rebuilt = False
        try:
            self._db = self._open(path)
        except Exception:  # any failure to open means: rebuild from Kafka
            shutil.rmtree(path, ignore_errors=True)
            self.rebuilt = True
            self._db = self._open(path)
        self._write_options = WriteOptions()
        # The WAL is unnecessary: a lost tail is re-read from the state topic at start-up.
        self._write_options.disable_wal = not sync  # type: ignore[method-assign,assignment]

    @staticmethod
    def _open(path: Path) -> Rdict:
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        return Rdict(str(path), options)

    @property
    def next_offset(self) -> int:
        """The first state-topic offset this store has not seen (0 when new)."""
        raw = self._db.get(_META_OFFSET)
        return 0 if raw is None else int(_OFFSET.unpack(raw)[0])

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def write(self, puts: Mapping[bytes, bytes], next_offset: int) -> None:
        """Apply rows and the new offset atomically (one write batch)."""
        batch = WriteBatch(raw_mode=True)
        for key, value in puts.items():
            batch.put(key, value)
        batch.put(_META_OFFSET, _OFFSET.pack(next_offset))
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:  # rocksdict raises plain exceptions for I/O errors
            raise StoreError(f"local store {self.path} cannot be written ({type(exc).__name__})") from None

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Rows in key order, optionally of one entity (``b"Claim/"``)."""
        it = self._db.iter()
        it.seek(prefix or b"\x01")
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(prefix):
                break
            yield key, bytes(it.value())
            it.next()

    def flush(self) -> None:
        self._db.flush()

    def close(self) -> None:
        self._db.flush()
        self._db.close()

    def destroy(self) -> None:
        """Close and delete, for a rebuild."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
