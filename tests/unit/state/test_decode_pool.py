"""The decode workers give the ingest loop exactly what decoding in the loop gives it.

Uses the example capture (every entity, TOAST, deletes, primary-key updates, tombstones and
malformed events) so each kind of result crosses the pipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.errors import TerminalError
from connector.mapping import Mapper, load_mapping
from connector.mapping.change import EntityChange
from connector.replay import read_events
from connector.source import Position
from connector.source.exceptions import SchemaRegistryUnavailable
from connector.state import MemoryStore, apply_change
from connector.state.codec import encode_row
from connector.state.decode_pool import (
    Decoded,
    DecodePool,
    Item,
    decode_items,
    from_wire,
    make_decoders,
    to_wire,
    transient_error,
)

ROOT = Path(__file__).parents[3]
SPEC = load_mapping(ROOT / "examples" / "mapping.yaml")
OPTIONS = {
    name: {"unavailable_placeholder": SPEC.topic(name).unavailable_placeholder} for name in SPEC.topics
}


def example_items(copies: int = 1) -> list[Item]:
    """The example capture, ``copies`` times over with offsets kept distinct."""
    base = list(read_events(ROOT / "examples" / "events.jsonl"))
    out: list[Item] = []
    for copy in range(copies):
        for m in base:
            p = m.position
            out.append((p.topic, p.partition, p.offset + copy * 10_000, m.key, m.value, m.headers))
    return out


def in_line(items: list[Item]) -> list[Decoded]:
    return decode_items(make_decoders(SPEC, OPTIONS), Mapper(SPEC), items)


def state_bytes(items: list[Item], results: list[Decoded]) -> dict[tuple[int, str, str], bytes]:
    """Every row's stored bytes after applying the changes partition by partition, as ingest does."""
    stores: dict[int, MemoryStore] = {}
    for item, result in zip(items, results, strict=True):
        if isinstance(result, EntityChange):
            apply_change(stores.setdefault(item[1], MemoryStore()), result)
    return {(p, *key): encode_row(row) for p, store in stores.items() for key, row in store.items()}


def test_the_example_has_every_kind_of_result() -> None:
    results = in_line(example_items())
    assert any(r is None for r in results), "a tombstone"
    assert any(type(r) is tuple and r[0] == "bad" for r in results), "bad input"
    changes = [r for r in results if isinstance(r, EntityChange)]
    assert {c.entity for c in changes} == {"Family", "FamilyMember", "Provider", "Care", "Claim", "EOP"}
    assert any(c.missing for c in changes), "an unchanged-TOAST partial update"
    assert any(c.deleted for c in changes)
    assert any(c.previous_entity_id for c in changes), "a primary-key update"


def test_changes_sent_as_json_become_the_same_state_bytes_as_typed_changes() -> None:
    items = example_items()
    typed = in_line(items)
    wired = from_wire(to_wire(typed))
    assert [r for r in wired if not isinstance(r, EntityChange)] == [
        r for r in typed if not isinstance(r, EntityChange)
    ]
    rows = state_bytes(items, typed)
    assert rows, "the example leaves rows"
    assert state_bytes(items, wired) == rows


def expected(items: list[Item]) -> list[Any]:
    """In-line results in their wire form; ``position`` is not compared (ingest has it)."""
    return [
        dataclasses.astuple(r) if isinstance(r, EntityChange) else r
        for r in from_wire(to_wire(in_line(items)))
    ]


def comparable(results: Iterator[Decoded]) -> list[Any]:
    return [dataclasses.astuple(r) if isinstance(r, EntityChange) else r for r in results]


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    workers = DecodePool(2, SPEC, OPTIONS)
    yield workers
    workers.close()


def test_a_pool_returns_every_result_in_the_order_given(pool: DecodePool) -> None:
    items = example_items(copies=40)  # many chunks over both workers, more than are in flight at once
    assert len(items) > 5 * 250
    assert comparable(pool.decode(items)) == expected(items)


def test_a_batch_given_up_half_way_leaves_the_pool_in_step(pool: DecodePool) -> None:
    items = example_items(copies=40)
    abandoned = pool.decode(items)
    next(abandoned)
    abandoned.close()  # as ingest does when the batch aborts
    again = example_items(copies=3)
    assert comparable(pool.decode(again)) == expected(again)


def test_a_dead_worker_is_a_terminal_error_that_names_it() -> None:
    workers = DecodePool(1, SPEC, OPTIONS)
    try:
        assert comparable(workers.decode(example_items())) == expected(example_items())
        workers._procs[0].kill()
        workers._procs[0].join(5)
        with pytest.raises(TerminalError, match=r"decode worker decode-0 died \(exit code -9\)"):
            list(workers.decode(example_items()))
    finally:
        workers.close()


class _RegistryAway:
    def decode(self, key: Any, value: Any, headers: Any, position: Position) -> Any:
        raise SchemaRegistryUnavailable("schema registry http://registry:8081 unreachable")


def test_a_transient_failure_in_a_worker_comes_back_as_the_error_ingest_backs_off_on() -> None:
    items = example_items()[:1]
    (result,) = decode_items({items[0][0]: _RegistryAway()}, Mapper(SPEC), items)  # type: ignore[dict-item]
    assert result == (
        "transient",
        "SchemaRegistryUnavailable",
        "schema registry http://registry:8081 unreachable",
    )
    error = transient_error(*result[1:])
    assert isinstance(error, SchemaRegistryUnavailable)
    assert str(error) == result[2]
