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
7. Write the operator's report (with EntityIds) beside the snapshot (``run_report.py``, which
   also keeps the run's metrics).
8. Deliver entities parents first (``delivery.py``). File route: stream format → gzip →
   storage, visible only when complete; a file already stored by this cut (same snapshot id,
   sha256 known) is kept, so a resumed run does not upload it again. API route: the Portal
   client, which resumes its own session. A route that refuses an entity fails that entity,
   not the run. A delivered entity's digest is stored beside its file, for the next delivery
   to compare.
9. Verify every file (size and sha256 as stored: ``delivery.verify``), check the lease is still
   ours, and create the manifest with a create-if-absent write: it is the last object, and it
   is never replaced by a stale writer.

No step logs record values or EntityIds: logs get counts, keys and positions. What a run is
given and returns (``RunConfig``, ``RunResult``, ``Outcome``) is in ``run_config.py``, re-exported
here.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from connector._fastpath import fastpath_available
from connector.errors import TransientError
from connector.ops.metrics import Metrics
from connector.sinks.exceptions import PreconditionFailedError
from connector.sinks.formats import FORMATS
from connector.sinks.keys import control_key, day_prefix, manifest_key
from connector.sinks.storage import Storage
from connector.snapshot.compiled_cut import CompiledStateReader
from connector.snapshot.cut import Cut, StateReader
from connector.snapshot.delivery import ApiRoute, Deliveries, verify
from connector.snapshot.digest import DeliveryDigests
from connector.snapshot.exceptions import (
    LeaseBusyError,
    RunStoppedError,
    SnapshotArgumentError,
    SnapshotConfigError,
)
from connector.snapshot.lag import Lag
from connector.snapshot.lease import Lease
from connector.snapshot.manifest import EntityResult, Manifest, RunRecord, last_deliveries
from connector.snapshot.mapping_check import MappingCheck, check_mapping
from connector.snapshot.pending import delivered_earlier, hold
from connector.snapshot.plan import Plan, make_plan
from connector.snapshot.routing import Route
from connector.snapshot.run_config import Outcome, RunConfig, RunResult
from connector.snapshot.run_report import JSON, report_plan, report_published, timed, write_report
from connector.snapshot.schedule import decision_instant
from connector.snapshot.transactions import TxCheck, check_transactions
from connector.state.mapping_registry import Registry, read_registry

__all__ = ["ApiRoute", "Outcome", "RunConfig", "RunResult", "SnapshotRun"]

