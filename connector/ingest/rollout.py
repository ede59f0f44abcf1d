"""The start-up check of a mapping against the one the state was written under.

Before ingest consumes anything, it reads the mapping registry (``connector.state.
mapping_registry``) and compares each entity's mapping with the one recorded:

- the same version: nothing to do (a restart);
- another version that moves no EntityId: recorded as current; rows written under the old
  version are held by the snapshot until re-written (docs/decisions/0023);
- a change that would move EntityIds (a table's ``entity_id`` template, or what a
  ``references`` field reads): refused with a ``ConfigError`` naming each table, what changed
  and how many stored EntityIds would change, unless ``CARECLOUD_INGEST_ALLOW_ENTITY_ID_CHANGE``
  is set; then it goes ahead, and the log says how many EntityIds are removed and added.

Counts only: the EntityIds themselves never reach a log (``validate --mapping`` shows a few
at a terminal). Counting reads the entity's rows from the state topic, which happens only when
an identity change is found.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient

from connector.config import IngestSettings
from connector.errors import ConfigError
from connector.mapping import MappingSpec
from connector.mapping.id_moves import IdMoves, count_moves
from connector.mapping.versions import Descriptor, IdentityChange, describe, identity_changes
from connector.state.codec import is_deleted, split_key, stored_values
from connector.state.mapping_registry import (
    Registry,
    ensure_registry_topic,
    read_latest,
    read_registry,
    record,
)

__all__ = ["Rollout", "check_rollout", "judge_rollout", "state_rows"]

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """What a mapping does to the state it meets."""

    descriptors: dict[str, Descriptor]
    registry: Registry
    changed: dict[str, str | None] = field(default_factory=dict)
    """Entities whose version changes: ``{entity: the recorded version}`` (None: new entity)."""
    moves: list[IdMoves] = field(default_factory=list)
    """Each identity change, judged on the stored rows."""

    @property
    def moved(self) -> int:
        return sum(m.moved for m in self.moves)

    def refusal(self) -> str:
        lines = "; ".join(m.describe() for m in self.moves)
        return (
            f"the mapping would change EntityIds already delivered: {lines}. EntityIds must never move by "
            "accident: restore the template, or set CARECLOUD_INGEST_ALLOW_ENTITY_ID_CHANGE=true to "
            "deliver the change as removals and additions (README, 'changing the mapping'; preview it "
            "with carecloud-connector validate --mapping NEW)"
        )


def live_rows(base: dict[str, Any], state_topic: str, entities: set[str]) -> dict[str, dict[str, bytes]]:
    """Live rows of ``entities`` in the state topic now, as stored: ``{entity: {EntityId: row}}``
    (delete markers left out: they are no longer delivered)."""
    latest = read_latest(base, state_topic, [f"{entity}/".encode() for entity in sorted(entities)])
    out: dict[str, dict[str, bytes]] = {entity: {} for entity in entities}
    for key, value in sorted(latest.items()):
        if not is_deleted(value):
            entity, entity_id = split_key(key)
            out[entity][entity_id] = value
    return out


def values_of(rows: dict[str, dict[str, bytes]]) -> dict[str, list[tuple[str, Any]]]:
    """``live_rows`` as ``{entity: [(EntityId, stored values)]}``, what the moves are counted on."""
    return {entity: [(i, stored_values(raw)) for i, raw in found.items()] for entity, found in rows.items()}


def state_rows(
    base: dict[str, Any], state_topic: str, entities: set[str]
) -> dict[str, list[tuple[str, Any]]]:
    """Live rows of ``entities`` in the state topic now: ``{entity: [(EntityId, values)]}``."""
    return values_of(live_rows(base, state_topic, entities))


def judge_rollout(
    registry: Registry, descriptors: dict[str, Descriptor], rows: dict[str, list[tuple[str, Any]]] | None
) -> Rollout:
    """The rollout of ``descriptors`` over ``registry``; ``rows``: the state's live rows of the
    entities with identity changes (None: not read yet, no moves counted)."""
    rollout = Rollout(descriptors, registry)
    changes: list[IdentityChange] = []
    for entity, new in descriptors.items():
        old = registry.current.get(entity)
        if old is not None and old.version == new.version:
            continue
        rollout.changed[entity] = None if old is None else old.version
        if old is not None:
            changes += identity_changes(old, new)
    if rows is not None:
        rollout.moves = [count_moves(change, rows.get(change.entity, ())) for change in changes]
    else:
        rollout.moves = [IdMoves(change) for change in changes]
    return rollout


def check_rollout(base: dict[str, Any], ingest: IngestSettings, spec: MappingSpec) -> Rollout:
    """The start-up check (module docstring); records the mapping when it goes ahead."""
    topic = ingest.mapping_topic_name
    admin = AdminClient({k: v for k, v in base.items() if k != "error_cb"})
    ensure_registry_topic(admin, topic, ingest.replication_factor, ingest.min_insync_replicas)
    registry = read_registry(base, topic)
    descriptors = describe(spec)
    rollout = judge_rollout(registry, descriptors, None)
    if rollout.moves:
        entities = {m.change.entity for m in rollout.moves}
        rollout = judge_rollout(registry, descriptors, state_rows(base, ingest.state_topic, entities))
    if rollout.moves and not ingest.allow_entity_id_change:
        raise ConfigError(rollout.refusal())
    for moves in rollout.moves:
        log.warning(
            "the mapping changes EntityIds (allowed): they are delivered as removals and additions",
            extra={
                "entity": moves.change.entity,
                "table": moves.change.table,
                "what": moves.change.what,
                "removed": moves.moved,
                "added": moves.moved,
                "rows": moves.rows,
            },
        )
    for entity, old in rollout.changed.items():
        log.info(
            "mapping version recorded",
            extra={"entity": entity, "version": descriptors[entity].version, "previous": old or "none"},
        )
    record(base, topic, registry.updates(descriptors, int(time.time() * 1000)))
    return rollout
