"""Rebuilding local stores from the state topic, on an operator's request.

The local store is a cache (``store.py``): deleting it loses nothing, and the ingest service
rebuilds a missing or corrupt one itself. The ``rebuild-store`` command does the same ahead of
time, e.g. after a disk problem or to warm a new volume, and must never race a running ingest:
every store is opened (which takes RocksDB's lock) before any is deleted, so a store held by
another process stops the whole command with nothing deleted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from connector.state.exceptions import StoreError, TopicConfigError
from connector.state.restore import restore_partition
from connector.state.store import PartitionStore
from connector.state.topics import high_watermarks

__all__ = ["OnProgress", "existing_partitions", "rebuild_stores", "state_partitions", "store_path"]

OnProgress = Callable[[int, int, int], None]
"""``(partition, offsets read, offsets to read in total)``."""

_STORE_DIR = re.compile(r"p(\d+)")
_TIMEOUT_S = 30.0


def store_path(state_dir: Path, partition: int) -> Path:
    """The directory of one partition's store, as the ingest service names it."""
    return state_dir / f"p{partition}"


def existing_partitions(state_dir: Path) -> list[int]:
    """Partitions that have a store under ``state_dir`` (``p<N>`` directories), sorted."""
    if not state_dir.is_dir():
        return []
    found = (_STORE_DIR.fullmatch(child.name) for child in state_dir.iterdir() if child.is_dir())
    return sorted(int(m.group(1)) for m in found if m is not None)


def state_partitions(base: dict[str, Any], topic: str) -> int:
    """The state topic's partition count; a missing topic is a config error naming it."""
    admin = AdminClient({k: v for k, v in base.items() if k != "error_cb"})
    meta = admin.list_topics(topic=topic, timeout=_TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise TopicConfigError(f"state topic {topic} does not exist (CARECLOUD_INGEST_STATE_TOPIC)")
    return len(meta.partitions)


def _open_all(state_dir: Path, partitions: Iterable[int]) -> dict[int, PartitionStore]:
    """Open (and so lock) every store first; one held elsewhere aborts before anything is deleted."""
    stores: dict[int, PartitionStore] = {}
    try:
        for p in partitions:
            try:
                stores[p] = PartitionStore(store_path(state_dir, p))
            except StoreError:
                raise StoreError(
                    f"the local store of partition {p} ({store_path(state_dir, p)}) is in use by another "
                    "process, probably a running `carecloud-connector ingest`: stop it first "
                    "(nothing was deleted)"
                ) from None
    except BaseException:
        for store in stores.values():
            store.close()
        raise
    return stores


def rebuild_stores(
    base: dict[str, Any],
    topic: str,
    state_dir: Path,
    partitions: list[int],
    progress: OnProgress | None = None,
) -> dict[int, int]:
    """Delete each partition's store and restore it from the state topic; rows per partition.

    1. open every store (a lock held by another process raises ``StoreError``, nothing deleted);
    2. take the state topic's end offsets, the progress bars' totals;
    3. per partition: delete the store, restore it from offset 0 (``restore_partition``, read
       committed), count its rows, close it.
    """
    stores = _open_all(state_dir, partitions)
    rows: dict[int, int] = {}
    try:
        ends = high_watermarks(base, topic, partitions)
        for p in partitions:
            store = stores.pop(p)
            store.destroy()
            fresh = PartitionStore(store.path)
            try:
                total = ends[p]

                def report(_written: int, remaining: int, partition: int = p, total: int = total) -> None:
                    if progress is not None:
                        progress(partition, max(total - remaining, 0), total)

                restore_partition(base, topic, p, fresh, report)
                rows[p] = sum(1 for _ in fresh.items())
            finally:
                fresh.close()
    finally:
        for store in stores.values():
            store.close()
    return rows
