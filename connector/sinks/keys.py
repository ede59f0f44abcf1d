"""Deterministic object keys: one per entity per snapshot date, and the date's manifest.

The key depends only on the prefix, the snapshot date, the entity and the format, never on the
time or a run id, so a retried or resumed run overwrites the same objects instead of adding
new ones; earlier dates live under their own date and are kept::

    <prefix>/<YYYY-MM-DD>/<Entity>.<ext>.gz      e.g. carecloud/2026-03-08/Claim.csv.gz
    <prefix>/<YYYY-MM-DD>/_manifest.json         written last; a date without it is not published
    <prefix>/<YYYY-MM-DD>/_report.json           the checks' report (orphans by EntityId), before it
    <prefix>/<YYYY-MM-DD>/_run.json              the date's pinned cut: every run of the date uses it
    <prefix>/<YYYY-MM-DD>/_lease.json            who runs the date now, until when
    <prefix>/<YYYY-MM-DD>/_pending.json          a date waiting for a fix: what is delivered so far
    <prefix>/<YYYY-MM-DD>/_digest.<Entity>.bin.gz  a delivered set's digest (snapshot.digest)

The leading underscore sorts the manifest apart from the entity files, which are named after
entities and so never start with one. The same keys are paths below the SFTP root.
"""

from __future__ import annotations

import datetime as dt
import re

from connector.model import ENTITY_NAMES
from connector.sinks.exceptions import SinkConfigError
from connector.sinks.formats import Format

__all__ = ["MANIFEST_NAME", "control_key", "day_prefix", "manifest_key", "object_key"]

MANIFEST_NAME = "_manifest.json"
_CONTROL_NAMES = frozenset({MANIFEST_NAME, "_report.json", "_run.json", "_lease.json", "_pending.json"})
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*")


def object_key(prefix: str, day: dt.date, entity: str, fmt: Format) -> str:
    """``<prefix>/<YYYY-MM-DD>/<Entity>.<ext>.gz``: the key of one entity's gzipped file."""
    if entity not in ENTITY_NAMES:
        raise SinkConfigError(f"unknown entity {entity!r}: expected one of {', '.join(ENTITY_NAMES)}")
    return f"{day_prefix(prefix, day)}{entity}.{fmt.file_extension}.gz"


def manifest_key(prefix: str, day: dt.date) -> str:
    """``<prefix>/<YYYY-MM-DD>/_manifest.json``: the key a reader checks before trusting a date."""
    return f"{day_prefix(prefix, day)}{MANIFEST_NAME}"


def control_key(prefix: str, day: dt.date, name: str) -> str:
    """``<prefix>/<YYYY-MM-DD>/<name>`` for the run's own objects (``_run.json``, ``_lease.json``...)."""
    if name not in _CONTROL_NAMES:
        raise SinkConfigError(f"unknown control object {name!r}")
    return f"{day_prefix(prefix, day)}{name}"


def day_prefix(prefix: str, day: dt.date) -> str:
    """``<prefix>/<YYYY-MM-DD>/``: everything of one snapshot date (for listing and clean-up).

    ``prefix`` is empty (keys start at the bucket's root) or ``/``-separated segments of
    letters, digits and ``. _ = -``, each starting with a letter or digit: no leading or
    trailing ``/``, no empty, ``.`` or ``..`` segment, nothing a shell or URL must escape.
    """
    if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
        raise SinkConfigError("the snapshot day must be a date, not a datetime")
    if prefix and not all(_SEGMENT.fullmatch(segment) for segment in prefix.split("/")):
        raise SinkConfigError(
            "the key prefix must be empty or '/'-separated segments of letters, digits and '._=-', "
            "each starting with a letter or digit (no leading or trailing '/', no '..')"
        )
    return f"{prefix}/{day.isoformat()}/" if prefix else f"{day.isoformat()}/"
