"""An entity's snapshot file, uncompressed: the state read at the cut, written by a sink's format.

The cut reader hands over the entity's rows (``documents``: the stored values) or, with the
compiled spill and CSV, prepared parts (``csv_parts``: lines the extension wrote and the rows
it declined); the format's writer makes the file of them. The sinks never see the store.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from connector.sinks.compiled_csv import csv_columns
from connector.sinks.formats import CHUNK_BYTES, CSV, Format
from connector.snapshot.compiled_cut import CompiledStateReader
from connector.snapshot.cut import StateReader

__all__ = ["compiled_csv", "entity_file"]


def entity_file(
    fmt: Format, entity: str, held_out: Collection[str], state: StateReader | CompiledStateReader
) -> Iterator[bytes]:
    """The entity's file in ``fmt`` without ``held_out``, in chunks."""
    if fmt is CSV and isinstance(state, CompiledStateReader):
        return compiled_csv(state, entity, held_out)
    stored = (values for entity_id, values in state.documents(entity) if entity_id not in held_out)
    return fmt.writer(entity, stored=True).write_rows(stored)


def compiled_csv(reader: CompiledStateReader, entity: str, held_out: Collection[str]) -> Iterator[bytes]:
    """The entity's whole CSV file (header first) in chunks, as ``CSV.writer(entity,
    stored=True).write_rows`` writes it from the same rows without ``held_out``."""
    parts = reader.csv_parts(entity, csv_columns(entity), held_out, CHUNK_BYTES)
    return CSV.writer(entity, stored=True).write_prepared(parts)
