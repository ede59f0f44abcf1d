"""The re-mapping pass: rows under an older mapping brought to the current one from their
source columns, in the ingest's own transactions (docs/decisions/0025, issue 20).

A mapping rolled out leaves the rows whose source has not changed since under the mapping
that wrote them, and the snapshot holds an entity whose rows span versions
(``connector.snapshot.mapping_check``). A row that keeps its source columns (``"src"``,
``connector.mapping.source_columns``) is re-mapped here by the same ``Mapper`` ingest maps
events with: its values replaced, its version, field versions, delete floor and source columns
kept, and its mapping version made the current one.

The pass runs inside ``run_batch`` (``connector.ingest.transaction``), after the batch's own
events, through the batch's view of each owned partition: each re-mapped row, each dead letter
and the pass's progress record go in the batch's transaction with its offsets, so they commit
with it or not at all, under the partition owner's fencing (its ``transactional.id`` and the
group metadata of the offsets; a pass-only transaction sends the owned partitions' positions).

- **Resumable, exactly once.** The progress is a reserved record of the state partition,
  ``~remap/<partition>``: the versions the sweep brings rows to, the last key it visited, its
  counts, the rows still to visit (counted first, in bounded steps too; copied to the mapping
  registry's ``remap/<partition>`` in the same transaction, where the snapshot's ``wait``
  policy reads it). A killed pass resumes after
  the last committed key; a row re-mapped and committed carries the current version, so even a
  sweep started again skips it. A new mapping (other versions) starts a new sweep from the
  first key.
- **Failures are dead letters.** A row the new mapping refuses (an enum symbol it does not
  map, a value its field cannot take, an EntityId it would move) is dead-lettered by reference
  (no value: the dead letter names the state partition, the reason and the error class; its
  key is the state key) and keeps its older version: the snapshot keeps holding its entity.
- **Rows without source columns** (written before rows kept them, or with
  ``CARECLOUD_INGEST_SOURCE_COLUMNS=false``) cannot be re-mapped: counted as ``no_source``
  and left as they are, until their source re-writes them.
- Delete markers and incomplete rows are not delivered and not counted by the snapshot's
  version check; the pass leaves them.
- **Rows a batch writes under another version than the current one** are re-mapped in the
  same batch (``written``), in *every* owned partition the batch wrote to, whether or not its
  sweep is due: a newer update keeping an unchanged-TOAST value of a row not re-mapped yet
  (``state.resolve``), and a row a primary-key carry filled from a donor under another version
  (``MIXED_MAPPING``, ``state.carry``), which can land in a partition whose sweep is long done,
  or when no mapping was rolled out at all. One that keeps no complete source columns stays
  as it is (``no_source``), and the snapshot holds its entity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Producer

from connector.ingest.barrier import dead_letter_cause
from connector.ingest.batch import BatchView
from connector.ingest.dead_letter import dead_letter_headers
from connector.mapping import Mapper
from connector.mapping.change import EntityChange
from connector.mapping.exceptions import MappingError
from connector.source import Position
from connector.source.events import ChangeEvent, Op
from connector.state.codec import is_complete, row_mapping_version, split_key, state_key
from connector.state.ledger import RESERVED
from connector.state.mapping_registry import remap_key
from connector.state.resolve import StateRow, source_of
from connector.state.store import PartitionStore

__all__ = [
    "OUTCOMES",
    "PROGRESS_PREFIX",
    "Progress",
    "RemapPass",
    "progress_key",
    "remap_change",
    "table_topics",
]

log = logging.getLogger(__name__)

PROGRESS_PREFIX = b"~remap/"
OUTCOMES = ("remapped", "failed", "no_source")
"""What the pass did with a row under an older mapping (``carecloud_remap_rows_total``)."""
_EXAMINED_PER_REMAPPED = 50
"""Rows a step may look at for each row it may re-map: rows under the current mapping cost a
substring search each, so a step over a store of current rows stays short too."""


def progress_key(partition: int) -> bytes:
    """The pass's progress record of one state partition."""
    return PROGRESS_PREFIX + str(partition).encode()


