"""The sweep of rows a re-snapshot did not read: its internal records and its decision.

When Debezium's replication slot is lost it takes a new initial snapshot at a new LSN
(``L_snap``): every row that still exists is read again, and a row deleted during the gap is
simply not read. The version order (``connector.source.version``) makes the new reads outrank
everything streamed before them, so changed rows converge on their own; deleted rows need this
mark and sweep (docs/decisions/0019):

- *mark*: every read of the snapshot carries phase ``2 * L_snap``. When ingest applies the
  snapshot's ``last`` read (one record, in whichever partition the last row hashed to) it
  writes, in that batch's Kafka transaction, a completion record ``~snapshot/<source>/<partition>``
  (the newest generation of a source wins): the
  generation ``L_snap``, the end offset of every partition of the source's topics at that
  moment (every read of the snapshot is below them) and the entities the source alone feeds;
- *positions*: every batch writes ``~pos/<topic>/<partition>`` (the next source offset it
  consumed) to the partition's state partition, in the same transaction as its rows, so a cut
  knows exactly how far ingest had read each source partition when it wrote what the cut holds;
- *sweep*: a cut that holds a completion, and positions at or past all of its end offsets,
  treats a row of those entities whose version predates the generation (``predates``) as
  deleted. When a position is behind, nothing of that source is swept (its reads may still be
  on the way) and the cut reports it as waiting.

Keys start with ``~``, which no entity key (``<Entity>/<EntityId>``) does: both cut readers
keep them out of the entities (``reserved``), and the purge never tombstones them (they carry
no write stamp ``t``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "POSITION_PREFIX",
    "SNAPSHOT_PREFIX",
    "Completion",
    "SweepPlan",
    "completion_key",
    "decode_completion",
    "encode_completion",
    "encode_position",
    "position_key",
    "sweep_plan",
    "sweep_report",
]

SNAPSHOT_PREFIX = b"~snapshot/"
POSITION_PREFIX = b"~pos/"


@dataclass(frozen=True, slots=True)
class Completion:
    """A completed initial snapshot (or re-snapshot) of one source, as ingest recorded it."""

    source: str
    """Debezium's logical name (``source.name``, the topic prefix)."""
    generation: int
    """The snapshot's LSN: rows whose version predates it and that it did not read are gone."""
    ends: dict[str, dict[int, int]]
    """``{topic: {partition: end offset}}`` of the source's topics when ``last`` was applied."""
    entities: tuple[str, ...]
    """The entities fed by this source's topics only (another source's rows are never swept)."""


def completion_key(source: str, partition: int) -> bytes:
    """One key per (source, state partition): the ``last`` read lands in any partition, and a
    key written to two partitions would leave "the later record" to the order the cut reads
    them in. The cut takes the highest generation of a source's records."""
    return SNAPSHOT_PREFIX + f"{source}/{partition}".encode()


def encode_completion(completion: Completion) -> bytes:
    return orjson.dumps(
        {
            "g": completion.generation,
            "ends": {
                t: {str(p): o for p, o in sorted(ps.items())} for t, ps in sorted(completion.ends.items())
            },
            "entities": list(completion.entities),
        }
    )


def decode_completion(key: bytes, value: bytes) -> Completion:
    doc = orjson.loads(value)
    ends = {str(t): {int(p): int(o) for p, o in ps.items()} for t, ps in doc["ends"].items()}
    source = key[len(SNAPSHOT_PREFIX) :].decode().rpartition("/")[0]
    return Completion(source, int(doc["g"]), ends, tuple(doc["entities"]))


def position_key(topic: str, partition: int) -> bytes:
    return POSITION_PREFIX + f"{topic}/{partition}".encode()


def encode_position(offset: int) -> bytes:
    """The next offset of the source partition that ingest will consume."""
    return b'{"o":%d}' % offset


@dataclass(frozen=True, slots=True)
class SweepPlan:
    """What the cut sweeps: per entity, the generation its rows must not predate."""

    generations: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    """Sources with a completion whose end offsets ingest had not reached at the cut: source ->
    how many source partitions were behind. Nothing of theirs is swept until they catch up."""

    def as_json(self) -> dict[str, object]:
        return {
            "generations": dict(sorted(self.generations.items())),
            "waiting": dict(sorted(self.waiting.items())),
        }


def sweep_report(plan: SweepPlan, swept: Mapping[str, int]) -> dict[str, Any]:
    """The sweep as the manifest's checks hold it: generations, sources waiting, rows swept."""
    return {**plan.as_json(), "swept": {entity: n for entity, n in sorted(swept.items()) if n}}


def sweep_plan(reserved: Iterable[tuple[bytes, bytes]]) -> SweepPlan:
    """The sweep a cut's reserved records (``(key, value)``, the later per key) call for."""
    newest: dict[str, Completion] = {}
    positions: dict[tuple[str, int], int] = {}
    for key, value in reserved:
        if key.startswith(SNAPSHOT_PREFIX):
            found = decode_completion(key, value)
            held = newest.get(found.source)
            if held is None or found.generation > held.generation:
                newest[found.source] = found
        elif key.startswith(POSITION_PREFIX):
            topic, _, partition = key[len(POSITION_PREFIX) :].decode().rpartition("/")
            positions[(topic, int(partition))] = int(orjson.loads(value)["o"])
    generations: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for completion in newest.values():
        behind = _behind(completion.ends, positions)
        if behind:
            waiting[completion.source] = behind
            continue
        for entity in completion.entities:
            generations[entity] = max(generations.get(entity, 0), completion.generation)
    return SweepPlan(generations, waiting)


def _behind(ends: Mapping[str, Mapping[int, int]], positions: Mapping[tuple[str, int], int]) -> int:
    """Source partitions with reads of the snapshot (end above 0) not yet consumed to their end."""
    return sum(
        1
        for topic, partitions in ends.items()
        for partition, end in partitions.items()
        if end > 0 and positions.get((topic, partition), 0) < end
    )
