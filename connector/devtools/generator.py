"""Synthetic Debezium PostgreSQL change events for tests and benchmarks.

Events are shaped like examples/events.jsonl (JSON converter, ``schemas.enable=false``) for
the ``public.family`` table of examples/mapping.yaml, about 700 bytes each, with commit LSNs
that grow per transaction so the connector's version key orders them. Deterministic per seed.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator

__all__ = ["family_events", "family_events_full"]

_STATUSES = ("A", "P", "S", "T")


def _money(cents: int) -> str:
    return base64.b64encode(cents.to_bytes((cents.bit_length() + 8) // 8, "big", signed=True)).decode()


def family_events(
    families: int, updates: int, *, seed: int = 7, deletes_every: int = 0
) -> Iterator[tuple[bytes, bytes | None]]:
    """(key, value) pairs: a create and ``updates`` updates per family, interleaved; every
    ``deletes_every``-th family is deleted at the end (followed by its tombstone)."""
    rng = random.Random(seed)
    lsn = 30_000_000
    order = [(fid, step) for step in range(updates + 1) for fid in range(1, families + 1)]
    for fid, step in order:
        lsn += 100
        key = json.dumps({"family_id": fid}).encode()
        row = _family_row(fid, rng, lsn)
        yield key, _envelope("c" if step == 0 else "u", row, lsn)
    if deletes_every:
        for fid in range(deletes_every, families + 1, deletes_every):
            lsn += 100
            key = json.dumps({"family_id": fid}).encode()
            yield key, _envelope("d", {"family_id": fid}, lsn)
            yield key, None


def _family_row(fid: int, rng: random.Random, lsn: int) -> dict[str, object]:
    """One ``public.family`` row; the random draws are in a fixed order, so a seed fixes it."""
    return {
        "family_id": fid,
        "family_name": f"Family {fid:07d}",
        "status": rng.choice(_STATUSES),
        "plan_code": f"PPO-{rng.randrange(100, 999)}",
        "coverage_start": 19_000 + fid % 700,
        "coverage_end": None,
        "address": json.dumps({"state": "CA", "zip": f"9{fid % 10000:04d}"}),
        "email": f"family{fid}@example.org",
        "deductible": _money(rng.randrange(50_000, 900_000)),
        "oop_max": _money(rng.randrange(100_000, 2_000_000)),
        "updated_at": 1_732_000_000_000_000 + lsn,
    }


def _envelope(op: str, row: dict[str, object], lsn: int) -> bytes:
    source = {
        "version": "3.0.7.Final",
        "connector": "postgresql",
        "name": "benefits",
        "ts_ms": lsn // 1000,
        "snapshot": "false",
        "db": "benefits",
        "sequence": json.dumps([str(lsn - 50), str(lsn)]),
        "schema": "public",
        "table": "family",
        "txId": lsn // 100,
        "lsn": lsn,
        "xmin": None,
    }
    doc = {
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": source,
        "transaction": None,
        "op": op,
        "ts_ms": lsn // 1000,
    }
    return json.dumps(doc).encode()


def family_events_full(
    families: int, updates: int, *, seed: int = 7, deletes_every: int = 0
) -> Iterator[tuple[bytes, bytes | None]]:
    """Like ``family_events``, but about 1 KB per event as a ``REPLICA IDENTITY FULL`` table
    with ``provide.transaction.metadata=true`` sends them: updates and deletes carry the
    whole previous row in ``before``, and every event has its ``transaction`` block."""
    rng = random.Random(seed)
    lsn = 30_000_000
    last: dict[int, dict[str, object]] = {}
    order = [(fid, step) for step in range(updates + 1) for fid in range(1, families + 1)]
    deleted = range(deletes_every, families + 1, deletes_every) if deletes_every else range(0)
    for fid, step in [*order, *((fid, -1) for fid in deleted)]:
        lsn += 100
        key = json.dumps({"family_id": fid}).encode()
        before = last.get(fid)
        if step < 0:
            yield key, _full_envelope("d", before, None, lsn)
            yield key, None
            continue
        after = _family_row(fid, rng, lsn)
        last[fid] = after
        yield key, _full_envelope("c" if step == 0 else "u", before, after, lsn)


def _full_envelope(
    op: str, before: dict[str, object] | None, after: dict[str, object] | None, lsn: int
) -> bytes:
    doc = json.loads(_envelope(op, after or {}, lsn))
    doc["before"], doc["after"] = before, after
    doc["transaction"] = {"id": f"{lsn // 100}:{lsn}", "total_order": 1, "data_collection_order": 1}
    return json.dumps(doc).encode()
