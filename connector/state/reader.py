"""Reading the whole state as of a cut: what the daily snapshot delivers.

A cut is one end offset per state partition, taken as the last stable offset (read
committed) at one moment, so every transaction is either wholly in or wholly out. Reading
stops at the cut however much ingest has written since. Records are spilled into a temporary
on-disk store keyed by entity and EntityId: memory stays flat whatever the state's size, a key
seen in two partitions (a primary-key update that moved a row) resolves by version, and the
entities come out sorted by EntityId, so the same cut always gives the same bytes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options, Rdict, WriteBatch, WriteOptions

from connector.errors import TransientError
from connector.state.codec import decode_row, is_complete, restore_values, split_key, state_key

__all__ = ["Cut", "StateReader", "take_cut"]

_TIMEOUT_S = 30.0
_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Cut:
    """One exclusive end offset per state partition; recorded in the snapshot manifest."""

    topic: str
    end_offsets: dict[int, int]
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
            "taken_at": self.taken_at.isoformat(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Cut:
        """The cut a manifest or a date's run record holds (the inverse of ``as_json``)."""
        ends = {int(p): int(o) for p, o in raw["end_offsets"].items()}
        return cls(raw["topic"], ends, datetime.fromisoformat(raw["taken_at"]))


def take_cut(base: dict[str, Any], topic: str) -> Cut:
    """The last stable offset of every partition of the state topic, now."""
    admin = AdminClient({k: v for k, v in base.items() if k != "error_cb"})
    meta = admin.list_topics(topic=topic, timeout=_TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None:
        raise TransientError(f"state topic {topic} is not available")
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in meta.partitions}  # type: ignore[no-untyped-call]
    futures = admin.list_offsets(
        request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=_TIMEOUT_S
    )
    try:
        ends = {tp.partition: future.result(_TIMEOUT_S).offset for tp, future in futures.items()}
    except KafkaException as exc:
        raise TransientError(f"cannot read the end offsets of {topic}") from exc
    return Cut(topic, ends)


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


_Held = tuple[list[int], bytes, dict[str, Any]]
"""A chosen row: its version, its bytes, its parsed document."""


def _complete(doc: dict[str, Any]) -> bool:
    """A live row with every field known (``StateRow.complete`` on the encoded document)."""
    return not doc.get("d") and not doc.get("m")


