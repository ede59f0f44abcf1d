"""The demo's check: what was delivered for one entity against the generator's expected state.

Both sides are encoded the way the sinks encode (the CSV writer for files, the JSON encoders
for Portal batches) from records in EntityId order, so equality is byte for byte (files) or
value for value (API), not a loose comparison. A mismatch names counts and the first differing
position, never a record value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.sinks._cells import encoders
from connector.sinks.formats import CSV
from connector.snapshot.manifest import EntityResult

__all__ = ["EntityCheck", "check_entity"]


@dataclass(frozen=True, slots=True)
class EntityCheck:
    entity: str
    route: str
    delivered: int
    expected: int
    ok: bool
    problem: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "route": self.route,
            "delivered": self.delivered,
            "expected": self.expected,
            "ok": self.ok,
            "problem": self.problem,
        }


def check_entity(
    entity: str, entry: EntityResult, expected: Mapping[str, Mapping[str, Any]], delivered: bytes | list[Any]
) -> EntityCheck:
    """Compare one entity's delivery (file bytes, or the Portal's accepted records) with ``expected``."""
    records = [expected[entity_id] for entity_id in sorted(expected)]
    if entry.status != "delivered":
        return EntityCheck(entity, entry.route, 0, len(records), False, f"{entry.status}: {entry.reason}")
    if isinstance(delivered, bytes):
        want = b"".join(CSV.writer(entity).write_rows(records))
        lines = delivered.count(b"\r\n") - 1  # minus the header
        if delivered == want:
            return EntityCheck(entity, entry.route, lines, len(records), True)
        return EntityCheck(
            entity, entry.route, lines, len(records), False, _first_difference(delivered, want)
        )
    fields = encoders(entity, for_csv=False)
    want_json = [{name: encode(record.get(name)) for name, encode in fields} for record in records]
    if delivered == want_json:
        return EntityCheck(entity, entry.route, len(delivered), len(records), True)
    index = next((i for i, (a, b) in enumerate(zip(delivered, want_json, strict=False)) if a != b), None)
    where = f"record {index} differs" if index is not None else "record counts differ"
    return EntityCheck(entity, entry.route, len(delivered), len(records), False, where)


def _first_difference(got: bytes, want: bytes) -> str:
    got_lines, want_lines = got.split(b"\r\n"), want.split(b"\r\n")
    for number, (a, b) in enumerate(zip(got_lines, want_lines, strict=False)):
        if a != b:
            return f"line {number + 1} differs"
    return f"{len(got_lines)} lines delivered, {len(want_lines)} expected"
