"""Reading the whole state as of a cut: what the daily snapshot delivers.

``StateReader`` is the reference, in Python over RocksDB, and what runs without the compiled
extension; ``compiled_cut.CompiledStateReader`` gives the same answers about three times
faster (docs/decisions/0013). Both read through ``take_cut`` and ``consume_to_cut``, which with
``Cut`` are in ``cut_offsets`` and importable from here: a cut is one end offset per state
partition, taken as the last stable offset (read committed) at one moment, so every
transaction is either wholly in or wholly out. Reading stops at the cut however much ingest
has written since. Records are spilled into a temporary on-disk store keyed by entity and
EntityId: memory stays flat whatever the state's size, a key seen in two partitions (a
primary-key update that moved a row) resolves by version, and the entities come out sorted by
EntityId, so the same cut always gives the same bytes.

Loading parses nothing in the common case: a key the spill cannot hold yet (its bloom filters
say so) is written as it came. Only a key seen before (an update not yet compacted away, or a
key in two partitions) has both versions parsed and compared. A second pass over the sorted
spill then counts the complete rows, collects the incomplete ones and writes the EntityIds of
complete rows into a key-only presence index: the parent checks look there, in a few MB of
keys that stay in the block cache, instead of in the rows themselves (measured at 1M entities:
about 6 us per lookup in the rows, docs/benchmarks.md).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Container, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Message
from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options, Rdict, WriteBatch, WriteOptions

from connector.snapshot.cut_offsets import BATCH, Cut, consume_to_cut, take_cut
from connector.source.version import predates
from connector.state.codec import (
    complete_values,
    decode_row,
    is_complete,
    is_deleted,
    restore_values,
    row_mapping_version,
    split_key,
    stored_version,
    without_source,
)
from connector.state.ledger import RESERVED
from connector.state.sweep import SweepPlan, sweep_plan, sweep_report

__all__ = ["Cut", "StateReader", "consume_to_cut", "take_cut"]


def _spill_options() -> Options:
    """Bounded memory (two 32 MiB memtables, a 32 MiB block cache) whatever the state's size;
    a bloom filter, because loading looks up every key once and most are not there yet."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.lz4())
    options.set_write_buffer_size(32 << 20)
    options.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(32 << 20))
    table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    return options


def _presence_options() -> Options:
    """Keys only, so small; its own cache, so the scans over the rows do not evict it."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.lz4())
    options.set_write_buffer_size(16 << 20)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(16 << 20))
    table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    return options


class _Presence:
    """The EntityIds of one entity's complete rows, answered by the presence index."""

    __slots__ = ("_get", "_prefix")

    def __init__(self, get: Callable[[bytes], Any], prefix: bytes) -> None:
        self._get, self._prefix = get, prefix

    def __contains__(self, entity_id: object) -> bool:
        return type(entity_id) is str and self._get(self._prefix + entity_id.encode()) is not None


