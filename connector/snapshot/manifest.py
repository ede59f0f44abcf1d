"""The manifest: written last, it is what makes a snapshot date exist for a reader.

A reader (CareCloud's ingest, the next day's count check, the demo) trusts a date only when
``<prefix>/<date>/_manifest.json`` exists, and then trusts exactly the files it names, with the
record count, size and sha256 it gives. The manifest is created with a conditional write
(create-if-absent), so a stale writer can never replace a published one. It holds no record
values and no EntityIds (those are in the operator's ``_report.json``); only counts, keys,
checksums, the Kafka cut, the lag at the cut and the checks' results.

``RunRecord`` is the date's pinned cut (``_run.json``), written once before any file: every
run of the date, including one resumed after a crash, reads the state up to the same offsets
and therefore writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from connector.model import ENTITY_NAMES
from connector.sinks.keys import MANIFEST_NAME
from connector.sinks.storage import Storage

__all__ = [
    "MANIFEST_VERSION",
    "EntityResult",
    "Manifest",
    "RunRecord",
    "delivered_counts",
    "last_deliveries",
    "latest_manifest_before",
]

MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The date's pinned cut, lag at the cut and snapshot id (``_run.json``)."""

    snapshot_id: str
    day: dt.date
    cut: dict[str, Any]
    """``Cut.as_json()``: state topic, one end offset per partition, when it was taken."""
    lag: dict[str, Any]
    """Ingest lag measured just before the cut: total, per partition, how long it waited."""

    def to_bytes(self) -> bytes:
        return orjson.dumps({**asdict(self), "day": self.day.isoformat()}, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_bytes(cls, data: bytes) -> RunRecord:
        raw = orjson.loads(data)
        return cls(raw["snapshot_id"], dt.date.fromisoformat(raw["day"]), raw["cut"], raw["lag"])


@dataclass(frozen=True, slots=True)
class EntityResult:
    """What happened to one entity in one run; the manifest lists them parents first."""

    entity: str
    status: str
    """``delivered``, ``blocked`` (a check held it back) or ``failed`` (its route refused it)."""
    route: str
    """``file`` or ``api``: CareCloud's rule applied to ``records`` (decided even when blocked)."""
    records: int
    """Records delivered (or that would have been): live, complete, not held out."""
    schema_fingerprint: str
    held_out: int = 0
    """Orphans and incomplete rows left out; listed by EntityId in the report."""
    reason: str | None = None
    """Why blocked or failed, in words without record values."""
    storage: str | None = None
    """``s3``, ``sftp`` (file route)."""
    key: str | None = None
    format: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    api: dict[str, Any] | None = None
    """API route: session id, batches, records and checksum the Portal acknowledged."""
    changes: dict[str, Any] | None = None
    """Against the entity's last delivery: ``since`` (its date), added, removed, changed,
    unchanged (``digest.Changes``); None when there was no digest to compare with."""
    digest: dict[str, Any] | None = None
    """The delivered set's digest (delivered entities only): ``key``, ``day``, ``version``,
    ``records``; what the next delivery compares with."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """One published snapshot date."""

    snapshot_id: str
    day: dt.date
    created_at: dt.datetime
    cut: dict[str, Any]
    lag: dict[str, Any]
    checks: dict[str, Any]
    """Counts only (orphans, incomplete, count change per entity); EntityIds are in ``report``."""
    entities: tuple[EntityResult, ...]
    report: str
    """Key of the operator's report object."""
    version: int = MANIFEST_VERSION
    amended_from: str | None = field(default=None)
    """The etag of the manifest this one replaced (an operator's override re-run), else None."""

    def to_bytes(self) -> bytes:
        body = asdict(self)
        body["day"] = self.day.isoformat()
        body["created_at"] = self.created_at.isoformat()
        return orjson.dumps(body, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        raw = orjson.loads(data)
        return cls(
            raw["snapshot_id"],
            dt.date.fromisoformat(raw["day"]),
            dt.datetime.fromisoformat(raw["created_at"]),
            raw["cut"],
            raw["lag"],
            raw["checks"],
            tuple(EntityResult(**entity) for entity in raw["entities"]),
            raw["report"],
            raw.get("version", MANIFEST_VERSION),
            raw.get("amended_from"),
        )

    def entity(self, name: str) -> EntityResult | None:
        return next((result for result in self.entities if result.entity == name), None)


def delivered_counts(manifest: Manifest) -> dict[str, int]:
    """Records delivered per entity: the baseline of the next day's count check."""
    return {result.entity: result.records for result in manifest.entities if result.status == "delivered"}


def latest_manifest_before(storage: Storage, prefix: str, day: dt.date) -> Manifest | None:
    """The newest published manifest of a date before ``day`` (dates sort as ISO strings)."""
    return next(_manifests_before(storage, prefix, day), None)


def last_deliveries(storage: Storage, prefix: str, day: dt.date) -> dict[str, EntityResult]:
    """Per entity, its newest *delivery* before ``day``, however far back.

    The count gate compares against its records, and routing hysteresis reads its route.
    Taking only the latest manifest's delivered entities let a gate lift itself: an entity
    blocked on day D had no baseline on D+1 and went through, children and all (issue 17).
    Now a blocked entity keeps its last delivered count as the baseline, so it stays blocked
    on every later date until a person overrides it. Manifests are read newest first and only
    until every entity has been found; an entity never delivered is absent.
    """
    found: dict[str, EntityResult] = {}
    for manifest in _manifests_before(storage, prefix, day):
        for result in manifest.entities:
            if result.status == "delivered":
                found.setdefault(result.entity, result)
        if len(found) == len(ENTITY_NAMES):
            break
    return found


def _manifests_before(storage: Storage, prefix: str, day: dt.date) -> Iterator[Manifest]:
    """Published manifests of dates before ``day``, newest first."""
    root = f"{prefix}/" if prefix else ""
    dated: list[tuple[str, str]] = []
    for key in storage.list_keys(root):
        rest = key[len(root) :]
        date_part, _, name = rest.partition("/")
        if name == MANIFEST_NAME and date_part < day.isoformat():
            dated.append((date_part, key))
    for _, key in sorted(dated, reverse=True):
        found = storage.get(key)
        if found is not None:
            yield Manifest.from_bytes(found[0])
