"""Wiring the snapshot from settings: storage, run, scheduler (the edge the CLI calls).

Everything here is construction; behaviour lives in ``run``, ``scheduler`` and the sinks. The
storage is the one file destination the settings choose (S3 or SFTP); the lease, the pinned
cut, the report and the manifest live there too, so one place holds a date's whole story.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from connector.config.exceptions import SettingsError
from connector.config.settings import Settings, sink_problems
from connector.mapping import load_mapping
from connector.ops.metrics import Metrics
from connector.sinks.portal import ApiDelivery
from connector.sinks.storage import Storage
from connector.snapshot.checks import OrphanPolicy
from connector.snapshot.cut import Cut
from connector.snapshot.lag import Lag, cut_when_caught_up
from connector.snapshot.manifest import latest_manifest_before
from connector.snapshot.mapping_check import wait_for_remap
from connector.snapshot.run import ApiRoute, RunConfig, SnapshotRun
from connector.snapshot.schedule import Schedule, decision_instant, run_window
from connector.snapshot.scheduler import Scheduler, SchedulerEvents
from connector.snapshot.transactions import incomplete_below
from connector.state.mapping_registry import read_registry
from connector.state.topics import last_stable_offsets

__all__ = ["PortalRoute", "build_run", "build_scheduler", "build_storage", "schedule_of"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


DECIDE_BEFORE_DEADLINE = dt.timedelta(minutes=30)
"""The default decision time's margin: enough to write a manifest, short of a whole run."""


def schedule_of(settings: Settings) -> Schedule:
    s = settings.snapshot
    decision = s.decision_time
    if decision is None:
        day = dt.date(2000, 1, 2)
        margin = dt.datetime.combine(day, s.deadline) - DECIDE_BEFORE_DEADLINE
        decision = max(s.start, margin.time()) if margin.date() == day else s.start
    return Schedule(s.zone, s.start, s.deadline, decision)


def build_storage(settings: Settings) -> Storage:
    """The configured file destination; ``SettingsError`` names what is missing."""
    problems = sink_problems(settings.snapshot, settings.s3, settings.sftp, settings.portal)
    if problems:
        raise SettingsError(problems)
    if settings.snapshot.sink == "sftp":
        from connector.sinks.sftp import SftpStorage

        sftp = settings.sftp
        host, username, known_hosts = sftp.host, sftp.username, sftp.known_hosts_file
        if host is None or username is None or known_hosts is None:  # sink_problems named them
            raise SettingsError(["CARECLOUD_SFTP_*: host, username and known_hosts_file are required"])
        return SftpStorage(
            host=host,
            port=sftp.port,
            username=username,
            known_hosts=known_hosts,
            root=sftp.root,
            private_key=sftp.private_key_file,
            password=sftp.password,
        )
    from connector.sinks.s3 import S3Storage

    s3 = settings.s3
    if not s3.bucket:  # sink_problems named it
        raise SettingsError(["CARECLOUD_S3_BUCKET: required when CARECLOUD_SNAPSHOT_SINK=s3"])
    return S3Storage(
        s3.bucket,
        region=s3.region,
        endpoint_url=s3.endpoint_url,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
        encryption=s3.sse,
        kms_key_id=s3.kms_key_id,
        part_size=s3.part_size_mb * 1024 * 1024,
    )