@dataclass
class Progress:
    """One partition's sweep: toward ``versions``, visited up to ``after`` (a state key)."""

    versions: dict[str, str]
    after: bytes | None = None
    done: bool = False
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    left: int = 0
    """Rows under an older mapping the sweep has still to visit."""
    counted_to: bytes | None = None
    """How far the count of ``left`` has got (it runs first, in bounded steps too)."""
    counted: bool = False

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"versions": self.versions, "done": self.done, "counts": self.counts}
        doc["after"] = None if self.after is None else self.after.decode()
        doc["left"] = self.left
        doc["counted"] = self.counted
        doc["counted_to"] = None if self.counted_to is None else self.counted_to.decode()
        return orjson.dumps(doc)

    @classmethod
    def decode(cls, raw: bytes) -> Progress:
        doc = orjson.loads(raw)
        after = doc.get("after")
        counts = {**dict.fromkeys(OUTCOMES, 0), **doc.get("counts", {})}
        start = None if after is None else after.encode()
        counted_to = doc.get("counted_to")
        return cls(
            doc["versions"],
            start,
            doc["done"],
            counts,
            doc["left"],
            None if counted_to is None else counted_to.encode(),
            doc.get("counted", True),
        )

    @property
    def kept(self) -> int:
        """Rows this sweep visited and left under an older mapping (failed, or no source)."""
        return self.counts["failed"] + self.counts["no_source"]


