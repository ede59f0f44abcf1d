"""``replay`` computes the generations and the sweep from the captured order (decision 0019).

A family table's log as Debezium writes it through a lost slot: an initial snapshot, changes,
then (the gap's changes never streamed) a re-snapshot at a higher LSN that no longer reads a
row deleted in the gap and reads another changed in it, and changes after it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from connector.ingest.replay import RawMessage, replay
from connector.mapping import load_mapping
from connector.source import Position

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"
TOPIC = "benefits.public.family"


def _family(fid: int, name: str, status: str = "A") -> dict[str, Any]:
    return {
        "family_id": fid,
        "family_name": name,
        "status": status,
        "plan_code": "PPO-500",
        "coverage_start": 19_723,
        "coverage_end": None,
        "address": None,
        "email": None,
        "deductible": base64.b64encode((150000).to_bytes(3, "big", signed=True)).decode(),  # precise: 1500.00
        "oop_max": None,
        "updated_at": 1_732_000_000_000_000,
    }


class Log:
    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    def add(self, op: str, row: dict[str, Any], lsn: int, last_commit: int | None, snapshot: str) -> None:
        value = {
            "before": row if op == "d" else None,
            "after": None if op == "d" else row,
            "source": {
                "connector": "postgresql",
                "name": "benefits",
                "snapshot": snapshot,
                "schema": "public",
                "table": "family",
                "lsn": lsn,
                "sequence": json.dumps([None if last_commit is None else str(last_commit), str(lsn)]),
            },
            "op": op,
        }
        key = json.dumps({"family_id": row["family_id"]}).encode()
        position = Position(TOPIC, 0, len(self.messages))
        self.messages.append(RawMessage(position, key, json.dumps(value).encode(), None))


def test_replay_converges_through_a_re_snapshot() -> None:
    log = Log()
    log.add("r", _family(1, "One"), 1000, None, "first")
    log.add("r", _family(2, "Two"), 1000, None, "true")
    log.add("r", _family(3, "Three"), 1000, None, "last")
    log.add("u", _family(1, "One", "S"), 1100, None, "false")
    log.add("u", _family(2, "Two", "S"), 1200, 1150, "false")
    # The slot is lost: family 2 deleted, family 3 renamed, family 4 created, none streamed.
    log.add("r", _family(1, "One", "S"), 2000, None, "first")
    log.add("r", _family(3, "Three (gap)"), 2000, None, "true")
    log.add("r", _family(4, "Four"), 2000, None, "last")
    log.add("r", _family(1, "One"), 1000, None, "first")  # a read of the first snapshot, again
    log.add("u", _family(4, "Four", "T"), 2100, None, "false")
    result = replay(load_mapping(EXAMPLE), log.messages)
    live = {entity_id: (record["FamilyName"], record["Status"]) for _, entity_id, record in result.live}
    assert live == {
        "FAM-1": ("One", "SUSPENDED"),
        "FAM-3": ("Three (gap)", "ACTIVE"),
        "FAM-4": ("Four", "TERMINATED"),
    }
    assert result.swept == 1  # FAM-2: deleted in the gap
    assert result.dead_letters == []


def test_without_the_last_marker_nothing_is_swept() -> None:
    log = Log()
    log.add("r", _family(1, "One"), 1000, None, "first")
    log.add("r", _family(2, "Two"), 1000, None, "true")
    log.add("r", _family(1, "One", "S"), 2000, None, "first")  # the re-snapshot is not complete
    result = replay(load_mapping(EXAMPLE), log.messages)
    assert sorted(entity_id for _, entity_id, _ in result.live) == ["FAM-1", "FAM-2"]
    assert result.swept == 0
