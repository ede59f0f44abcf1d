"""What a new mapping would change, entity by entity: the preview before a rollout.

Two sources, one report (``MappingDiff``):

- ``replay_diff``: captured events replayed under the current and the new mapping
  (``replay --mapping OLD --compare NEW``). Both final states are whole, so every count is
  exact: records whose values change and which fields, EntityIds removed and added, and the
  events that would fail under the new mapping (dead letters it has and the current one does
  not), by reason.
- ``state_diff``: the live state read-only against the mapping registry (``validate --mapping
  NEW --preview``). EntityId moves come from the stored ids (the old template read backwards,
  ``mapping.id_moves``: the same counts the start-up refusal gives). A row that keeps its
  source columns (decision 0025) is mapped again by ``ingest.remap.remap_change``, the code
  the re-mapping pass runs, so its changed fields and its failures (by reason) are exactly
  what the pass will do. A row without them is estimated from its stored values: fields whose
  enum map or constant changed (the old enum map read backwards gives the source code), and a
  field whose column or conversion changed counted as "to re-map" (its new value needs the
  source row).

Counts and field names only in ``as_json``; a few EntityIds in ``examples``, for a terminal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.ingest.barrier import dead_letter_cause
from connector.ingest.remap import remap_change, table_topics
from connector.ingest.replay import ReplayResult
from connector.mapping import Mapper
from connector.mapping.id_moves import count_moves
from connector.mapping.versions import Descriptor, identity_changes
from connector.model import raw_schema
from connector.state.codec import decode_row, encode_row, stored_values
from connector.state.mapping_registry import Registry
from connector.state.resolve import StateRow

__all__ = ["EntityDiff", "ExactRows", "MappingDiff", "replay_diff", "state_diff"]

_EXAMPLES = 3


@dataclass
class EntityDiff:
    """One entity under the current and the new mapping."""

    entity: str
    before: str | None
    """The current mapping's version of the entity (None: not mapped)."""
    after: str | None
    records: int = 0
    """Records under the current mapping (live, complete)."""
    changed_records: int = 0
    """Same EntityId, other values."""
    changed_fields: Counter[str] = field(default_factory=Counter)
    """Per field: records whose value changes."""
    removed: int = 0
    """EntityIds the new mapping no longer has (moved away, or its rows failing)."""
    added: int = 0
    """EntityIds only the new mapping has (moved here)."""
    failing: Counter[str] = field(default_factory=Counter)
    """Per reason: records (state) or events (replay) the new mapping refuses."""
    to_remap: int = 0
    """``state_diff``: rows without source columns whose new values need their source row (a
    column or conversion changed)."""
    fields_to_remap: tuple[str, ...] = ()
    examples: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(
            self.before != self.after
            or self.changed_records
            or self.removed
            or self.added
            or self.failing
            or self.to_remap
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "version": {"current": self.before, "new": self.after},
            "records": self.records,
            "changed_records": self.changed_records,
            "changed_fields": dict(sorted(self.changed_fields.items())),
            "entity_ids": {"removed": self.removed, "added": self.added},
            "failing": dict(sorted(self.failing.items())),
            "to_remap": self.to_remap,
            "fields_to_remap": list(self.fields_to_remap),
        }

    def describe(self) -> str:
        if not self.changes:
            return f"{self.entity}: unchanged ({self.records} records)"
        parts = [f"{self.entity}: version {self.before or 'none'} -> {self.after or 'none'}"]
        parts.append(f"{self.changed_records} of {self.records} records change")
        if self.changed_fields:
            parts.append("fields " + ", ".join(f"{k} {n}" for k, n in sorted(self.changed_fields.items())))
        if self.removed or self.added:
            parts.append(f"EntityIds removed {self.removed}, added {self.added}")
        if self.failing:
            parts.append("would fail " + ", ".join(f"{k} {n}" for k, n in sorted(self.failing.items())))
        if self.to_remap:
            parts.append(f"{self.to_remap} to re-map from the source ({', '.join(self.fields_to_remap)})")
        return "; ".join(parts)


