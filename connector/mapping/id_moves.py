"""Which stored EntityIds a mapping change would move, computed from the EntityIds themselves.

The state keeps mapped rows, not source rows, but an EntityId is a template over primary-key
columns (``FAM-{family_id}``), so the old template read backwards gives the columns, and the
new template formats them again: a template change is judged row by row, exactly, without
the source. Where that cannot work (the new template reads a column the old one does not
hold, or an id does not parse under the old template) the row is counted as ``unknown``, and
treated as moved. The same holds for an association field, whose value is the parent's
template over the columns the field reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from string import Formatter
from typing import Any

from connector.mapping.versions import IdentityChange

__all__ = ["IdMoves", "count_moves", "move_id"]

_EXAMPLES = 3


@dataclass
class IdMoves:
    """How many of the rows read an identity change would move."""

    change: IdentityChange
    rows: int = 0
    """Rows with a value the change concerns (every row for a template change)."""
    moved: int = 0
    """Rows whose EntityId (or association value) would be different: removals and additions."""
    unknown: int = 0
    """Rows that could not be judged from the id (counted in ``moved`` too)."""
    examples: list[tuple[str, str | None]] = field(default_factory=list)
    """A few ``(before, after)``; after None when unknown. For previews at a terminal only:
    an EntityId never goes to logs."""

    def describe(self) -> str:
        unknown = f" ({self.unknown} not computable from the id)" if self.unknown else ""
        return f"{self.change.describe()}: {self.moved} of {self.rows} would change{unknown}"


def _pattern(template: str) -> tuple[re.Pattern[str], list[str]] | None:
    parts: list[str] = []
    names: list[str] = []
    for text, name, spec, conv in Formatter().parse(template):
        parts.append(re.escape(text))
        if name is not None:
            if spec or conv or name in names:
                return None
            names.append(name)
            parts.append(f"(?P<{name}>.+?)")
    try:
        return re.compile("".join(parts) + r"\Z", re.DOTALL), names
    except re.error:
        return None


def move_id(before: str, after: str, value: str) -> str | None:
    """``value`` written by template ``before``, as template ``after`` writes it; None when it
    cannot be told (``value`` does not parse, or ``after`` needs a column ``before`` lacks)."""
    parsed = _pattern(before)
    if parsed is None:
        return None
    match = parsed[0].match(value)
    if match is None:
        return None
    columns = match.groupdict()
    needed = [name for _, name, _, _ in Formatter().parse(after) if name is not None]
    if not set(needed) <= columns.keys():
        return None
    return after.format(**columns)


def _template(source: Any) -> str | None:
    return source.get("template") if isinstance(source, dict) else source if isinstance(source, str) else None


def count_moves(change: IdentityChange, rows: Iterable[tuple[str, dict[str, Any]]]) -> IdMoves:
    """Judge ``change`` on ``(EntityId, stored values)`` rows of its entity."""
    out = IdMoves(change)
    before, after = _template(change.before), _template(change.after)
    for entity_id, values in rows:
        value = entity_id if change.what == "entity_id" else values.get(change.what)
        if not isinstance(value, str):
            continue
        out.rows += 1
        moved = move_id(before, after, value) if before is not None and after is not None else None
        if moved == value:
            continue
        out.moved += 1
        out.unknown += moved is None
        if len(out.examples) < _EXAMPLES:
            out.examples.append((value, moved))
    return out
