"""What a snapshot run is given and what it returns: ``RunConfig``, ``RunResult``, ``Outcome``.

Apart from the run (``connector.snapshot.run``, which re-exports them) so its helpers, the
scheduler and the commands can name them without the run's machinery.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

from connector.snapshot.checks import OrphanPolicy
from connector.snapshot.manifest import EntityResult, Manifest
from connector.snapshot.schedule import Schedule

__all__ = ["Outcome", "RunConfig", "RunResult"]


class Outcome(StrEnum):
    """A run's outcome (a metric label)."""

    PUBLISHED = "published"
    """Manifest written; every entity delivered."""
    PARTIAL = "partial"
    """Manifest written; some entity blocked by a check or refused by its route."""
    ALREADY_PUBLISHED = "already_published"
    """The date had a manifest: nothing done."""
    HELD = "held"
    """No manifest yet: an entity is blocked or refused, and the date waits until its decision
    time for an override or a fix (``RunResult.decide_by``); what is delivered stays delivered."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What a run needs besides its storage and the state (from ``SnapshotSettings``)."""

    state_topic: str
    prefix: str = "carecloud"
    format: str = "csv"
    gzip_level: int = 6
    file_threshold: int = 5000
    api_return_below: int | None = None
    """An entity last delivered as a file stays a file down to this count (None: no hysteresis)."""
    orphan_policy: OrphanPolicy = OrphanPolicy.HOLD_OUT
    max_drop_ratio: float = 0.5
    max_change_ratio: float = 0.5
    """Block an entity when more of its last delivery changed or went (``checks.change_check``)."""
    lease_ttl: dt.timedelta = dt.timedelta(minutes=10)
    owner: str = "carecloud-connector"
    work_dir: Path | None = None
    schedule: Schedule | None = None
    """The daily window: with a decision time, a date with an entity blocked or refused waits
    for an override or a fix until then (``Outcome.HELD``); None publishes at once."""
    fast_path: Literal["auto", "on", "off"] = "auto"
    """Read the cut with the compiled spill and write CSV with the compiled writer
    (``CompiledStateReader``, docs/decisions/0013): auto when the extension is installed."""
    transaction_tables: frozenset[str] | None = None
    """With transaction tracking (the mapping's ``transactions.topic``): the source tables the
    mapping consumes, whose events a transaction must have wholly in the state to be delivered
    (``connector.snapshot.transactions``); None: tracking off."""
    mapping_topic: str | None = None
    """The mapping registry (``CARECLOUD_INGEST_MAPPING_TOPIC``): the current mapping version of
    each entity and what rows without one are under; None: rows are tallied by version and a mix
    still blocks, without naming the current version."""
    mapping_policy: Literal["hold", "wait"] = "hold"
    """``CARECLOUD_SNAPSHOT_MAPPING_POLICY`` (``connector.snapshot.mapping_check``): ``wait`` is
    the cut's (``service.build_run``); at the cut both hold a mixed entity."""
    transaction_horizon_s: int = 0
    """The ledger's purge horizon (``CARECLOUD_INGEST_TRANSACTION_LEDGER_PURGE_AFTER_S``):
    transactions older than half of it are reported, not held; 0: every one is judged."""


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: Outcome
    day: dt.date
    manifest_key: str
    manifest: Manifest | None
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent per phase (cut, read, plan, deliver, publish) by this run."""
    decide_by: dt.datetime | None = None
    """``HELD``: until when the date waits before its manifest is written without the entity."""
    pending: tuple[EntityResult, ...] = ()
    """``HELD``: every entity's result so far, as the manifest would list them."""
