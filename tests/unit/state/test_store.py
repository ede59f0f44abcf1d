"""The local store is a cache that heals: lost or corrupt, it is rebuilt; locked, it is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.state.exceptions import StoreCorruptedError, StoreError
from connector.state.store import PartitionStore


def _filled(path: Path, count: int = 3) -> PartitionStore:
    store = PartitionStore(path)
    rows = {f"Claim/CLM-{i:05d}".encode(): b"x" * 200 + str(i).encode() for i in range(count)}
    rows[b"Family/FAM-1"] = b"f"
    store.write(rows, 42)
    return store


def test_rows_and_offset_survive_a_reopen_and_scan_in_key_order(tmp_path: Path) -> None:
    store = _filled(tmp_path / "p0")
    store.close()
    again = PartitionStore(tmp_path / "p0")
    assert not again.rebuilt
    assert again.next_offset == 42
    assert again.get(b"Claim/CLM-00001") == b"x" * 200 + b"1"
    assert [k for k, _ in again.items(b"Claim/")] == [
        b"Claim/CLM-00000",
        b"Claim/CLM-00001",
        b"Claim/CLM-00002",
    ]
    assert [k for k, _ in again.items()][-1] == b"Family/FAM-1"  # the meta key never shows
    again.close()


def test_an_unreadable_store_is_deleted_and_starts_empty(tmp_path: Path) -> None:
    _filled(tmp_path / "p0").close()
    (tmp_path / "p0" / "CURRENT").write_bytes(b"garbage\n")
    store = PartitionStore(tmp_path / "p0")
    assert store.rebuilt
    assert store.next_offset == 0  # restore starts from the beginning of the state topic
    assert list(store.items()) == []
    store.close()


def test_a_locked_store_is_never_deleted(tmp_path: Path) -> None:
    owner = _filled(tmp_path / "p0")
    with pytest.raises(StoreError, match="locked"):
        PartitionStore(tmp_path / "p0")
    assert owner.get(b"Family/FAM-1") == b"f"
    owner.close()


def test_a_corrupt_data_block_is_a_typed_error_not_a_short_read(tmp_path: Path) -> None:
    store = _filled(tmp_path / "p0", count=20_000)
    store.close()
    [sst] = list((tmp_path / "p0").glob("*.sst"))
    data = bytearray(sst.read_bytes())
    for i in range(4096, len(data) // 2, 512):  # damage data blocks, not the footer
        data[i] ^= 0xFF
    sst.write_bytes(bytes(data))
    store = PartitionStore(tmp_path / "p0")
    with pytest.raises(StoreCorruptedError):
        list(store.items(b"Claim/"))
    store.destroy()
    assert not (tmp_path / "p0").exists()


def test_a_store_whose_offset_block_is_corrupt_starts_again_when_opened(tmp_path: Path) -> None:
    store = _filled(tmp_path / "p0", count=20_000)
    store.close()
    [sst] = list((tmp_path / "p0").glob("*.sst"))
    data = bytearray(sst.read_bytes())
    for i in range(16, 3000, 64):  # the first data block: the offset key sorts first
        data[i] ^= 0xFF
    sst.write_bytes(bytes(data))
    store = PartitionStore(tmp_path / "p0")  # opens, where reading the offset used to raise
    assert store.rebuilt
    assert store.next_offset == 0  # restored from the beginning of the state topic
    assert list(store.items()) == []
    store.close()
