"""Measure the two candidates for the connector's per-partition local state store.

The store is only a cache for the version check (the compacted state topic is the source of truth), so
what decides is speed on the three access patterns that matter, measured here with realistic keys
(``b"<Entity>/<EntityId>"``) and 300-600 byte JSON values, in key order that is random as on the topic:

* ingest: per batch of events, ``get`` every key (half exist), then one buffered write of the batch
  plus the meta key holding the state-topic offset the store reflects;
* restore: bulk-write ``--records`` records with durability relaxed, flushed at the end;
* scan: iterate one entity's prefix in key order.

Run: ``.venv/bin/python bench/store.py [--records 1000000] [--batch 5000]``. The last line printed is
one JSON object with every figure, so runs can be compared or recorded by a script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import rocksdict as rd

META_KEY = b"\x00meta/state-offset"  # sorts before every entity key, so prefix scans never see it
# entity -> (id prefix, share of records in %)
ENTITIES = {"Claim": ("CLM", 35), "Care": ("CAR", 20), "EOP": ("EOP", 20), "FamilyMember": ("MBR", 12)}
ENTITIES |= {"Family": ("FAM", 8), "Provider": ("PRV", 5)}
WORDS = ["paid", "denied", "pending", "review", "dental", "vision", "hospital", "copay", "deductible"]
# WAL: readers never block the writer and a commit is one append; NORMAL: no fsync per commit (a cache);
# 128 MiB page cache and 1 GiB mmap, so gets on a warm store stay in memory.
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-131072", "mmap_size=1073741824")
Pairs = Sequence[tuple[bytes, bytes]]
Getter = Callable[[bytes], bytes | None]


class Store(Protocol):
    """What the connector needs from a store; both candidates are thin adapters to it."""

    @property
    def get(self) -> Getter: ...
    def write(self, pairs: Pairs, bulk: bool) -> None: ...
    def end_bulk(self) -> None: ...
    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...
    def close(self) -> None: ...


class RocksStore:
    """rocksdict in raw mode (bytes stored as-is, bytewise key order), bloom filter for the 50% misses.

    WAL-off writes survive a crash only once flushed; RocksDB promises a consistent prefix after such a
    crash only with atomic_flush, so it is set (free with one column family)."""

    def __init__(self, path: Path, compression: str | None, wal_ingest: bool = True) -> None:
        """compression None: the library defaults (snappy, 32 MiB block cache, no bloom filter)."""
        opts = rd.Options(raw_mode=True)
        opts.create_if_missing(True)
        if compression is not None:
            opts.set_compression_type(getattr(rd.DBCompressionType, compression)())
            opts.set_atomic_flush(True)
            table = rd.BlockBasedOptions()
            table.set_block_cache(rd.Cache(128 << 20))
            table.set_bloom_filter(10, False)  # full filter: a miss reads no data block
            opts.set_block_based_table_factory(table)
        self.db = rd.Rdict(str(path), opts)
        self.get: Getter = self.db.get
        self.no_wal = rd.WriteOptions()
        self.no_wal.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; stub is wrong
        self.ingest_opts = rd.WriteOptions() if wal_ingest else self.no_wal

    def write(self, pairs: Pairs, bulk: bool) -> None:
        """One WriteBatch per call: atomic, and ~5x cheaper than single puts."""
        batch = rd.WriteBatch(raw_mode=True)
        for k, v in pairs:
            batch.put(k, v)
        self.db.write(batch, self.no_wal if bulk else self.ingest_opts)

    def end_bulk(self) -> None:
        """WAL-off writes live only in the memtable: flush makes a restore survive a crash."""
        self.db.flush(wait=True)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Iterate with an upper bound; check status() at the end, as the Python iterators silently stop
        at a corrupt block instead of raising."""
        ro = rd.ReadOptions()
        ro.set_iterate_upper_bound(prefix[:-1] + bytes([prefix[-1] + 1]))
        it = self.db.iter(ro)
        it.seek(prefix)
        while it.valid():
            yield it.key(), it.value()
            it.next()
        it.status()

    def close(self) -> None:
        self.db.close()