log = logging.getLogger(__name__)


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
        key = manifest_key(cfg.prefix, day)
        published = self._published(day)
        if published is not None:
            return published
        debris = self._storage.abort_incomplete(day_prefix(cfg.prefix, day))
        if debris:
            log.info("removed %d incomplete upload(s) of an interrupted run of %s", debris, day)
        phases: dict[str, float] = {}
        with timed(phases, "cut"):
            record = self._pin_cut(day)
            last = last_deliveries(self._storage, cfg.prefix, day)
            earlier = delivered_earlier(self._storage, cfg.prefix, day, record.snapshot_id)
        with self._reader(Cut.from_json(record.cut)) as state, DeliveryDigests(self._storage, cfg) as digests:
            with timed(phases, "read"):
                read = state.load()
            log.info("snapshot %s: read %d state records up to the cut", day, read)
            sweep = state.sweep_json()  # what a completed re-snapshot swept (connector.state.sweep)
            if sweep["swept"] or sweep["waiting"]:
                log.info("snapshot %s: rows a re-snapshot did not read swept: %s", day, sweep)
            if self._metrics is not None:
                self._metrics.set_sweep(sweep["swept"], sum(sweep["waiting"].values()))
            with timed(phases, "plan"):
                transactions = self._transactions(state, Cut.from_json(record.cut))
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
                    transactions=transactions,
                    mapping=self._mapping(state),
                )
                report = write_report(self._storage, cfg.prefix, day, record, plan)
            with timed(phases, "deliver"):
                deliveries = Deliveries(cfg, self._storage, self._api, day, record, state)
                results = []
                for entity_plan in plan.entities:
                    self._check_stop(day)
                    lease.check()
                    if entity_plan.entity in earlier:  # delivered by an earlier run of this cut
                        results.append(earlier[entity_plan.entity])
                        continue
                    result = deliveries.deliver(entity_plan)
                    results.append(digests.store(day, result))
        decide_by = None if final or cfg.schedule is None else decision_instant(cfg.schedule, day)
        if (
            decide_by is not None
            and self._clock() < decide_by
            and any(r.status != "delivered" for r in results)
        ):
            return self._hold(day, record, plan, results, decide_by, phases)
        with timed(phases, "publish"):
            verify(self._storage, results)
            self._check_stop(day)
            lease.check()
            manifest = Manifest(
                record.snapshot_id,
                day,
                self._clock(),
                record.cut,
                record.lag,
                plan.checks_json() | ({"sweep": sweep} if sweep["generations"] or sweep["waiting"] else {}),
                tuple(results),
                report,
            )
        try:
            with timed(phases, "publish"):
                self._storage.put_bytes(key, manifest.to_bytes(), content_type=JSON, if_none_match=True)
        except PreconditionFailedError:
            log.warning("snapshot %s was published by another run meanwhile; keeping that manifest", day)
            found = self._storage.get(key)
            return RunResult(
                Outcome.ALREADY_PUBLISHED, day, key, Manifest.from_bytes(found[0]) if found else None
            )
        outcome = Outcome.PUBLISHED if all(r.status == "delivered" for r in results) else Outcome.PARTIAL
        report_published(self._metrics, self._storage, manifest, plan, phases)
        log.info("snapshot %s published (%s): %s", day, outcome.value, {r.entity: r.records for r in results})
        return RunResult(outcome, day, key, manifest, phases)

    def _transactions(self, state: StateReader | CompiledStateReader, cut: Cut) -> TxCheck | None:
        """The cut's source transactions judged, with tracking on (``snapshot.transactions``):
        as of the cut's own time, so a resumed run holds out the same rows."""
        cfg = self._config
        if cfg.transaction_tables is None:
            return None
        check = check_transactions(
            state.reserved(),
            tables=cfg.transaction_tables,
            now=cut.taken_at,
            horizon_s=cfg.transaction_horizon_s,
        )
        if self._metrics is not None:
            self._metrics.set_incomplete_transactions(len(check.incomplete), len(check.expired))
        if check.incomplete or check.expired:
            log.warning(
                "source transactions incomplete at the cut: their rows are held out",
                extra={
                    "incomplete": len(check.incomplete),
                    "expired": len(check.expired),
                    "tracked": check.tracked,
                },
            )
        return check

    def _mapping(self, state: StateReader | CompiledStateReader) -> MappingCheck:
        """The cut's rows by mapping version (``snapshot.mapping_check``), rows without one
        resolved through the mapping registry; a mixed entity is blocked by the plan."""
        topic = self._config.mapping_topic
        registry = read_registry(self._kafka, topic) if topic else Registry()
        current = {entity: d.version for entity, d in registry.current.items()}
        check = check_mapping(state, current, registry.unversioned)
        if self._metrics is not None:
            for entity in check.versions:
                self._metrics.set_older_mapping_rows(entity, check.older(entity))
        for entity in sorted(check.mixed()):
            log.warning(
                "an entity's rows span mapping versions: blocked until re-mapped",
                extra={
                    "entity": entity,
                    "versions": len(check.versions[entity]),
                    "older": check.older(entity),
                },
            )
        return check

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
        report_plan(self._metrics, plan)
        key = manifest_key(self._config.prefix, day)
        return RunResult(Outcome.HELD, day, key, None, phases, decide_by=decide_by, pending=tuple(results))

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
            self._storage.put_bytes(key, record.to_bytes(), content_type=JSON, if_none_match=True)
        except PreconditionFailedError:  # another run pinned it first: use theirs, so bytes agree
            found = self._storage.get(key)
            if found is None:
                raise TransientError(f"the pinned cut {key} vanished while being read") from None
            return RunRecord.from_bytes(found[0])
        log.info("snapshot %s: cut taken, ingest lag %d event(s)", day, lag.total)
        return record
