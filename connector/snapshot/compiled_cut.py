"""The cut's state read by the compiled spill (``carecloud_fastpath.CutSpill``): a sort, not a store.

``StateReader`` (``cut.py``) is the reference and the fallback without the extension. It
costs about 19 µs per record at 1M entities, in three sequential Python phases: loading into
RocksDB, one point lookup per association for the parent checks, and per-field formatting
(docs/benchmarks.md). This reader answers the same questions from an external merge sort
(docs/decisions/0013): batches of consumed messages go to the extension whole, which sorts
them into run files on a second thread while the next batch is consumed; one merge writes a
file of complete rows per entity in EntityId order; the parent checks are a merge join over
(parent id, child id) pairs sorted the same way, which yields a superset of the orphans
(``candidates``) for ``connector.snapshot.checks.orphans`` to decide exactly; and the CSV lines
are written by the extension from the stored bytes (``csv_parts``: prepared parts, which
``connector.snapshot.files`` hands to the sink's CSV writer).

Memory stays flat: two sort buffers of ``budget`` bytes, the merge's read buffers, and every
64th EntityId per entity (the index behind ``present``). The work directory holds about the
state's size twice at the merge, as RocksDB's spill did with its compactions.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Collection, Container, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Message

from connector import _fastpath
from connector.model import ENTITY_NAMES, REFERENCES
from connector.snapshot.cut import Cut, consume_to_cut
from connector.state.codec import restore_values, stored_values
from connector.state.sweep import SweepPlan, sweep_plan, sweep_report

__all__ = ["SORT_BUDGET", "CompiledStateReader", "Spill"]

SORT_BUDGET = 64 << 20
"""Bytes of records sorted in memory per run file (two such buffers are alive at a time)."""


_CONSUME_BATCH = 1000
"""Messages per ``consume()``: 0.8-1.0 µs per record here against 1.6 at 10,000 (measured)."""


class Spill(Protocol):
    """The extension's ``CutSpill``."""

    records_read: int

    def absorb(self, messages: list[Message], ends: dict[int, int]) -> list[Message]: ...

    def finish(self, order: list[str], links: list[list[tuple[str, int]]]) -> None: ...

    def count(self, entity: str) -> int: ...

    def mapping_versions(self, entity: str) -> dict[str | None, int]: ...

    def reserved(self) -> list[tuple[bytes, bytes]]: ...

    def sweep(self, generations: dict[str, int]) -> None: ...

    def swept(self, entity: str) -> int: ...

    def incomplete(self, entity: str) -> list[str]: ...

    def contains(self, entity: str, entity_id: str) -> bool: ...

    def rows(self, entity: str, candidates: int | None = None) -> Iterator[tuple[str, bytes]]: ...

    def csv(
        self, entity: str, columns: str, held_out: set[str], chunk: int
    ) -> Iterator[bytes | tuple[int, bytes]]: ...


class _Present:
    __slots__ = ("_contains", "_entity")

    def __init__(self, spill: Spill, entity: str) -> None:
        self._contains, self._entity = spill.contains, entity

    def __contains__(self, entity_id: object) -> bool:
        return type(entity_id) is str and self._contains(self._entity, entity_id)


class CompiledStateReader:
    """Every live entity as of a cut, from the compiled spill; ``StateReader``'s answers."""

    def __init__(
        self, base: dict[str, Any], cut: Cut, work_dir: Path | None = None, *, budget: int = SORT_BUDGET
    ) -> None:
        spill = _fastpath.load().CutSpill  # the caller checked it is there
        self.cut = cut
        self._base = {k: v for k, v in base.items() if k != "error_cb"}
        self._dir = Path(tempfile.mkdtemp(prefix="carecloud-cut-", dir=work_dir))
        self.spill: Spill = spill(str(self._dir), budget)
        self.sweep = SweepPlan()
        """What the cut sweeps (``state.sweep``), known once the records are read."""

    @property
    def records_read(self) -> int:
        return self.spill.records_read

    def load(self) -> int:
        """Read every partition up to the cut, sort and survey it; returns the records read."""
        consume_to_cut(self._base, self.cut, self.spill.absorb, batch=_CONSUME_BATCH)
        self.finish()
        return self.spill.records_read

    def finish(self) -> None:
        """Merge what was absorbed and survey it (``load`` does it after the last batch), sweeping
        what a completed re-snapshot did not read (``state.sweep``)."""
        self.sweep = sweep_plan(self.spill.reserved())
        self.spill.sweep(self.sweep.generations)
        rank = {entity: i for i, entity in enumerate(ENTITY_NAMES)}
        links = [[(ref.field, rank[ref.parent]) for ref in REFERENCES[entity]] for entity in ENTITY_NAMES]
        self.spill.finish(list(ENTITY_NAMES), links)

    def entities(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(EntityId, record) of every live, complete entity of one type, sorted by EntityId."""
        for entity_id, values in self.documents(entity):
            yield entity_id, restore_values(entity, values)

    def documents(self, entity: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Like ``entities`` with the values as stored (``StateReader.documents``)."""
        for entity_id, row in self.spill.rows(entity):
            yield entity_id, stored_values(row)

    def present(self, entity: str) -> Container[str]:
        """``entity_id in present(entity)``: a complete row of that EntityId is in the cut."""
        return _Present(self.spill, entity)

    def count(self, entity: str) -> int:
        return self.spill.count(entity)

    def mapping_versions(self, entity: str) -> Counter[str | None]:
        """How many of the entity's complete rows are under each mapping version (None: a row
        written before rows carried one), counted by the extension's survey
        (``StateReader.mapping_versions``)."""
        return Counter(self.spill.mapping_versions(entity))

    def swept(self, entity: str) -> int:
        return self.spill.swept(entity)

    def sweep_json(self) -> dict[str, Any]:
        """The sweep at this cut (``StateReader.sweep_json``)."""
        return sweep_report(self.sweep, {entity: self.swept(entity) for entity in self.sweep.generations})

    def reserved(self) -> list[tuple[bytes, bytes]]:
        """The transaction ledger's records below the cut (``StateReader.reserved``)."""
        return self.spill.reserved()

    def incomplete(self, entity: str) -> list[str]:
        return self.spill.incomplete(entity)

    def csv_parts(
        self, entity: str, columns: str, held_out: Collection[str], chunk: int
    ) -> Iterator[bytes | tuple[int, dict[str, Any]]]:
        """The entity's CSV lines without ``held_out``, as prepared parts for
        ``RowWriter.write_prepared``: chunks of lines the extension wrote from the stored bytes
        (``columns``: ``connector.sinks.compiled_csv.csv_columns``), and ``(record number,
        stored values)`` for a row it declined, which the Python writer encodes with its rules
        and its error."""
        parts = self.spill.csv(entity, columns, set(held_out), chunk)
        return (part if isinstance(part, bytes) else (part[0], stored_values(part[1])) for part in parts)

    def candidates(self, entity: str, fields: Sequence[str]) -> Iterator[tuple[str, ...]]:
        """``(EntityId, value of each field...)`` of the rows that may be orphans only: an
        association that is not a string, or names a parent that is not a complete row or is
        a candidate itself. A row outside this set has every parent delivered, so the orphan
        check needs no other."""
        for entity_id, row in self.spill.rows(entity, ENTITY_NAMES.index(entity)):
            values = stored_values(row)
            yield (entity_id, *(values[name] for name in fields))

    def close(self) -> None:
        del self.spill  # the extension's files are closed with it
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> CompiledStateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
