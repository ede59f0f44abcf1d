"""rebuild-store's offline parts: which stores exist, and refusing a held store before deleting any."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.state.exceptions import StoreError
from connector.state.rebuild import existing_partitions, rebuild_stores, store_path
from connector.state.store import PartitionStore


def test_existing_partitions_are_the_ingest_store_directories(tmp_path: Path) -> None:
    assert existing_partitions(tmp_path / "absent") == []
    for name in ("p0", "p12", "p3", "px", "tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "p7").write_text("a file, not a store")
    assert existing_partitions(tmp_path) == [0, 3, 12]
    assert store_path(tmp_path, 3) == tmp_path / "p3"


def test_a_store_held_elsewhere_stops_the_rebuild_with_nothing_deleted(tmp_path: Path) -> None:
    free = PartitionStore(store_path(tmp_path, 0))
    free.write({b"Family/FAM-1": b"{}"}, 5)
    free.close()
    held = PartitionStore(store_path(tmp_path, 1))  # a running ingest holds partition 1
    held.write({b"Family/FAM-2": b"{}"}, 9)
    try:
        with pytest.raises(
            StoreError, match=r"partition 1 .* in use by another process.*nothing was deleted"
        ):
            rebuild_stores({}, "state", tmp_path, [0, 1])  # fails before any Kafka call
        assert held.next_offset == 9
    finally:
        held.close()
    again = PartitionStore(store_path(tmp_path, 0))  # the free one was released and kept
    assert (again.next_offset, again.get(b"Family/FAM-1")) == (5, b"{}")
    again.close()