class SqliteStore:
    """stdlib sqlite3: one WITHOUT ROWID table, WAL journal, one transaction per batch."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path / "state.db", isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            self.con.execute(f"PRAGMA {pragma}")
        self.con.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        cur = self.con.cursor()  # one cursor: execute() reuses the cached prepared statement

        def get(key: bytes) -> bytes | None:
            row = cur.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        self.get: Getter = get

    def write(self, pairs: Pairs, bulk: bool) -> None:
        """Batches are sorted: B-tree inserts in key order dirty fewer pages (-30% time per write)."""
        if bulk:
            self.con.execute("PRAGMA synchronous=OFF")
        self.con.execute("BEGIN")
        self.con.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", sorted(pairs))
        self.con.execute("COMMIT")

    def end_bulk(self) -> None:
        """Move the WAL into the database file and restore normal durability."""
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        upper = prefix[:-1] + bytes([prefix[-1] + 1])
        yield from self.con.execute("SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k", (prefix, upper))

    def close(self) -> None:
        self.con.close()


def make_records(n: int, seed: int = 7) -> tuple[list[bytes], list[bytes]]:
    """Unique keys in random order, values of 300-600 bytes of JSON with entity-like fields."""
    rng = random.Random(seed)
    kinds = rng.choices(list(ENTITIES), weights=[w for _, w in ENTITIES.values()], k=n)
    ids = rng.sample(range(10**9), n)
    keys = [f"{e}/{ENTITIES[e][0]}-{i:09d}".encode() for e, i in zip(kinds, ids, strict=True)]
    values = []
    for key in keys:
        head = (
            f'{{"EntityId":"{key.split(b"/")[1].decode()}","FamilyId":"FAM-{rng.randrange(10**9):09d}",'
            f'"Amount":{rng.uniform(5, 9000):.2f},"Status":"{rng.choice(WORDS)}","UpdatedAt":'
            f'"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z","Notes":"'
        )
        notes = " ".join(rng.choices(WORDS, k=80))[: rng.randint(300, 600) - len(head) - 2]
        values.append(f'{head}{notes}"}}'.encode())
    return keys, values


def restore(store: Store, keys: list[bytes], values: list[bytes], batch: int) -> float:
    """Bulk-load records in topic order; return seconds including the final flush."""
    start = time.perf_counter()
    for i in range(0, len(keys), batch):
        store.write(list(zip(keys[i : i + batch], values[i : i + batch], strict=True)), bulk=True)
    store.write([(META_KEY, str(len(keys)).encode())], bulk=True)
    store.end_bulk()
    return time.perf_counter() - start


def ingest(store: Store, keys: list[bytes], values: list[bytes], batch: int) -> float:
    """The hot path: get each key (through the batch's own overlay), then one write per batch."""
    get = store.get
    start = time.perf_counter()
    for i in range(0, len(keys), batch):
        pending: dict[bytes, bytes] = {}
        for k, v in zip(keys[i : i + batch], values[i : i + batch], strict=True):
            old = pending.get(k)
            if old is None:
                old = get(k)
            if old is None or old != v:  # the version check stands in here
                pending[k] = v
        pending[META_KEY] = str(i + batch).encode()
        store.write(list(pending.items()), bulk=False)
    return (time.perf_counter() - start) / len(keys) * 1e6


def scan_rate(store: Store, prefix: bytes) -> tuple[float, int]:
    """Records/s for one prefix, and the count (checked against the data)."""
    start, count = time.perf_counter(), 0
    for _k, _v in store.scan(prefix):
        count += 1
    return count / (time.perf_counter() - start), count


def disk_mb(path: Path) -> float:
    """Everything in the store's directory: data, logs, WAL, manifest."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=1_000_000, help="records written by the restore test")
    ap.add_argument("--batch", type=int, default=5000, help="events per batch (ingest, restore)")
    ap.add_argument("--events", type=int, default=200_000, help="events in the ingest test")
    args = ap.parse_args()
    n_pre = min(500_000, args.records // 2)
    keys, values = make_records(max(args.records, n_pre + args.events))
    print(f"{len(keys)} records, mean value {sum(map(len, values)) // len(values)} B")
    rng = random.Random(11)  # half the events hit a pre-populated key, half are new keys
    ev_keys = [
        rng.choice(keys[:n_pre]) if rng.random() < 0.5 else keys[n_pre + j] for j in range(args.events)
    ]
    ev_vals = rng.sample(values, args.events)
    prefix = b"Claim/"
    expected = sum(1 for k in keys[: args.records] if k.startswith(prefix))
    res: dict[str, float | int | str] = {"records": args.records, "batch": args.batch, "events": args.events}
    restore_cfgs: dict[str, Callable[[Path], Store]] = {
        "rocksdict_none": lambda p: RocksStore(p, "none"),
        "rocksdict_defaults": lambda p: RocksStore(p, None),
        "rocksdict_lz4": lambda p: RocksStore(p, "lz4"),
        "rocksdict_zstd": lambda p: RocksStore(p, "zstd"),
        "sqlite": SqliteStore,
    }
    ingest_cfgs: dict[str, Callable[[Path], Store]] = {
        "rocksdict_lz4": lambda p: RocksStore(p, "lz4", wal_ingest=True),
        "rocksdict_lz4_wal_off": lambda p: RocksStore(p, "lz4", wal_ingest=False),
        "rocksdict_defaults": lambda p: RocksStore(p, None, wal_ingest=False),
        "sqlite": SqliteStore,
    }
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        for phase, cfgs in (("restore", restore_cfgs), ("ingest", ingest_cfgs)):
            for name, factory in cfgs.items():
                path = Path(tmp, f"{phase}-{name}")
                path.mkdir()
                os.sync()  # start each phase without the previous one's writeback in flight
                store = factory(path)
                if phase == "ingest":
                    restore(store, keys[:n_pre], values[:n_pre], 20_000)
                    res[f"{name}_ingest_us_per_event"] = round(ingest(store, ev_keys, ev_vals, args.batch), 2)
                else:
                    secs = restore(store, keys[: args.records], values[: args.records], args.batch)
                    res[f"{name}_restore_records_per_s"] = round(args.records / secs)
                    rate, count = scan_rate(store, prefix)
                    assert count == expected, (name, count, expected)
                    res[f"{name}_scan_records_per_s"] = round(rate)
                store.close()
                if phase == "restore":
                    res[f"{name}_size_mb"] = round(disk_mb(path), 1)
    cols = ("restore_records_per_s", "scan_records_per_s", "size_mb", "ingest_us_per_event")
    for col in cols:  # lz4 (WAL on for ingest) is the rocksdict configuration recommended
        res[f"rocksdict_{col}"] = res[f"rocksdict_lz4_{col}"]
    faster_ingest = float(res["rocksdict_ingest_us_per_event"]) <= float(res["sqlite_ingest_us_per_event"])
    res["choice"] = "rocksdict" if faster_ingest else "sqlite"
    print(f"\n{'candidate':<24}{'restore rec/s':>15}{'scan rec/s':>15}{'size MB':>10}{'ingest us/ev':>14}")
    for name in [*restore_cfgs, "rocksdict_lz4_wal_off"]:
        cells = [f"{res[f'{name}_{c}']:,}" if f"{name}_{c}" in res else "-" for c in cols]
        print(f"{name:<24}" + "".join(f"{c:>{w}}" for c, w in zip(cells, (15, 15, 10, 14), strict=True)))
    print(f"choice: {res['choice']} (faster ingest at batch {args.batch}, {n_pre} records pre-populated)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
