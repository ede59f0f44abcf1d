"""Which route delivers an entity's snapshot, and how the API route splits it into batches.

CareCloud's upload guide: more than 5000 records go as a file; otherwise the Portal API takes
them in batches of at most 1000. The decision is made per entity per day, recorded in the
manifest, and made even while the API route is disabled (it then falls back to the file), so
the rule is tested before the Portal API client exists.

Batches are contiguous, full except the last, and depend only on the count: the same records
in the same order always give the same batches, so a retried batch carries the same records
(and, with them, the same idempotency key).
"""

from __future__ import annotations

from enum import StrEnum

from connector.snapshot.exceptions import SnapshotArgumentError, SnapshotConfigError

__all__ = ["API_BATCH_LIMIT", "DEFAULT_FILE_THRESHOLD", "Route", "api_batches", "route_for"]

API_BATCH_LIMIT = 1000
"""CareCloud's maximum records per Portal API request; no setting may exceed it."""
DEFAULT_FILE_THRESHOLD = 5000
"""An entity with more records than this goes as a file."""


class Route(StrEnum):
    """How one entity's snapshot reaches CareCloud on one day (a manifest value)."""

    FILE = "file"
    API = "api"


def route_for(
    record_count: int,
    *,
    file_threshold: int = DEFAULT_FILE_THRESHOLD,
    api_enabled: bool = True,
    previous: Route | None = None,
    api_return_below: int | None = None,
) -> Route:
    """``FILE`` for more than ``file_threshold`` records, else ``API`` (``FILE`` if the API is off).

    Exactly ``file_threshold`` records go by API. Zero records also go by API, as zero batches:
    the manifest still records the entity with a count of 0. With hysteresis (issue 17): an
    entity whose last delivery was a file (``previous``) stays a file while it has at least
    ``api_return_below`` records, so a count hovering around the threshold does not switch
    routes from day to day; above ``file_threshold`` it is a file whatever came before.
    """
    if record_count < 0:
        raise SnapshotArgumentError("record_count must not be negative")
    if file_threshold < 0:
        raise SnapshotConfigError("file_threshold must not be negative")
    lower = file_threshold if api_return_below is None else api_return_below
    if not 0 <= lower <= file_threshold:
        raise SnapshotConfigError("api_return_below must be between 0 and file_threshold")
    if record_count > file_threshold or not api_enabled:
        return Route.FILE
    if previous is Route.FILE and record_count >= lower:
        return Route.FILE
    return Route.API


def api_batches(count: int, batch_size: int = API_BATCH_LIMIT) -> list[range]:
    """Index ranges covering ``range(count)`` exactly once, in order, each 1..``batch_size`` long.

    ``batch_size`` above ``API_BATCH_LIMIT`` is a ``SnapshotConfigError``: CareCloud refuses
    larger requests, so it is caught at start-up rather than on the first oversized call.
    """
    if not 1 <= batch_size <= API_BATCH_LIMIT:
        raise SnapshotConfigError(f"batch_size must be between 1 and {API_BATCH_LIMIT} (CareCloud's limit)")
    if count < 0:
        raise SnapshotArgumentError("count must not be negative")
    return [range(first, min(first + batch_size, count)) for first in range(0, count, batch_size)]
