"""What keeping source columns in state rows costs, and how fast the re-mapping pass re-maps
(docs/decisions/0025), against the same work without them, interleaved in one process so
machine load hits both alike.

    .venv/bin/python bench/source_columns.py [--rows 100000] [--rounds 5]

Rows are the example mapping's Family rows from ``family_events_full`` (the bench/ingest.py
stream). Measured, per event, minimum over rounds: the Python path's map + merge + encode
without and with source columns (``Mapper(source_columns=...)``), the compiled path's
``FastPath.map`` without and with them (the extension writing ``"src"``), and the bytes a row
holds either way; then the re-mapping pass over a local store of the rows (an enum map
changed: every row re-mapped), rows per second of ``RemapPass.step``. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector._fastpath import fastpath_available
from connector.devtools.generator import family_events_full
from connector.ingest.batch import BatchView
from connector.ingest.remap import RemapPass
from connector.mapping import Mapper, load_mapping
from connector.mapping.fastpath import FastPath
from connector.source import Position, make_decoder
from connector.state.codec import encode_row, state_key
from connector.state.resolve import merge
from connector.state.store import PartitionStore

TOPIC = "benefits.public.family"
EXAMPLE = "examples/mapping.yaml"


def _messages(n: int) -> list[tuple[bytes, bytes]]:
    out = [(k, v) for k, v in family_events_full(n // 4 + 1, 3) if v is not None]
    return out[:n]


def _python_path(mapper: Mapper, messages: list[tuple[bytes, bytes]]) -> Callable[[], int]:
    decoder = make_decoder("debezium-json")

    def run() -> int:
        size = 0
        for i, (key, value) in enumerate(messages):
            event = decoder.decode(key, value, None, Position(TOPIC, 0, i))
            if event is None:
                continue
            row = merge(None, mapper.map(event))
            if row is not None:
                size += len(encode_row(row))
        return size

    return run


def _fast_path(mapper: Mapper, messages: list[tuple[bytes, bytes]]) -> Callable[[], int]:
    fast = FastPath(mapper, TOPIC)

    def run() -> int:
        size = 0
        for i, (key, value) in enumerate(messages):
            change = fast.map(key, value, None, Position(TOPIC, 0, i))
            if change is not None and change.row is not None:
                size += len(change.row)
        return size

    return run


def _best(fns: dict[str, Callable[[], int]], rounds: int, n: int) -> tuple[dict[str, float], dict[str, int]]:
    """Microseconds per event of each function (best round, rounds interleaved) and its bytes."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            sizes[name] = fn()
            times[name].append((time.perf_counter() - started) / n * 1e6)
    return {name: round(min(t), 3) for name, t in times.items()}, sizes


def _remap_rate(messages: list[tuple[bytes, bytes]], rounds: int) -> dict[str, Any]:
    """Rows per second of the pass over a store of the rows, every one re-mapped."""
    old = Mapper(load_mapping(EXAMPLE), source_columns=True)
    text = Path(EXAMPLE).read_text()
    changed = text.replace("T: TERMINATED", "T: SUSPENDED")
    assert changed != text, "the example mapping's enum map moved: change what the bench rolls out"
    work = Path(tempfile.mkdtemp(prefix="bench-remap-"))
    decoder = make_decoder("debezium-json")
    rows = {}
    for i, (key, value) in enumerate(messages):
        event = decoder.decode(key, value, None, Position(TOPIC, 0, i))
        assert event is not None
        change = old.map(event)
        row = merge(None, change)
        if row is not None:
            rows[state_key(change.entity, change.entity_id)] = encode_row(row)
    rates = []
    try:
        for r in range(rounds):
            store = PartitionStore(work / f"p{r}")
            store.write(rows, 1)
            (work / "new.yaml").write_text(changed)
            new = Mapper(load_mapping(work / "new.yaml"), source_columns=True)
            remap = RemapPass(new, {}, rows_per_batch=500, state_topic="s", dlq_topic="d")
            started, done = time.perf_counter(), 0
            while remap.due({0: store}):
                view = BatchView(store, _Discard(), 0)
                done += remap.step(0, view, _NoProducer())["remapped"]  # type: ignore[arg-type]
                store.write(view.encoded, store.next_offset + 1)
            rates.append(done / (time.perf_counter() - started))
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"remap_rows": len(rows), "remap_rows_per_s": round(statistics.median(rates))}


class _Discard:
    def __call__(self, key: bytes, value: bytes | None) -> None:
        pass

    def finish(self) -> None:
        pass


class _NoProducer:
    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no dead letter expected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    messages = _messages(args.rows)
    spec = load_mapping(EXAMPLE)
    fns = {
        "python_without": _python_path(Mapper(spec), messages),
        "python_with": _python_path(Mapper(spec, source_columns=True), messages),
    }
    if fastpath_available() is None:
        fns["compiled_without"] = _fast_path(Mapper(spec), messages)
        fns["compiled_with"] = _fast_path(Mapper(spec, source_columns=True), messages)
    us, sizes = _best(fns, args.rounds, len(messages))
    result: dict[str, Any] = {
        "events": len(messages),
        "us_per_event": us,
        "row_bytes": {name: round(size / len(messages), 1) for name, size in sizes.items()},
        **_remap_rate(messages, max(1, args.rounds // 2)),
        "load": [round(load, 1), round(os.getloadavg()[0], 1)],
    }
    for name, value in us.items():
        print(f"{name:<18} {value:8.2f} us/event  {result['row_bytes'][name]:7.1f} B/row")
    print(f"re-mapping pass: {result['remap_rows_per_s']:,} rows/s over {result['remap_rows']:,} rows")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