class StateReader:
    """Every live entity as of a cut, streamed from a sorted on-disk spill."""

    def __init__(self, base: dict[str, Any], cut: Cut, work_dir: Path | None = None) -> None:
        self.cut = cut
        self._base = {k: v for k, v in base.items() if k != "error_cb"}
        self._dir = Path(tempfile.mkdtemp(prefix="carecloud-cut-", dir=work_dir))
        self._db = Rdict(str(self._dir / "spill"), _spill_options())
        self._no_wal = WriteOptions()
        self._no_wal.disable_wal = True  # type: ignore[method-assign,assignment]
        self.records_read = 0
        self._complete_rows: Counter[str] = Counter()
        self._incomplete_ids: dict[str, set[str]] = {}

    def load(self) -> int:
        """Read every partition up to the cut; returns the number of records read."""
        pending = {p: end for p, end in self.cut.end_offsets.items() if end > 0}
        if not pending:
            return 0
        consumer = Consumer(
            {
                **self._base,
                "group.id": f"carecloud-snapshot-{self.cut.topic}",  # assign() only; never commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.queue.backoff.ms": 10,
                "queued.max.messages.kbytes": 16384,  # prefetch bounded to 16 MiB, not librdkafka's 64
            }
        )
        try:
            consumer.assign([TopicPartition(self.cut.topic, p, 0) for p in pending])
            while pending:
                batch = WriteBatch(raw_mode=True)
                chosen: dict[bytes, _Held] = {}
                done: set[int] = set()
                for msg in consumer.consume(_BATCH, 1.0):
                    p, offset = msg.partition() or 0, msg.offset() or 0
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise TransientError(f"reading {self.cut.topic}: {err.name()}")
                        if p in pending and offset >= pending[p]:  # control records end the range
                            done.add(p)
                        continue
                    if p not in pending or offset >= pending[p]:
                        continue
                    key, value = msg.key(), msg.value()
                    if key is not None and value is not None:
                        self._keep_newer(key, value, chosen)
                for key, (_, value, _) in chosen.items():
                    batch.put(key, value)
                self._db.write(batch, self._no_wal)
                for tp in consumer.position([TopicPartition(self.cut.topic, p) for p in list(pending)]):
                    if tp.offset >= pending[tp.partition] or tp.partition in done:
                        consumer.pause([tp])
                        del pending[tp.partition]
        finally:
            consumer.close()
        return self.records_read

    def _keep_newer(self, key: bytes, value: bytes, chosen: dict[bytes, _Held]) -> None:
        """Keep the higher version of a key; a later record of one partition wins ties.

        The counts of complete rows and the incomplete EntityIds are kept up to date here, as
        rows are chosen, so the snapshot's checks need no extra pass over the state.
        """
        self.records_read += 1
        doc = orjson.loads(value)
        version = doc["v"]  # the Version's fields as a list: compares as the Version would
        held = chosen.get(key)
        if held is None:
            raw = self._db.get(key)
            if raw is not None:
                old = orjson.loads(raw)
                held = (old["v"], raw, old)
        if held is None or version >= held[0]:
            entity, entity_id = split_key(key)
            if held is not None:
                self._account(entity, entity_id, held[2], -1)
            self._account(entity, entity_id, doc, 1)
            chosen[key] = (version, value, doc)

    def _account(self, entity: str, entity_id: str, doc: dict[str, Any], sign: int) -> None:
        if _complete(doc):
            self._complete_rows[entity] += sign
        elif not doc.get("d"):
            if sign > 0:
                self._incomplete_ids.setdefault(entity, set()).add(entity_id)
            else:
                self._incomplete_ids.get(entity, set()).discard(entity_id)

    def entities(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(EntityId, record) of every live, complete entity of one type, sorted by EntityId."""
        for entity_id, doc in self._scan(entity):
            if _complete(doc):
                yield entity_id, restore_values(entity, doc["r"])

    def documents(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Like ``entities`` but with the values as stored (JSON text for dates, timestamps and
        decimals): for ``Format.writer(entity, stored=True)``, which skips the typing."""
        for entity_id, doc in self._scan(entity):
            if _complete(doc):
                yield entity_id, doc["r"]

    def has(self, entity: str, entity_id: str) -> bool:
        """Whether ``entities(entity)`` yields ``entity_id``: a parent check without a set in memory."""
        raw = self._db.get(state_key(entity, entity_id))
        return raw is not None and is_complete(raw)

    def count(self, entity: str) -> int:
        """How many records ``entities(entity)`` yields (counted while loading)."""
        return self._complete_rows[entity]

    def references(self, entity: str, fields: Sequence[str]) -> Iterator[tuple[str, ...]]:
        """``(EntityId, value of each field...)`` for every record ``entities(entity)`` yields."""
        for entity_id, doc in self._scan(entity):
            if _complete(doc):
                values = doc["r"]
                yield (entity_id, *(values[name] for name in fields))

    def incomplete(self, entity: str) -> list[str]:
        """EntityIds of live rows still missing an unchanged-TOAST value: held out, reported."""
        return sorted(self._incomplete_ids.get(entity, ()))

    def _scan(self, entity: str) -> Iterator[tuple[str, Any]]:
        """(EntityId, the row's JSON document, untyped) in EntityId order: cheap for checks."""
        prefix = entity.encode() + b"/"
        skip = len(prefix)
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(prefix):
                break
            yield key[skip:].decode(), orjson.loads(it.value())
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
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