class StateReader:
    """Every live entity as of a cut, streamed from a sorted on-disk spill."""

    def __init__(self, base: dict[str, Any], cut: Cut, work_dir: Path | None = None) -> None:
        self.cut = cut
        self._base = {k: v for k, v in base.items() if k != "error_cb"}
        self._dir = Path(tempfile.mkdtemp(prefix="carecloud-cut-", dir=work_dir))
        self._db = Rdict(str(self._dir / "spill"), _spill_options())
        self._present = Rdict(str(self._dir / "present"), _presence_options())
        self._no_wal = WriteOptions()
        self._no_wal.disable_wal = True  # type: ignore[method-assign,assignment]
        self.records_read = 0
        self._chosen: dict[bytes, bytes] = {}
        self._complete_rows: Counter[str] = Counter()
        self._versions: defaultdict[str, Counter[str | None]] = defaultdict(Counter)
        self._incomplete_ids: dict[str, list[str]] = {}
        self._swept_rows: Counter[str] = Counter()
        self.sweep = SweepPlan()
        """What the cut sweeps (``state.sweep``), known once the records are read."""
        self._reserved: dict[bytes, bytes] = {}
        """Records under the reserved ``~`` keys (the transaction ledger), the later per key."""

    def load(self) -> int:
        """Read every partition up to the cut, then survey it; returns the number of records read.
        The survey sweeps what a completed re-snapshot did not read (``state.sweep``)."""
        self._read()
        self._survey()
        return self.records_read

    def _read(self) -> None:
        consume_to_cut(self._base, self.cut, self._absorb, self._flush)

    def _absorb(self, messages: list[Message], ends: dict[int, int]) -> list[Message]:
        """Take one batch's records before the cut into ``_chosen``; return the errors."""
        errors = []
        chosen, may_exist = self._chosen, self._db.key_may_exist
        for msg in messages:
            if msg.error() is not None:
                errors.append(msg)
                continue
            end = ends.get(msg.partition() or 0)
            if end is None or (msg.offset() or 0) >= end:
                continue
            key, value = msg.key(), msg.value()
            if key is not None and key[:1] == RESERVED:
                # A ledger key lives in one partition: the later record wins, and a tombstone
                # (the purge) removes it, whether compaction has run or not.
                if value is None:
                    self._reserved.pop(key, None)
                else:
                    self.records_read += 1
                    self._reserved[key] = value
                continue
            if key is None or value is None:
                continue  # a tombstone follows its delete marker, which already outranks the rows
            value = without_source(value)  # never read by a snapshot: kept out of the spill
            self.records_read += 1
            if key in chosen or may_exist(key):
                self._keep_newer(key, value, chosen)
            else:
                chosen[key] = value
        return errors

    def _flush(self) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in self._chosen.items():
            batch.put(key, value)
        self._db.write(batch, self._no_wal)
        self._chosen = {}

    def _keep_newer(self, key: bytes, value: bytes, chosen: dict[bytes, bytes]) -> None:
        """Keep the higher version of a key seen before; a later record of one partition wins ties."""
        held = chosen.get(key)
        if held is None:
            held = self._db.get(key)
            if held is None:  # the bloom filter's false positive
                chosen[key] = value
                return
        if stored_version(value) >= stored_version(held):
            chosen[key] = value

    def _survey(self) -> None:
        """One pass in key order: complete-row counts, incomplete EntityIds, the presence index;
        live rows a completed re-snapshot did not read are swept first (``state.sweep``)."""
        self.sweep = sweep_plan(self.reserved())
        batch = WriteBatch(raw_mode=True)
        prefix, entity, complete = b"\xff", "", 0  # keys of one entity are contiguous
        generation: int | None = None
        rows = cast("Iterator[tuple[bytes, bytes]]", self._db.items())  # raw mode: bytes
        for key, value in rows:
            if not key.startswith(prefix):
                self._complete_rows[entity] += complete
                cut = key.index(b"/") + 1
                prefix, entity, complete = key[:cut], key[: cut - 1].decode(), 0
                generation = self.sweep.generations.get(entity)
            if generation is not None and self._swept(value, generation):
                self._swept_rows[entity] += 1
                continue
            if is_complete(value):
                batch.put(key, b"")
                complete += 1
                self._versions[entity][row_mapping_version(value)] += 1
                if complete % BATCH == 0:
                    self._present.write(batch, self._no_wal)
                    batch = WriteBatch(raw_mode=True)
            elif not is_deleted(value):  # live but missing an unchanged-TOAST value
                self._incomplete_ids.setdefault(entity, []).append(key[len(prefix) :].decode())
        self._complete_rows[entity] += complete
        del self._complete_rows[""]
        self._present.write(batch, self._no_wal)

    @staticmethod
    def _swept(value: bytes, generation: int) -> bool:
        """A live row whose version predates a completed snapshot that did not read it."""
        return not is_deleted(value) and predates(stored_version(value), generation)

    def swept(self, entity: str) -> int:
        """Live rows of ``entity`` the sweep took out (``state.sweep``): not counted, not delivered."""
        return self._swept_rows[entity]

    def sweep_json(self) -> dict[str, Any]:
        """The sweep at this cut, for the manifest's checks (counts, never an EntityId)."""
        return sweep_report(self.sweep, {entity: self.swept(entity) for entity in self.sweep.generations})

    def reserved(self) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` of the transaction ledger's records below the cut, in key order
        (``connector.state.ledger``); they are kept out of the entities' spill."""
        return sorted(self._reserved.items())

    def entities(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(EntityId, record) of every live, complete entity of one type, sorted by EntityId."""
        for entity_id, values in self._scan(entity):
            yield entity_id, restore_values(entity, values)

    def documents(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Like ``entities`` but with the values as stored (JSON text for dates, timestamps and
        decimals): for ``Format.writer(entity, stored=True)``, which skips the typing."""
        yield from self._scan(entity)

    def has(self, entity: str, entity_id: str) -> bool:
        """Whether ``entities(entity)`` yields ``entity_id``: a parent check without a set in memory."""
        return entity_id in self.present(entity)

    def present(self, entity: str) -> Container[str]:
        """``entity_id in present(entity)`` is ``has(entity, entity_id)``: the plan asks it once
        per association, so the entity's key prefix is encoded once, not per lookup."""
        return _Presence(self._present.get, entity.encode() + b"/")

    def count(self, entity: str) -> int:
        """How many records ``entities(entity)`` yields (counted while loading)."""
        return self._complete_rows[entity]

    def mapping_versions(self, entity: str) -> Counter[str | None]:
        """How many of the records ``entities(entity)`` yields are under each mapping version
        (None: a row written before rows carried one); counted while loading."""
        return Counter(self._versions.get(entity, {}))

    def references(self, entity: str, fields: Sequence[str]) -> Iterator[tuple[str, ...]]:
        """``(EntityId, value of each field...)`` for every record ``entities(entity)`` yields."""
        for entity_id, values in self._scan(entity):
            yield (entity_id, *(values[name] for name in fields))

    def candidates(self, entity: str, fields: Sequence[str]) -> Iterator[tuple[str, ...]]:
        """The rows that may be orphans, for the plan: here every row (``references``)."""
        return self.references(entity, fields)

    def incomplete(self, entity: str) -> list[str]:
        """EntityIds of live rows still missing an unchanged-TOAST value: held out, reported."""
        return list(self._incomplete_ids.get(entity, ()))  # surveyed in key order: sorted

    def _scan(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(EntityId, values as stored) of the complete rows in EntityId order: cheap for checks."""
        prefix = entity.encode() + b"/"
        skip = len(prefix)
        generation = self.sweep.generations.get(entity)
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(prefix):
                break
            value = it.value()
            values = complete_values(value)
            if values is not None and (generation is None or not self._swept(value, generation)):
                yield key[skip:].decode(), values
            it.next()
        it.status()

    def _rows(self, entity: str) -> Iterator[tuple[str, Any]]:
        prefix = entity.encode() + b"/"
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(prefix):
                break
            yield split_key(key)[1], decode_row(entity, bytes(it.value()))
            it.next()
        it.status()

    def close(self) -> None:
        self._db.close()
        self._present.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