class PortalRoute:
    """The Portal client per entity delivery, its waits capped by that day's deadline."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        portal, snapshot = settings.portal, settings.snapshot
        self._metrics = metrics
        if portal.base_url is None or portal.api_key is None:  # sink_problems named them
            raise SettingsError(["CARECLOUD_PORTAL_BASE_URL and CARECLOUD_PORTAL_API_KEY are required"])
        self._url, self._key = portal.base_url, portal.api_key
        self._portal, self._batch_size = portal, snapshot.api_batch_size
        self._schedule = schedule_of(settings)
        self._expected = dt.timedelta(seconds=snapshot.expected_duration_s)

    def _deadline(self, day: dt.date) -> dt.datetime:
        """The day's deadline; for a late or manual run past it, the run's expected duration from now."""
        return max(run_window(self._schedule, day)[1], _now() + self._expected)

    def _observe(self, event: str, status: int | None) -> None:
        if self._metrics is None:
            return
        if event == "response":
            self._metrics.api_response(status)
        else:
            self._metrics.api_retry(status)

    def deliver(
        self, entity: str, day: dt.date, records: Iterable[Mapping[str, Any]], count: int, *, snapshot_id: str
    ) -> ApiDelivery:
        from connector.sinks.portal import PortalClient

        with PortalClient(
            self._url,
            self._key.get_secret_value(),
            batch_size=self._batch_size,
            max_concurrency=self._portal.max_concurrency,
            max_attempts=self._portal.max_attempts,
            timeout=self._portal.timeout_s,
            deadline=self._deadline(day),
            observe=self._observe if self._metrics is not None else None,
        ) as client:
            return client.deliver(entity, day, records, count, snapshot_id=snapshot_id)


def build_run(
    settings: Settings,
    *,
    storage: Storage | None = None,
    api: ApiRoute | None = None,
    clock: Callable[[], dt.datetime] = _now,
    metrics: Metrics | None = None,
    stop: threading.Event | None = None,
) -> SnapshotRun:
    """A run that measures lag and cuts per the settings, publishing to ``storage``; it
    leaves at a safe point once ``stop`` is set.

    The Portal route is on when ``CARECLOUD_SNAPSHOT_API_ENABLED`` is; ``api`` replaces the
    configured client (tests).
    """
    if api is None and settings.snapshot.api_enabled:
        api = PortalRoute(settings, metrics)
    s, ingest = settings.snapshot, settings.ingest
    kafka = settings.kafka.client_config()
    spec = load_mapping(ingest.mapping_file)
    topics = sorted(spec.topics)
    tables = frozenset(spec.tables) if spec.transaction_topic is not None else None
    if spec.transaction_topic is not None:
        topics.append(spec.transaction_topic)  # its END records must be in before the cut too
    horizon_s = ingest.transaction_ledger_purge_after_s
    schedule = schedule_of(settings)
    expected = dt.timedelta(seconds=s.expected_duration_s)

    def incomplete(cut: Cut) -> tuple[int, int]:
        assert tables is not None
        return incomplete_below(kafka, cut, tables=tables, horizon_s=horizon_s)

    def take_cut(day: dt.date) -> tuple[Cut, Lag]:
        if s.mapping_policy == "wait":  # the re-mapping pass first, bounded by the decision time
            bound = run_window(schedule, day)[1] - expected
            decision = decision_instant(schedule, day)
            wait_for_remap(
                lambda: read_registry(kafka, ingest.mapping_topic_name),
                len(last_stable_offsets(kafka, ingest.state_topic)),
                until=bound if decision is None else min(bound, decision),
                clock=clock,
            )
        return cut_when_caught_up(
            kafka,
            state_topic=ingest.state_topic,
            group_id=ingest.group_id,
            source_topics=topics,
            policy=s.lag_policy,
            max_lag=s.max_lag_events,
            wait_until=run_window(schedule, day)[1] - expected,
            clock=clock,
            incomplete=incomplete if tables is not None else None,
        )

    config = RunConfig(
        state_topic=ingest.state_topic,
        prefix=s.prefix,
        format=s.format,
        gzip_level=s.gzip_level,
        file_threshold=s.file_threshold,
        api_return_below=s.api_return_below if s.api_return_below is not None else s.file_threshold * 9 // 10,
        orphan_policy=OrphanPolicy(s.orphan_policy),
        max_drop_ratio=s.max_drop_ratio,
        max_change_ratio=s.max_change_ratio,
        schedule=schedule,
        lease_ttl=dt.timedelta(seconds=s.lease_ttl_s),
        owner=s.owner,
        work_dir=s.work_dir,
        fast_path=s.fast_path,
        transaction_tables=tables,
        transaction_horizon_s=horizon_s,
        mapping_topic=ingest.mapping_topic_name,
        mapping_policy=s.mapping_policy,
    )
    return SnapshotRun(
        config,
        kafka,
        storage if storage is not None else build_storage(settings),
        take_cut=take_cut,
        api=api if s.api_enabled else None,
        clock=clock,
        metrics=metrics,
        stop=stop,
    )


def build_scheduler(
    settings: Settings,
    stop: threading.Event,
    *,
    storage: Storage | None = None,
    api: ApiRoute | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], dt.datetime] = _now,
) -> Scheduler:
    """The daily loop over ``build_run``; it returns when ``stop`` is set.

    With ``metrics``, the scheduler's events feed them, and the last published manifest's
    deliveries are reported at once, so a restart does not look like a day without delivery.
    """
    storage = storage if storage is not None else build_storage(settings)
    run = build_run(settings, storage=storage, api=api, clock=clock, metrics=metrics, stop=stop)
    schedule = schedule_of(settings)
    prefix = settings.snapshot.prefix

    def last_published() -> dt.date | None:
        today = clock().astimezone(schedule.tz).date()
        manifest = latest_manifest_before(storage, prefix, today + dt.timedelta(days=2))
        return None if manifest is None else manifest.day

    events = None
    if metrics is not None:
        events = _metric_events(metrics)
        latest = latest_manifest_before(storage, prefix, clock().date() + dt.timedelta(days=2))
        for result in latest.entities if latest is not None else ():
            if latest is not None and result.status == "delivered":
                metrics.delivery_succeeded(result.entity, latest.created_at)
    return Scheduler(
        schedule,
        run.run,
        last_published,
        expected_duration=dt.timedelta(seconds=settings.snapshot.expected_duration_s),
        clock=clock,
        sleep=stop.wait,
        events=events,
        recheck_s=settings.snapshot.recheck_s,
    )


def _metric_events(metrics: Metrics) -> SchedulerEvents:
    return SchedulerEvents(
        starting=lambda day, slack_s: metrics.set_deadline_slack(slack_s),
        missed=lambda day, why: metrics.snapshot_missed(),
        finished=lambda day, outcome, slack_s: metrics.snapshot_finished(outcome),
    )