@dataclass
class MappingDiff:
    """Every entity's ``EntityDiff``, plus failures the replay could not place in an entity."""

    entities: dict[str, EntityDiff]
    failing_events: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "entities": {e: d.as_json() for e, d in sorted(self.entities.items())},
            "failing_events": dict(sorted(self.failing_events.items())),
        }

    def describe(self, *, examples: bool = False) -> str:
        lines = [d.describe() for _, d in sorted(self.entities.items())]
        if self.failing_events:
            lines.append(
                "events the new mapping refuses: "
                + ", ".join(f"{k} {n}" for k, n in sorted(self.failing_events.items()))
            )
        if examples:
            for _, d in sorted(self.entities.items()):
                if d.examples:
                    lines.append(f"  {d.entity} e.g. {', '.join(d.examples)}")
        return "\n".join(lines)


def _by_entity(live: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entity, entity_id, values in live:
        out.setdefault(entity, {})[entity_id] = values
    return out


def replay_diff(
    old: ReplayResult, new: ReplayResult, before: dict[str, str], after: dict[str, str]
) -> MappingDiff:
    """The same captured events' final states under the current (``old``) and the new mapping;
    ``before``/``after``: each mapping's versions (``Mapper.versions``)."""
    a, b = _by_entity(old.live), _by_entity(new.live)
    diff = MappingDiff({})
    for entity in sorted(a.keys() | b.keys() | before.keys() | after.keys()):
        rows_a, rows_b = a.get(entity, {}), b.get(entity, {})
        d = EntityDiff(entity, before.get(entity), after.get(entity), records=len(rows_a))
        d.removed = len(rows_a.keys() - rows_b.keys())
        d.added = len(rows_b.keys() - rows_a.keys())
        for entity_id in sorted(rows_a.keys() & rows_b.keys()):
            va, vb = rows_a[entity_id], rows_b[entity_id]
            fields = {k for k in va.keys() | vb.keys() if va.get(k) != vb.get(k)}
            if fields:
                d.changed_records += 1
                d.changed_fields.update(fields)
                if len(d.examples) < _EXAMPLES:
                    d.examples.append(entity_id)
        diff.entities[entity] = d
    was_dead = {(x.position.topic, x.position.partition, x.position.offset) for x in old.dead_letters}
    for dead in new.dead_letters:
        p = dead.position
        if (p.topic, p.partition, p.offset) not in was_dead:
            diff.failing_events[dead.reason] += 1
    return diff


def _enum_change(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Only the enum map (or a constant) differs: the new value follows from the stored one."""
    strip = ("enum", "const")
    rest_old = {k: v for k, v in old.items() if k not in strip}
    same_rest = rest_old == {k: v for k, v in new.items() if k not in strip}
    return same_rest and ("enum" in old or "enum" in new or "const" in old or "const" in new)


def _symbols(entity: str, name: str) -> frozenset[str] | None:
    """The Avro enum symbols of a field, or None when it is not an enum."""
    for f in raw_schema(entity)["fields"]:
        if f["name"] == name:
            types = f["type"] if isinstance(f["type"], list) else [f["type"]]
            for t in types:
                if isinstance(t, dict) and t.get("type") == "enum":
                    return frozenset(t["symbols"])
    return None


def _remapped(
    old: dict[str, Any], new: dict[str, Any], value: Any, symbols: frozenset[str] | None
) -> tuple[Any, str | None]:
    """A stored value under the new field spec when only its enum map or constant changed:
    ``(new value, None)``, or ``(None, reason)`` when the new mapping would refuse it (the
    converter's reason, ``mapping.convert``: a code the new map leaves as is is no symbol)."""
    if "const" in new:
        return new["const"], None
    if value is None:
        return None, None
    inverse = {v: k for k, v in (old.get("enum") or {}).items()}
    code = inverse.get(value, value)
    mapped = (new.get("enum") or {}).get(str(code), code)
    if symbols is not None and mapped not in symbols:
        return None, "unknown_enum_symbol"
    return mapped, None


@dataclass(frozen=True)
class ExactRows:
    """What lets ``state_diff`` map rows again as the re-mapping pass will: the new mapping's
    ``Mapper`` and the stored rows (their bytes) of each entity by EntityId."""

    mapper: Mapper
    rows: Mapping[str, Mapping[str, bytes]]


def _exact(
    mapper: Mapper, topics: Mapping[str, str], entity: str, entity_id: str, raw: bytes, values: dict[str, Any]
) -> set[str] | str | None:
    """The fields whose stored value the new mapping changes, mapped from the row's source
    columns; the reason it refuses the row; None when the row keeps no source columns."""
    row = decode_row(entity, raw, typed=False)
    try:
        change = remap_change(mapper, topics, entity, entity_id, row, 0)
    except BaseException as exc:  # the pass's barrier: what it would dead-letter, by reason
        cause = dead_letter_cause(exc)
        if cause is None:
            raise
        return cause.reason
    if change is None:
        return None
    new = stored_values(encode_row(StateRow(row.version, False, change.values)))
    return {name for name in values.keys() | new.keys() if values.get(name) != new.get(name)}


def state_diff(
    registry: Registry,
    descriptors: dict[str, Descriptor],
    rows: dict[str, list[tuple[str, dict[str, Any]]]],
    exact: ExactRows | None = None,
) -> MappingDiff:
    """The live state's ``rows`` (``ingest.rollout.state_rows``) against the new mapping's
    ``descriptors``, the registry holding the current one (module docstring); with ``exact``,
    rows that keep their source columns are mapped again rather than estimated."""
    diff = MappingDiff({})
    topics = table_topics(exact.mapper) if exact is not None else {}
    for entity in sorted(descriptors.keys() | registry.current.keys()):
        old, new = registry.current.get(entity), descriptors.get(entity)
        found = rows.get(entity, [])
        d = EntityDiff(entity, old.version if old else None, new.version if new else None, records=len(found))
        diff.entities[entity] = d
        if old is None or new is None or old.version == new.version:
            continue
        identity = identity_changes(old, new)
        for change in identity:
            moves = count_moves(change, found)
            if change.what == "entity_id":
                d.removed += moves.moved
                d.added += moves.moved
                d.examples.extend(f"{a} -> {b or '?'}" for a, b in moves.examples)
            else:
                d.changed_fields[change.what] += moves.moved
        enum_fields: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        remap: set[str] = set()
        for table in sorted(old.tables.keys() & new.tables.keys()):
            old_fields, new_fields = old.tables[table]["fields"], new.tables[table]["fields"]
            for name in sorted(old_fields.keys() | new_fields.keys()):
                a, b = old_fields.get(name), new_fields.get(name)
                if a == b or name in d.changed_fields:
                    continue
                if a is not None and b is not None and ("const" in b or _enum_change(a, b)):
                    enum_fields[name] = (a, b)
                elif a is None or b is None or "template" not in a:
                    remap.add(name)
            if old.tables[table]["topics"] != new.tables[table]["topics"]:
                remap.update(n for n in new_fields if "column" in new_fields[n])
        symbols = {name: _symbols(entity, name) for name in enum_fields}
        # Moves are counted above; the pass refuses a moved row, so those rows are not re-mapped.
        stored = exact.rows.get(entity, {}) if exact is not None and not identity else {}
        changed: set[str] = set()
        estimated = 0
        for entity_id, values in found:
            raw = stored.get(entity_id)
            outcome = (
                None
                if raw is None or exact is None
                else _exact(exact.mapper, topics, entity, entity_id, raw, values)
            )
            if isinstance(outcome, str):
                d.failing[outcome] += 1
                continue
            if outcome is not None:
                d.changed_fields.update(outcome)
                if outcome:
                    changed.add(entity_id)
                continue
            estimated += 1
            differs = False
            for name, (a, b) in enum_fields.items():
                value, reason = _remapped(a, b, values.get(name), symbols[name])
                if reason is not None:
                    d.failing[f"{name}: {reason}"] += 1
                elif value != values.get(name):
                    d.changed_fields[name] += 1
                    differs = True
            if differs:
                changed.add(entity_id)
        d.changed_records = len(changed)
        d.fields_to_remap = tuple(sorted(remap)) if estimated else ()
        d.to_remap = estimated if remap else 0
    return diff
