"""``validate --mapping NEW --preview``: a new mapping against the live state, read-only.

Reads the mapping registry and every live row of the state topic (a consumer that is assigned
partitions and never commits, never joins the ingest's group) and reports, per entity, what
the new mapping would change (``mapping_diff.state_diff``): the same EntityId counts the
start-up check would refuse with; for rows that keep their source columns, exactly what the
re-mapping pass will change or refuse; for the others, what follows from the stored values and
what needs the source. Nothing is written anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.config import load_settings
from connector.ingest.mapping_diff import ExactRows, MappingDiff, state_diff
from connector.mapping import Mapper, load_mapping
from connector.mapping.versions import describe
from connector.model import ENTITY_NAMES
from connector.state.codec import is_deleted, split_key, stored_values
from connector.state.mapping_registry import read_latest, read_registry

__all__ = ["preview_mapping"]


def preview_mapping(mapping: Path) -> MappingDiff:
    """The new mapping file against the live state the environment's settings name."""
    settings = load_settings()
    base = settings.kafka.client_config()
    registry = read_registry(base, settings.ingest.mapping_topic_name)
    spec = load_mapping(mapping)
    descriptors = describe(spec)
    # Only the entities whose version changes are read: the rest of the state is not held in
    # memory for nothing (the preview reads the whole topic, keeping those entities' rows).
    changed = {
        entity
        for entity in ENTITY_NAMES
        if (entity in descriptors) != (entity in registry.current)
        or (entity in descriptors and descriptors[entity].version != registry.current[entity].version)
    }
    prefixes = [f"{entity}/".encode() for entity in sorted(changed)]
    latest = read_latest(base, settings.ingest.state_topic, prefixes) if changed else {}
    rows: dict[str, list[tuple[str, Any]]] = {entity: [] for entity in changed}
    stored: dict[str, dict[str, bytes]] = {entity: {} for entity in changed}
    for key, value in sorted(latest.items()):
        if is_deleted(value):  # a marker: no longer delivered
            continue
        entity, entity_id = split_key(key)
        rows[entity].append((entity_id, stored_values(value)))
        stored[entity][entity_id] = value
    # Rows keeping their source columns are mapped again by the pass's own code: exact counts.
    exact = ExactRows(Mapper(spec), stored)
    return state_diff(registry, descriptors, rows, exact)
