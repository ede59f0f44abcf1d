"""Decode throughput of Debezium JSON, beside bare ``orjson.loads`` of the same bytes.

    .venv/bin/python bench/decode.py [--events 100000] [--repeat 3]

Builds N distinct PostgreSQL change events shaped like ``tests/fixtures/debezium/pg_*.json``
(~1 KB payload: 70 % updates, 25 % inserts, 5 % deletes), once with ``JsonConverter``'s
``schemas.enable=true`` wrapper and once without, then times ``DebeziumJsonDecoder.decode``
over all of them against ``orjson.loads`` of the same key and value bytes (the floor any
decoder pays). Best of ``--repeat`` runs. Targets live in ``docs/benchmarks.md``, not here;
the last line printed is a JSON object for scripts.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from connector.source import DebeziumJsonDecoder, Position

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "debezium"
POSITION = Position("carecloud.public.families", 0, 0)
WORDS = [
    "annual",
    "deductible",
    "met",
    "paperless",
    "statements",
    "preferred",
    "spanish",
    "interpreter",
    "requested",
    "hsa",
    "linked",
]


def _events(n: int, seed: int = 7) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(key, value) pairs, wrapped, built from the fixture's schema and varied per event."""
    rng = random.Random(seed)
    template = orjson.loads((FIXTURES / "pg_create.json").read_bytes())
    schema, payload = template["value"]["schema"], template["value"]["payload"]
    out = []
    for i in range(n):
        row = dict(payload["after"])
        row.update(
            id=10_000 + i,
            family_name=rng.choice(["Rivera", "Okafor", "Nguyen", "Haddad", "Kowalski", "Tanaka"]),
            coverage_start=19_000 + rng.randrange(1500),
            deductible=base64.b64encode(rng.randrange(10**7).to_bytes(4, "big", signed=True)).decode(),
            enrolled_at=1_700_000_000_000_000 + rng.randrange(10**13),
            notes=" ".join(rng.choice(WORDS) for _ in range(rng.randrange(30, 60))),
            tags=rng.sample(WORDS, 3),
        )
        roll = rng.random()
        op = "u" if roll < 0.70 else "c" if roll < 0.95 else "d"
        source = dict(
            payload["source"],
            lsn=34_000_000 + 64 * i,
            sequence=f'["{34_000_000 + 64 * i - 32}","{34_000_000 + 64 * i}"]',
        )
        value = dict(
            payload, source=source, op=op, before=row if op == "d" else None, after=None if op == "d" else row
        )
        key = dict(template["key"], payload={"id": row["id"]})
        out.append((key, {"schema": schema, "payload": value}))
    return out


def _best(repeat: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _measure(messages: list[tuple[bytes, bytes]], repeat: int) -> dict[str, float]:
    def baseline() -> None:
        loads = orjson.loads
        for key, value in messages:
            loads(key)
            loads(value)

    def decode() -> None:
        decoder = DebeziumJsonDecoder()
        for key, value in messages:
            decoder.decode(key, value, None, POSITION)

    n = len(messages)
    base_s, decode_s = _best(repeat, baseline), _best(repeat, decode)
    return {
        "avg_value_bytes": round(sum(len(v) for _, v in messages) / n),
        "orjson_loads_per_s": round(n / base_s),
        "decode_per_s": round(n / decode_s),
        "decode_us_per_event": round(decode_s / n * 1e6, 2),
        "decode_vs_loads": round(base_s / decode_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    events = _events(args.events)
    wrapped = [(orjson.dumps(k), orjson.dumps(v)) for k, v in events]
    bare = [(orjson.dumps(k["payload"]), orjson.dumps(v["payload"])) for k, v in events]
    results: dict[str, Any] = {"events": args.events, "python": platform.python_version()}
    for name, messages in (("without_schema", bare), ("with_schema", wrapped)):
        figures = _measure(messages, args.repeat)
        results[name] = figures
        print(
            f"{name:<15} {figures['avg_value_bytes']:>5} B/value  "
            f"decode {figures['decode_per_s']:>9,}/s ({figures['decode_us_per_event']} us)  "
            f"orjson.loads baseline {figures['orjson_loads_per_s']:>9,}/s  ratio {figures['decode_vs_loads']}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