class RemapPass:
    """The pass over the owned partitions; ``step`` runs one transaction's share of it."""

    def __init__(
        self,
        mapper: Mapper,
        unversioned: Mapping[str, str],
        *,
        rows_per_batch: int,
        state_topic: str,
        dlq_topic: str,
        registry_topic: str | None = None,
        on_dead_letter: Callable[[str], None] | None = None,
    ) -> None:
        self.mapper = mapper
        self.versions = dict(mapper.versions)
        """The current version of each mapped entity: what the pass brings rows to."""
        self.unversioned = dict(unversioned)
        """The version of each entity's rows written before rows carried one (the registry)."""
        self.rows_per_batch = rows_per_batch
        self.state_topic, self.dlq_topic = state_topic, dlq_topic
        self.registry_topic = registry_topic
        """Where each step's progress is copied, in the same transaction (None: nowhere), for
        the snapshot's ``wait`` policy, which reads the small registry, not the state."""
        self.on_dead_letter = on_dead_letter
        """Told each dead letter's reason, as an event's is (``carecloud_dlq_events_total``)."""
        self.done: set[int] = set()
        """Owned partitions whose sweep is known finished (their record is not read per batch)."""
        self.left: dict[int, int] = {}
        self.kept: dict[int, int] = {}
        """Per owned partition: rows still to visit, and rows visited and kept older."""
        self.topics = table_topics(mapper)

    # -- what is due ----------------------------------------------------------------------

    def due(self, stores: Mapping[int, PartitionStore]) -> list[int]:
        """The owned partitions whose sweep toward the current versions is not finished."""
        self.done &= stores.keys()
        for gone in set(self.left) - stores.keys():
            self.left.pop(gone, None)
            self.kept.pop(gone, None)
        out = []
        for partition, store in stores.items():
            if partition in self.done:
                continue
            raw = store.get(progress_key(partition))
            progress = None if raw is None else Progress.decode(raw)
            if progress is not None and progress.versions == self.versions and progress.done:
                self.done.add(partition)
                self.left[partition], self.kept[partition] = 0, progress.kept
                continue
            out.append(partition)
        return out

    def forget(self) -> None:
        """A batch aborted: every partition's progress is read again from its store."""
        self.done.clear()

    # -- one step -------------------------------------------------------------------------

    def step(self, partition: int, view: BatchView, producer: Producer) -> dict[str, int]:
        """Re-map up to ``rows_per_batch`` rows of ``partition`` into ``view`` and record the
        progress there (the caller commits it with the batch); returns this step's counts."""
        key = progress_key(partition)
        raw = view.encoded[key] if key in view.encoded else view.store.get(key)
        progress = None if raw is None else Progress.decode(raw)
        if progress is None or progress.versions != self.versions:
            progress = Progress(dict(self.versions))
        counts = dict.fromkeys(OUTCOMES, 0)
        kept: set[tuple[str, str]] = set()
        if not progress.counted:
            self._count_older(progress, view.store)
        if progress.counted and not progress.done:
            progress.done = self._sweep(partition, progress, counts, view, producer, kept)
        for name, n in counts.items():
            progress.counts[name] += n
        for name, n in self.written(partition, view, producer, kept).items():
            counts[name] += n
        value = progress.encode()
        view.encoded[key] = value
        view.emit(key, value)
        if self.registry_topic is not None:
            producer.produce(self.registry_topic, value, remap_key(partition), partition=0)
        self.left[partition], self.kept[partition] = progress.left, progress.kept
        if progress.done:
            self.done.add(partition)
            log.info(
                "re-mapping pass finished in a partition",
                extra={"partition": partition, **{f"rows_{k}": v for k, v in progress.counts.items()}},
            )
        return counts

    def _sweep(
        self,
        partition: int,
        progress: Progress,
        counts: dict[str, int],
        view: BatchView,
        producer: Producer,
        kept: set[tuple[str, str]],
    ) -> bool:
        """Visit rows after ``progress.after`` within the step's budget; True at the end.
        ``kept``: the rows it left under their version (failed, no source), which ``written``
        does not try again in the same step (one dead letter per row and step)."""
        examined, budget = 0, self.rows_per_batch
        for row_key, stored in view.store.items(start=progress.after):
            if row_key[:1] == RESERVED:
                break  # entity keys sort before the reserved ones: the end of the rows
            if row_key == progress.after:
                continue
            current = view.encoded.get(row_key, stored)  # None: this batch deleted the key
            outcome = None if current is None else self._visit(partition, row_key, current, view, producer)
            if outcome is not None:
                counts[outcome] += 1
                if outcome != "remapped":
                    kept.add(split_key(row_key))
                progress.left = max(0, progress.left - 1)
            examined += 1
            progress.after = row_key
            if counts["remapped"] + counts["failed"] >= budget or examined >= budget * _EXAMINED_PER_REMAPPED:
                return False
        progress.left = 0
        return True

    def _count_older(self, progress: Progress, store: PartitionStore) -> None:
        """Count the rows under an older mapping (``progress.left``, what the sweep has to
        visit) from where the count got to, as many as a step may look at; the sweep starts in
        the step that finishes the count, so a store larger than that is counted over several
        transactions rather than in one long one."""
        examined = 0
        for row_key, raw in store.items(start=progress.counted_to):
            if row_key[:1] == RESERVED:
                break
            if row_key == progress.counted_to:
                continue
            if self._older(row_key, raw) is not None:
                progress.left += 1
            progress.counted_to = row_key
            examined += 1
            if examined >= self.rows_per_batch * _EXAMINED_PER_REMAPPED:
                return
        progress.counted = True

    def _older(self, row_key: bytes, raw: bytes) -> str | None:
        """The entity of a live complete row under an older mapping, else None (unparsed)."""
        if not is_complete(raw):
            return None  # a marker or a row still missing a value: neither is delivered
        entity = row_key[: row_key.index(b"/")].decode()
        current = self.versions.get(entity)
        if current is None:
            return None
        version = row_mapping_version(raw) or self.unversioned.get(entity)
        return None if version == current else entity

    def _visit(
        self, partition: int, row_key: bytes, raw: bytes, view: BatchView, producer: Producer
    ) -> str | None:
        if self._older(row_key, raw) is None:
            return None
        entity, entity_id = split_key(row_key)
        row = view.get(entity, entity_id)
        if row is None:
            return None
        return self._remap(partition, entity, entity_id, row, view, producer)

    def written(
        self, partition: int, view: BatchView, producer: Producer, kept: set[tuple[str, str]] | None = None
    ) -> dict[str, int]:
        """Rows this batch wrote in ``partition`` under another version than the current one,
        re-mapped before the batch commits; the outcomes' counts. ``step`` runs it (``kept``:
        rows its sweep just left, not tried twice); the ingest runs it alone in an owned
        partition whose sweep is not due (module docstring).

        The rows the compiled path wrote are not looked at: it maps with the current mapping
        and writes only rows it made whole (``BatchView.apply_fast``). The Python path's rows
        cost a dict look-up each."""
        counts = dict.fromkeys(OUTCOMES, 0)
        if not view.rows:
            return counts
        versions, unversioned = self.versions, self.unversioned
        for (entity, entity_id), row in list(view.rows.items()):
            # None: a row under the version the registry adopted for rows written before
            # versions (a carry from such a row labels so too: ``carry.label_carried``).
            version = row.mapping_version or unversioned.get(entity)
            if version is None or not row.complete or (kept and (entity, entity_id) in kept):
                continue
            current = versions.get(entity)
            if current is not None and version != current:
                counts[self._remap(partition, entity, entity_id, row, view, producer)] += 1
        return counts

    def _remap(
        self, partition: int, entity: str, entity_id: str, row: StateRow, view: BatchView, producer: Producer
    ) -> str:
        """One row to the current mapping: ``remapped``, ``failed`` (a dead letter) or
        ``no_source``."""
        try:
            change = remap_change(self.mapper, self.topics, entity, entity_id, row, partition)
            if change is None:
                return "no_source"
            view.put(
                entity,
                entity_id,
                StateRow(
                    row.version,
                    False,
                    change.values,
                    frozenset(),
                    row.field_versions,
                    row.delete_floor,
                    change.mapping_version,
                    row.source,
                ),
            )
        except BaseException as exc:  # the per-row barrier, as for a source message
            cause = dead_letter_cause(exc)
            if cause is None:
                raise
            self._dead_letter(producer, partition, entity, entity_id, cause.error, cause.reason)
            return "failed"
        return "remapped"

    def _dead_letter(
        self, producer: Producer, partition: int, entity: str, entity_id: str, error: str, reason: str
    ) -> None:
        """A row the new mapping refuses, by reference: where it is and why, never its values."""
        log.warning(
            "a row under an older mapping failed the current one; dead-lettered",
            extra={"entity": entity, "partition": partition, "reason": reason},
        )
        headers = dead_letter_headers(Position(self.state_topic, partition, -1), error, reason)
        headers.append(("carecloud.remap", f"{entity} -> {self.versions[entity]}".encode()))
        producer.produce(self.dlq_topic, None, state_key(entity, entity_id), headers=headers)
        if self.on_dead_letter is not None:
            self.on_dead_letter(reason)


