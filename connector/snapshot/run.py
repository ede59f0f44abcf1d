"""The daily snapshot run: lease, cut, checks, files (and API batches), manifest last.

``SnapshotRun.run(day)`` publishes one date. Its steps, in order, each safe to repeat:

1. Take the date's lease (``lease.py``); another live owner means ``LeaseBusyError``.
2. If the date's manifest exists the date is published: nothing to do (idempotent re-run).
3. Clear debris of an interrupted run (incomplete multipart uploads, temporary files).
4. Pin the cut: the first run of a date measures the ingest lag (waiting per the policy,
   bounded by the deadline), takes the cut (one end offset per state partition) and stores it
   in ``_run.json`` with a create-if-absent write. Every later run of the date, including one
   resumed after a crash, reads that record and uses the same cut, so it writes the same bytes.
5. Read the state as of the cut into an on-disk copy (``CompiledStateReader``, an external
   merge sort in the extension; ``StateReader`` over RocksDB without it: docs/decisions/0013).
6. Plan: orphans, incomplete rows, count change against each entity's last delivery, routing,
   and what each entity's set changed since its last delivery (its digest compared with the
   stored one: ``digest.py``); a jump in changes blocks like a drop in count.
7. Write the operator's report (with EntityIds) beside the snapshot.
8. Deliver entities parents first. File route: stream format → gzip → storage, visible only
   when complete; a file already stored by this cut (same snapshot id, sha256 known) is kept,
   so a resumed run does not upload it again. API route: the Portal client, which resumes its
   own session. A route that refuses an entity fails that entity, not the run.
   A delivered entity's digest is stored beside its file, for the next delivery to compare.
9. Verify every file (size and sha256 as stored), check the lease is still ours, and create
   the manifest with a create-if-absent write: it is the last object, and it is never replaced
   by a stale writer.

No step logs record values or EntityIds: logs get counts, keys and positions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from connector._fastpath import fastpath_available
from connector.errors import ConnectorError, TransientError
from connector.model import fingerprint
from connector.ops.metrics import Metrics
from connector.sinks.exceptions import PortalAuthError, PreconditionFailedError
from connector.sinks.formats import FORMATS, GZIP_CONTENT_TYPE, gzip_chunks
from connector.sinks.keys import control_key, day_prefix, manifest_key, object_key
from connector.sinks.storage import Storage
from connector.snapshot._pipeline import in_background
from connector.snapshot.checks import OrphanPolicy
from connector.snapshot.compiled_cut import CompiledStateReader
from connector.snapshot.cut import Cut, StateReader
from connector.snapshot.digest import DeliveryDigests
from connector.snapshot.exceptions import (
    LeaseBusyError,
    RunStoppedError,
    SnapshotArgumentError,
    SnapshotConfigError,
)
from connector.snapshot.files import entity_file
from connector.snapshot.lag import Lag
from connector.snapshot.lease import Lease
from connector.snapshot.manifest import (
    EntityResult,
    Manifest,
    RunRecord,
    last_deliveries,
)
from connector.snapshot.pending import delivered_earlier, hold
from connector.snapshot.plan import EntityPlan, Plan, make_plan
from connector.snapshot.routing import Route
from connector.snapshot.schedule import Schedule, decision_instant

__all__ = ["ApiRoute", "Outcome", "RunConfig", "RunResult", "SnapshotRun"]

log = logging.getLogger(__name__)
_JSON = "application/json"


class ApiReceipt(Protocol):
    """What the Portal acknowledged for one entity (``connector.sinks.portal.ApiDelivery``)."""

    def as_manifest(self) -> dict[str, Any]: ...


class ApiRoute(Protocol):
    """The Portal API route (``connector.snapshot.service.PortalRoute`` over ``PortalClient``)."""

    def deliver(
        self, entity: str, day: dt.date, records: Iterable[Mapping[str, Any]], count: int, *, snapshot_id: str
    ) -> ApiReceipt:
        """Deliver one complete entity set, committed whole, or raise."""
        ...


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


class SnapshotRun:
    """Publishes snapshot dates to one storage from the state topic."""

    def __init__(
        self,
        config: RunConfig,
        kafka: dict[str, Any],
        storage: Storage,
        *,
        take_cut: Callable[[dt.date], tuple[Cut, Lag]],
        api: ApiRoute | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        metrics: Metrics | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """``stop``: set when the process is stopping; the run then leaves between two entities
        (``RunStoppedError``) and releases its lease on the way out."""
        if config.format not in FORMATS:
            raise SnapshotArgumentError(f"unknown file format {config.format!r}")
        self._compiled = False
        if config.fast_path != "off":
            missing = fastpath_available()
            if missing is not None and config.fast_path == "on":
                raise SnapshotConfigError(f"CARECLOUD_SNAPSHOT_FAST_PATH=on, but {missing}")
            if missing is not None:
                log.warning(
                    "compiled snapshot reader unavailable; reading in Python", extra={"reason": missing}
                )
            self._compiled = missing is None
        self._config, self._kafka, self._storage = config, kafka, storage
        self._take_cut, self._api, self._clock = take_cut, api, clock
        self._metrics, self._stop = metrics, stop
        self._api_refused: str | None = None

    def _check_stop(self, day: dt.date) -> None:
        """A safe point: nothing of an entity is half sent here (a file is complete or not
        started, a Portal session resumes at its first unacknowledged batch)."""
        if self._stop is not None and self._stop.is_set():
            raise RunStoppedError(f"snapshot {day}: stopped for shutdown; it resumes from its pinned cut")

    def run(self, day: dt.date, *, overrides: Iterable[str] = (), final: bool = False) -> RunResult:
        """Publish ``day`` (steps 1-9 of the module docstring); ``overrides`` lift the count and
        change gates; ``final`` writes the manifest now even before the decision time."""
        cfg = self._config
        published = self._published(day)
        if published is not None:  # checked before the lease too, so a re-run writes nothing at all
            return published
        lease = Lease(
            self._storage, control_key(cfg.prefix, day, "_lease.json"), cfg.owner, cfg.lease_ttl, self._clock
        )
        if not lease.acquire():
            raise LeaseBusyError(
                f"snapshot {day} is being run by {lease.holder.owner if lease.holder else 'another pod'}"
            )
        lease.keep_renewed()
        try:
            return self._publish(day, lease, frozenset(overrides), final)
        finally:
            lease.release()

    def _publish(self, day: dt.date, lease: Lease, overrides: frozenset[str], final: bool) -> RunResult:
        cfg = self._config
        self._api_refused = None
        key = manifest_key(cfg.prefix, day)
        published = self._published(day)
        if published is not None:
            return published
        debris = self._storage.abort_incomplete(day_prefix(cfg.prefix, day))
        if debris:
            log.info("removed %d incomplete upload(s) of an interrupted run of %s", debris, day)
        phases: dict[str, float] = {}
        with _timed(phases, "cut"):
            record = self._pin_cut(day)
            last = last_deliveries(self._storage, cfg.prefix, day)
            earlier = delivered_earlier(self._storage, cfg.prefix, day, record.snapshot_id)
        with self._reader(Cut.from_json(record.cut)) as state, DeliveryDigests(self._storage, cfg) as digests:
            with _timed(phases, "read"):
                read = state.load()
            log.info("snapshot %s: read %d state records up to the cut", day, read)
            with _timed(phases, "plan"):
                plan = make_plan(
                    state,
                    policy=cfg.orphan_policy,
                    previous={entity: result.records for entity, result in last.items()} or None,
                    previous_routes={entity: Route(result.route) for entity, result in last.items()},
                    api_return_below=cfg.api_return_below,
                    max_drop_ratio=cfg.max_drop_ratio,
                    overrides=overrides,
                    file_threshold=cfg.file_threshold,
                    api_enabled=self._api is not None,
                    changes=digests.differ(state, last),
                    max_change_ratio=cfg.max_change_ratio,
                )
                report = self._write_report(day, record, plan)
            with _timed(phases, "deliver"):
                results = []
                for entity_plan in plan.entities:
                    self._check_stop(day)
                    lease.check()
                    if entity_plan.entity in earlier:  # delivered by an earlier run of this cut
                        results.append(earlier[entity_plan.entity])
                        continue
                    result = self._deliver(day, record, entity_plan, state)
                    results.append(digests.store(day, result))
        decide_by = None if final or cfg.schedule is None else decision_instant(cfg.schedule, day)
        if (
            decide_by is not None
            and self._clock() < decide_by
            and any(r.status != "delivered" for r in results)
        ):
            return self._hold(day, record, plan, results, decide_by, phases)
        with _timed(phases, "publish"):
            self._verify(results)
            self._check_stop(day)
            lease.check()
            manifest = Manifest(
                record.snapshot_id,
                day,
                self._clock(),
                record.cut,
                record.lag,
                plan.checks_json(),
                tuple(results),
                report,
            )
        try:
            with _timed(phases, "publish"):
                self._storage.put_bytes(key, manifest.to_bytes(), content_type=_JSON, if_none_match=True)
        except PreconditionFailedError:
            log.warning("snapshot %s was published by another run meanwhile; keeping that manifest", day)
            found = self._storage.get(key)
            return RunResult(
                Outcome.ALREADY_PUBLISHED, day, key, Manifest.from_bytes(found[0]) if found else None
            )
        outcome = Outcome.PUBLISHED if all(r.status == "delivered" for r in results) else Outcome.PARTIAL
        self._report(manifest, plan, phases)
        log.info("snapshot %s published (%s): %s", day, outcome.value, {r.entity: r.records for r in results})
        return RunResult(outcome, day, key, manifest, phases)

    def _reader(self, cut: Cut) -> StateReader | CompiledStateReader:
        if self._config.work_dir is not None:  # a fresh volume (or a first run) has none yet
            self._config.work_dir.mkdir(parents=True, exist_ok=True)
        if self._compiled:
            return CompiledStateReader(self._kafka, cut, self._config.work_dir)
        return StateReader(self._kafka, cut, self._config.work_dir)

    def _hold(
        self,
        day: dt.date,
        record: RunRecord,
        plan: Plan,
        results: list[EntityResult],
        decide_by: dt.datetime,
        phases: dict[str, float],
    ) -> RunResult:
        """Keep the date open (``pending.hold``): no manifest, so an override or a fix before
        ``decide_by`` can still make tonight's delivery complete."""
        hold(self._storage, self._config.prefix, day, record.snapshot_id, results, decide_by, self._clock())
        self._report_plan(plan)
        key = manifest_key(self._config.prefix, day)
        return RunResult(Outcome.HELD, day, key, None, phases, decide_by=decide_by, pending=tuple(results))

    def _report_plan(self, plan: Plan) -> None:
        """The plan's metrics: entity counts and what changed, blocked entities included."""
        if self._metrics is None:
            return
        for entity_plan in plan.entities:
            self._metrics.set_state_entities(entity_plan.entity, entity_plan.records)
            if (changes := entity_plan.changes) is not None:
                self._metrics.set_changes(entity_plan.entity, changes.added, changes.removed, changes.changed)

    def _report(self, manifest: Manifest, plan: Plan, phases: dict[str, float]) -> None:
        """Metrics of a published run: counts and sizes only (label values are fixed names)."""
        if self._metrics is None:
            return
        self._metrics.observe_phases(phases)
        self._report_plan(plan)
        for result in manifest.entities:
            if result.status != "delivered":
                continue
            route = "api" if result.api is not None else result.storage or self._storage.name
            self._metrics.delivered(route, result.entity, result.records, result.bytes or 0)
            self._metrics.delivery_succeeded(result.entity, manifest.created_at)

    def _published(self, day: dt.date) -> RunResult | None:
        key = manifest_key(self._config.prefix, day)
        existing = self._storage.get(key)
        if existing is None:
            return None
        log.info("snapshot %s is already published; nothing to do", day)
        return RunResult(Outcome.ALREADY_PUBLISHED, day, key, Manifest.from_bytes(existing[0]))

    def _pin_cut(self, day: dt.date) -> RunRecord:
        """The date's cut: the one already pinned, else a new one pinned with create-if-absent."""
        key = control_key(self._config.prefix, day, "_run.json")
        found = self._storage.get(key)
        if found is not None:
            log.info("snapshot %s resumes at its pinned cut", day)
            return RunRecord.from_bytes(found[0])
        cut, lag = self._take_cut(day)
        record = RunRecord(uuid.uuid4().hex, day, cut.as_json(), lag.as_json())
        try:
            self._storage.put_bytes(key, record.to_bytes(), content_type=_JSON, if_none_match=True)
        except PreconditionFailedError:  # another run pinned it first: use theirs, so bytes agree
            found = self._storage.get(key)
            if found is None:
                raise TransientError(f"the pinned cut {key} vanished while being read") from None
            return RunRecord.from_bytes(found[0])
        log.info("snapshot %s: cut taken, ingest lag %d event(s)", day, lag.total)
        return record

    def _write_report(self, day: dt.date, record: RunRecord, plan: Plan) -> str:
        key = control_key(self._config.prefix, day, "_report.json")
        body = {"snapshot_id": record.snapshot_id, "day": day.isoformat(), **plan.report_json()}
        self._storage.put_bytes(key, orjson.dumps(body, option=orjson.OPT_INDENT_2), content_type=_JSON)
        return key

    def _deliver(
        self, day: dt.date, record: RunRecord, plan: EntityPlan, state: StateReader | CompiledStateReader
    ) -> EntityResult:
        base = EntityResult(
            plan.entity,
            "delivered",
            plan.route.value,
            plan.records,
            fingerprint(plan.entity),
            held_out=len(plan.held_out),
            changes=plan.changes.as_json() if plan.changes is not None else None,
        )
        if plan.blocked_because is not None:
            log.warning("snapshot %s: %s blocked (%s)", day, plan.entity, plan.blocked_because)
            return replace(base, status="blocked", reason=plan.blocked_because)
        held_out = plan.held_out
        if plan.route is Route.API and self._api is not None:
            records = (
                values for entity_id, values in state.entities(plan.entity) if entity_id not in held_out
            )
            if self._api_refused is not None:  # the key was refused: no entity can go by API
                return replace(base, status="failed", reason=self._api_refused)
            try:
                delivery = self._api.deliver(
                    plan.entity, day, records, plan.records, snapshot_id=record.snapshot_id
                )
            except TransientError:
                raise  # Portal away: no manifest; the scheduler retries, resuming the sessions
            except ConnectorError as exc:  # refused for this entity: the others go on
                # The class and status only: the message is in the manifest's reason.
                log.error(
                    "snapshot %s: refused by the Portal API",
                    day,
                    extra={
                        "entity": plan.entity,
                        "error": type(exc).__name__,
                        "status": getattr(exc, "status", None),
                    },
                )
                if isinstance(exc, PortalAuthError):
                    self._api_refused = str(exc)
                return replace(base, status="failed", reason=str(exc))
            return replace(base, api=delivery.as_manifest())
        return self._write_file(day, record, plan, self._file(plan.entity, held_out, state), base)

    def _file(
        self, entity: str, held_out: frozenset[str], state: StateReader | CompiledStateReader
    ) -> Iterator[bytes]:
        """The entity's file, uncompressed, in chunks."""
        return entity_file(FORMATS[self._config.format], entity, held_out, state)

    def _write_file(
        self,
        day: dt.date,
        record: RunRecord,
        plan: EntityPlan,
        file: Iterator[bytes],
        base: EntityResult,
    ) -> EntityResult:
        cfg = self._config
        fmt = FORMATS[cfg.format]
        key = object_key(cfg.prefix, day, plan.entity, fmt)
        meta = {"snapshot-id": record.snapshot_id, "records": str(plan.records)}
        stored = self._storage.stat(key)
        if stored is None or stored.sha256 is None or dict(stored.metadata) != meta:
            # Three stages on their own threads: formatting, compression (itself on two), and
            # the upload here, so compression goes on while a part is being sent.
            compressed = gzip_chunks(in_background(file), cfg.gzip_level)
            stored = self._storage.put_stream(
                key,
                in_background(compressed, depth=16, name="snapshot-gzip"),
                content_type=GZIP_CONTENT_TYPE,
                metadata=meta,
            )
            log.info(
                "snapshot %s: %s file written (%d records, %d bytes)",
                day,
                plan.entity,
                plan.records,
                stored.size,
                extra={"key": key},
            )
        else:
            log.info(
                "snapshot %s: %s file already written by this cut; kept", day, plan.entity, extra={"key": key}
            )
        return replace(
            base,
            storage=self._storage.name,
            key=key,
            format=fmt.name,
            bytes=stored.size,
            sha256=stored.sha256,
        )

    def _verify(self, results: list[EntityResult]) -> None:
        """Every file the manifest will name is there, whole, with the size and sha256 it will say."""
        for result in results:
            if result.key is None:
                continue
            stored = self._storage.stat(result.key)
            if stored is None or stored.size != result.bytes or stored.sha256 != result.sha256:
                raise TransientError(f"{result.key} is not stored as written; the manifest is not published")


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.monotonic() - started
