"""Purging delete markers: the one way state shrinks, and why it cannot resurrect anything.

A delete marker is what makes a late, older update of a deleted entity stale (the merge's rule
2, ``resolve.py``). Dropping it is safe once no event older than the delete can still reach
the marker's partition, and not before. Ingest cannot observe that, so an operator bounds it:
``CARECLOUD_INGEST_MARKER_PURGE_AFTER_S`` (the horizon, off by default) must exceed the longest
time between a delete being appended to a source topic and an older event for the same row
being appended or re-read after it (docs/decisions/0005 lists what that covers).

The rule, as implemented:

1. Ingest stamps every delete marker it writes with the wall-clock time of the write (``"dt"``
   in the encoded row, ``codec.encode_row``). A marker never changes once written — nothing at
   or below its version can alter it, and anything newer replaces it — so the stamp is the
   marker's age; a later stamp only delays its purge. Markers without a stamp (written before
   stamping existed) are never purged.
2. A marker is purgeable when the horizon is set and ``now - dt >= horizon`` (``purgeable``).
3. The partition's owner purges it by producing a tombstone (null value) for its key to the
   same state partition *inside a batch's transaction*, which also carries the batch's
   consumed offsets with the group metadata: a replica that lost the partition in a rebalance
   is fenced and its tombstones are aborted with the rest (KIP-447). A key the same batch
   writes is not purged (its new row wins). Only after the commit is the key deleted from the
   local store, so the store and the state topic agree; a restore applies tombstones as
   deletes, and compaction removes the marker, then the tombstone (``delete.retention.ms``).
4. Every reader already treats a marker as absent, so a tombstone changes nothing a reader can
   see: the snapshot reader skips null values, and a key whose marker and tombstone are both
   gone is simply not there.

A new event for the key after the purge is, by the horizon, newer than the purged delete, so
it is exactly what the marker would have let through (``tests/unit/state/test_purge.py``
proves it, and that purging before the horizon would resurrect).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson

from connector.state.carry import PENDING_PREFIX
from connector.state.ledger import LEDGER_SCAN, RESERVED, expired_records
from connector.state.store import PartitionStore

__all__ = ["MarkerPurge", "expired_markers", "purgeable"]

_DELETED = b'"d":'  # only a marker has it: see codec.is_complete
_PENDING_CARRY = PENDING_PREFIX.encode()
_MAX_PER_BATCH = 10_000
"""Tombstones one transaction carries at most; the rest go in the next batches."""
_MAX_SCAN_INTERVAL_S = 3600.0


def purgeable(data: bytes, now_ms: int, horizon_ms: int) -> bool:
    """Whether an encoded state row is a stamped delete marker at least ``horizon_ms`` old."""
    if horizon_ms <= 0 or _DELETED not in data:
        return False
    doc = orjson.loads(data)
    written = doc.get("dt")
    return bool(doc.get("d")) and isinstance(written, int) and now_ms - written >= horizon_ms


def expired_markers(
    rows: Iterable[tuple[bytes, bytes]], now_ms: int, horizon_ms: int, limit: int = _MAX_PER_BATCH
) -> list[bytes]:
    """Keys of the purgeable markers among ``rows``, at most ``limit`` of them."""
    keys: list[bytes] = []
    for key, value in rows:
        if purgeable(value, now_ms, horizon_ms):
            keys.append(key)
            if len(keys) >= limit:
                break
    return keys


class MarkerPurge:
    """When to scan which partition's store for expired markers.

    A scan reads the whole store (markers are found without parsing live rows), so it runs at
    most every quarter of the horizon and at most hourly per partition, and again at the next
    batch while a scan finds more than one transaction's worth. Ingest asks only for the
    partitions its batch has events from: the tombstones need those offsets for their fencing,
    so an idle partition's markers wait for its next event.
    """

    def __init__(
        self,
        horizon_s: int,
        *,
        ledger_horizon_s: int = 0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.horizon_ms = horizon_s * 1000
        self._interval_s = min(_MAX_SCAN_INTERVAL_S, horizon_s / 4)
        self._clock, self._monotonic = clock, monotonic
        self._next_scan: dict[int, float] = {}
        self.ledger_horizon_ms = ledger_horizon_s * 1000
        """Transaction ledger records (``connector.state.ledger``) go this long after they were
        last written; 0 keeps them. Found by a prefix scan of the ledger's keys only (``~tx``),
        which sort after every entity's: the rows are not read."""
        self._ledger_interval_s = min(_MAX_SCAN_INTERVAL_S, ledger_horizon_s / 4)
        self._next_ledger_scan: dict[int, float] = {}

    @property
    def enabled(self) -> bool:
        return self.horizon_ms > 0

    def now_ms(self) -> int:
        """The stamp for markers written now."""
        return int(self._clock() * 1000)

    def due(self, partition: int, store: PartitionStore) -> list[bytes]:
        """Keys to tombstone in this batch's transaction for ``partition`` (empty if not due):
        expired delete markers, then expired transaction ledger records."""
        return self._markers_due(partition, store) + self._ledger_due(partition, store)

    def _markers_due(self, partition: int, store: PartitionStore) -> list[bytes]:
        if not self.enabled or self._monotonic() < self._next_scan.get(partition, 0.0):
            return []
        keys = [
            k
            for k in expired_markers(store.items(), self.now_ms(), self.horizon_ms)
            if k[:1] != RESERVED or k.startswith(_PENDING_CARRY)  # pending carries age out as markers do
        ]
        more = len(keys) >= _MAX_PER_BATCH
        self._next_scan[partition] = self._monotonic() + (0.0 if more else self._interval_s)
        return keys

    def _ledger_due(self, partition: int, store: PartitionStore) -> list[bytes]:
        if self.ledger_horizon_ms <= 0 or self._monotonic() < self._next_ledger_scan.get(partition, 0.0):
            return []
        keys = expired_records(
            store.items(LEDGER_SCAN), self.now_ms(), self.ledger_horizon_ms, _MAX_PER_BATCH
        )
        more = len(keys) >= _MAX_PER_BATCH
        self._next_ledger_scan[partition] = self._monotonic() + (0.0 if more else self._ledger_interval_s)
        return keys

    def forget(self, partition: int) -> None:
        """The partition left this replica: its next owner scans it afresh."""
        self._next_scan.pop(partition, None)
        self._next_ledger_scan.pop(partition, None)
