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

from connector.config import load_settings
from connector.ingest.mapping_diff import ExactRows, MappingDiff, state_diff
from connector.ingest.rollout import live_rows, values_of
from connector.mapping import Mapper, load_mapping
from connector.mapping.versions import describe
from connector.model import ENTITY_NAMES
from connector.state.mapping_registry import read_registry

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
    stored = live_rows(base, settings.ingest.state_topic, changed) if changed else {}
    # Rows keeping their source columns are mapped again by the pass's own code: exact counts.
    exact = ExactRows(Mapper(spec), stored)
    return state_diff(registry, descriptors, values_of(stored), exact)
