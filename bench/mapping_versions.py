"""What mapping versions cost per event and per row (docs/decisions/0023), against the same
work without them, interleaved in one process so machine load hits both alike.

    .venv/bin/python bench/mapping_versions.py [--rows 100000] [--rounds 7]

Rows are the example mapping's Family rows from ``family_events_full`` (the bench/ingest.py
stream). Measured, per row, minimum over rounds: ``encode_row`` without and with a version
(the Python path's write; the compiled path writes the version in Rust, measured by
bench/ingest.py), ``row_mapping_version`` (what each cut reader does per complete row to tally), and
the bytes a version adds to a row. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from connector.devtools.generator import family_events_full
from connector.mapping import Mapper, load_mapping
from connector.source import Position, make_decoder
from connector.state.codec import encode_row, row_mapping_version
from connector.state.resolve import StateRow, merge


def _rows(n: int) -> list[StateRow]:
    mapper = Mapper(load_mapping("examples/mapping.yaml"))
    decoder = make_decoder("debezium-json")
    rows: list[StateRow] = []
    for i, (key, value) in enumerate(family_events_full(n // 5 + 1, 4)):
        if value is None:
            continue
        event = decoder.decode(key, value, None, Position("benefits.public.family", 0, i))
        if event is None or event.op.is_delete:
            continue
        row = merge(None, mapper.map(event))
        if row is not None:
            rows.append(row)
        if len(rows) == n:
            break
    return rows


def _best(fns: dict[str, Callable[[], object]], rounds: int, n: int) -> dict[str, float]:
    """Microseconds per row of each function, the fastest of ``rounds`` (the least disturbed),
    the functions interleaved round by round so a load spike hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: round(min(t) / n * 1e6, 3) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    versioned = _rows(args.rows)
    plain = [
        StateRow(r.version, r.deleted, r.values, r.missing, r.field_versions, r.delete_floor)
        for r in versioned
    ]
    compiled = [encode_row(r) for r in plain]  # rows as written before versions
    stored = [encode_row(r) for r in versioned]
    mv = versioned[0].mapping_version
    n = len(versioned)
    out = {"rows": n, "mapping_version": mv}
    fns: dict[str, Callable[[], object]] = {
        "encode_row_us": lambda: [encode_row(r) for r in plain],
        "encode_row_with_version_us": lambda: [encode_row(r) for r in versioned],
        "loop_only_us": lambda: [len(b) for b in compiled],
        "row_mapping_version_us": lambda: [row_mapping_version(b) for b in stored],
    }
    out.update(_best(fns, args.rounds, n))
    out["row_bytes"] = round(sum(map(len, compiled)) / n, 1)
    out["row_bytes_with_version"] = round(sum(map(len, stored)) / n, 1)
    for key, value in out.items():
        print(f"  {key:<28} {value}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