def table_topics(mapper: Mapper) -> dict[str, str]:
    """Per mapped table, the topic whose conversion settings a re-mapping of its rows uses."""
    return {table: _topic_of(mapper, table) for table in mapper.spec.tables}


def remap_change(
    mapper: Mapper, topics: Mapping[str, str], entity: str, entity_id: str, row: StateRow, partition: int
) -> EntityChange | None:
    """``row`` mapped again from its stored source columns by ``mapper`` (the code ingest maps
    events with); None when it keeps no complete source columns. Raises what mapping raises (a
    ``MappingError`` names its reason), and ``entity_id_changed`` for a row the mapping would
    move. Pure: the pass writes the result, the preview (``mapping_diff.state_diff``) only
    compares it, so the two count the same rows the same way."""
    source = source_of(row)
    if source is None or not source.complete:
        return None
    event = ChangeEvent(
        # A table the mapping no longer has: the mapper refuses it (unknown_table).
        Position(topics.get(source.table) or _topic_of(mapper, source.table), partition, -1),
        source.table,
        Op.UPDATE,
        None,
        dict(source.columns),
        row.version,
    )
    change = mapper.map(event)
    if (change.entity, change.entity_id) != (entity, entity_id):
        raise MappingError(
            f"{entity}: the current mapping gives the row another EntityId; re-mapping never "
            "moves a row (README, 'changing the mapping')",
            reason="entity_id_changed",
        )
    return change


def _topic_of(mapper: Mapper, table: str) -> str:
    """The topic whose conversion settings map ``table`` (its name ends with ``.<table>``, as
    ``connector.mapping.versions`` reads it), else the first topic of the mapping."""
    short = table.rsplit(".", 1)[-1]
    topics = sorted(mapper.spec.topics)
    matched = [t for t in topics if t.endswith(f".{short}") or t == short]
    return (matched or topics)[0]
