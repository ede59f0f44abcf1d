"""Every Prometheus metric the connector exports, defined once, on a registry of its own.

``Metrics`` holds all metrics of one ``CollectorRegistry``: the process uses the module-level
``METRICS``; a test makes a fresh ``Metrics()`` and reads its registry, so no test sees another's
counts. The health server (``connector.ops.health``) serves the registry on ``/metrics``.

Labels carry only names from fixed vocabularies or from configuration, never data: ``entity``
is one of the six entity names; ``operation``/``route``/``outcome``/``phase``/``status_class``/
``problem`` come from the tuples below; ``reason`` is a dead-letter reason code (unknown codes
are counted as ``other``); ``topic`` is a configured topic name and ``partition`` a number;
``table`` and ``column`` are names from the mapping file (a source schema's problem is reported
only for a column the mapping reads). The helper methods check this, so a record value or an
EntityId cannot become a label (and a label set cannot grow without bound). Series of the fixed
vocabularies are created at zero when the registry is made, so ``increase()`` sees the first
event and every series the alerts and the dashboard query exists from the first scrape.

=============================================================  =========  =====================
metric                                                          type       labels
=============================================================  =========  =====================
carecloud_consumer_lag_messages                                 gauge      topic, partition
carecloud_events_consumed_total                                 counter    entity, operation
carecloud_dlq_events_total                                      counter    reason
carecloud_stale_events_dropped_total                            counter    entity
carecloud_aborted_transactions_total                            counter    -
carecloud_fast_path_events_total                                counter    -
carecloud_state_entities                                        gauge      entity
carecloud_restore_records_total                                 counter    partition
carecloud_restore_remaining_records                             gauge      partition
carecloud_snapshot_runs_total                                   counter    outcome
carecloud_snapshot_missed_runs_total                            counter    -
carecloud_snapshot_phase_duration_seconds                       histogram  phase
carecloud_snapshot_changed_records                              gauge      entity, change
carecloud_snapshot_incomplete_transactions                      gauge      -
carecloud_snapshot_expired_transactions                         gauge      -
carecloud_state_rows_older_mapping                              gauge      entity
carecloud_snapshot_swept_records                                gauge      entity
carecloud_snapshot_sweep_waiting_partitions                     gauge      -
carecloud_delivered_records_total                               counter    route, entity
carecloud_delivered_bytes_total                                 counter    route, entity
carecloud_api_responses_total                                   counter    status_class
carecloud_api_retries_total                                     counter    status_class
carecloud_last_successful_delivery_timestamp_seconds            gauge      entity
carecloud_deadline_slack_seconds                                gauge      -
carecloud_ready                                                 gauge      -
carecloud_source_schema_mismatch                                gauge      table, column, problem
carecloud_remap_rows_total                                      counter    outcome
carecloud_remap_rows_left                                       gauge      -
carecloud_remap_rows_kept                                       gauge      -
=============================================================  =========  =====================

docs/metrics.md explains each one and the alerts built on them.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from connector.model.schemas import ENTITY_NAMES
from connector.ops._metric_families import (
    ALLOWED_LABELS,
    CHANGES,
    DLQ_REASONS,
    OPERATIONS,
    OUTCOMES,
    PHASES,
    REMAP_OUTCOMES,
    ROUTES,
    SCHEMA_PROBLEMS,
    STATUS_CLASSES,
    Families,
    check_label,
    dlq_reason,
    status_class,
)

__all__ = [
    "ALLOWED_LABELS",
    "CHANGES",
    "DLQ_REASONS",
    "METRICS",
    "OPERATIONS",
    "OUTCOMES",
    "PHASES",
    "REMAP_OUTCOMES",
    "ROUTES",
    "SCHEMA_PROBLEMS",
    "STATUS_CLASSES",
    "Metrics",
    "dlq_reason",
    "status_class",
]


class Metrics(Families):
    """All of the connector's metrics on one registry, with helpers that keep labels safe.

    The attributes are the prometheus-client objects (for reading in tests); production code
    calls the methods, which validate the label values. Call the per-event methods once per
    batch with a count, not once per event: the ingest loop runs at 10^5 events/s. The
    metrics themselves are defined in ``Families`` (``_metric_families``).
    """

    # -- ingest ------------------------------------------------------------------------------

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Lag of one assigned source partition (high watermark minus committed position)."""
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(lag, 0))

    def forget_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        """Drop a revoked partition's series: its new owner reports it, this replica must not."""
        for p in partitions:
            for gauge, labels in (
                (self.consumer_lag, (topic, str(p))),
                (self.restore_remaining, (str(p),)),
            ):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    continue

    def count_events(self, entity: str, operation: str, n: int = 1) -> None:
        """``n`` committed changes of ``entity`` that were applied (``operation``: upsert|delete)."""
        self.events_consumed.labels(
            entity=check_label(entity, ENTITY_NAMES, "entity"),
            operation=check_label(operation, OPERATIONS, "operation"),
        ).inc(n)

    def count_dead_letters(self, reason: str, n: int = 1) -> None:
        """``n`` events dead-lettered for ``reason`` (a ``BadInputError.reason``)."""
        self.dlq_events.labels(reason=dlq_reason(reason)).inc(n)

    def count_stale(self, entity: str, n: int = 1) -> None:
        """``n`` changes ignored as older than (or equal to) the stored version."""
        self.stale_events_dropped.labels(entity=check_label(entity, ENTITY_NAMES, "entity")).inc(n)

    def set_state_entities(self, entity: str, count: int) -> None:
        """Live entities of one type in this replica's local store."""
        self.state_entities.labels(entity=check_label(entity, ENTITY_NAMES, "entity")).set(count)

    def restore_progress(self, partition: int, restored: int, remaining: int) -> None:
        """``restored`` more records read into partition's store; ``remaining`` still to read."""
        label = str(partition)
        self.restore_records.labels(partition=label).inc(restored)  # inc(0) creates the series at 0
        self.restore_remaining.labels(partition=label).set(max(remaining, 0))

    def set_ready(self, ready: bool) -> None:
        """Readiness as a metric (the health server sets it from the same check as ``/readyz``)."""
        self.ready.set(1 if ready else 0)

    def set_schema_mismatch(self, table: str, column: str, problem: str, present: bool) -> None:
        """A mapped column's source schema problem (``connector.ingest.schema_watch``): 1 while the
        latest schema of ``table`` has it, 0 once it fits again. ``table`` and ``column`` come from
        the mapping file (the watch reports only columns the mapping reads), ``problem`` from
        ``SCHEMA_PROBLEMS``."""
        label = check_label(problem, SCHEMA_PROBLEMS, "schema problem")
        self.source_schema_mismatch.labels(table=table, column=column, problem=label).set(1 if present else 0)

    # -- snapshot and delivery ---------------------------------------------------------------

    def snapshot_finished(self, outcome: str) -> None:
        """Count a run by ``outcome`` and clear the deadline slack (no run in progress)."""
        self.snapshot_runs.labels(outcome=check_label(outcome, OUTCOMES, "outcome")).inc()
        self.deadline_slack.set(math.nan)

    def snapshot_missed(self) -> None:
        """A date that will not be delivered: too late to finish before its deadline."""
        self.snapshot_missed_runs.inc()

    @contextmanager
    def time_phase(self, phase: str) -> Iterator[None]:
        """Observe the wall time of the ``with`` block as the duration of ``phase``."""
        child = self.snapshot_phase_duration.labels(phase=check_label(phase, PHASES, "phase"))
        start = time.monotonic()
        try:
            yield
        finally:
            child.observe(time.monotonic() - start)

    def observe_phases(self, phases: Mapping[str, float]) -> None:
        """A finished run's seconds per phase (``RunResult.phases``)."""
        for phase, seconds in phases.items():
            self.snapshot_phase_duration.labels(phase=check_label(phase, PHASES, "phase")).observe(seconds)

    def set_deadline_slack(self, seconds: float | None) -> None:
        """Deadline minus expected finish (negative: will be late); ``None`` when no run is on."""
        self.deadline_slack.set(math.nan if seconds is None else seconds)

    def set_changes(self, entity: str, added: int, removed: int, changed: int) -> None:
        """What the latest run's set of ``entity`` changed since its last delivery."""
        label = check_label(entity, ENTITY_NAMES, "entity")
        for change, n in zip(CHANGES, (added, removed, changed), strict=True):
            self.changed_records.labels(entity=label, change=change).set(n)

    def set_older_mapping_rows(self, entity: str, rows: int) -> None:
        """Rows of ``entity`` at the latest cut under an older mapping version than the current."""
        self.older_mapping_rows.labels(entity=check_label(entity, ENTITY_NAMES, "entity")).set(rows)

    def remap_progress(self, counts: Mapping[str, int], left: int, kept: int) -> None:
        """The re-mapping pass after a committed step (``connector.ingest.remap``)."""
        for outcome, n in counts.items():
            if n:
                self.remap_rows.labels(outcome=check_label(outcome, REMAP_OUTCOMES, "outcome")).inc(n)
        self.remap_rows_left.set(left)
        self.remap_rows_kept.set(kept)

    def set_sweep(self, swept: dict[str, int], waiting: int) -> None:
        """The latest cut's sweep (``connector.state.sweep``): rows left out per entity, and
        source partitions not yet read to the end of a completed re-snapshot."""
        for entity in ENTITY_NAMES:
            self.swept_records.labels(entity=entity).set(swept.get(entity, 0))
        self.sweep_waiting.set(waiting)

    def set_incomplete_transactions(self, held: int, expired: int) -> None:
        """Source transactions incomplete at the latest cut: held out, and too old to hold."""
        self.incomplete_transactions.set(held)
        self.expired_transactions.set(expired)

    def delivered(self, route: str, entity: str, records: int, nbytes: int) -> None:
        """Records and bytes of ``entity`` that reached CareCloud by ``route`` (s3|sftp|api)."""
        route = check_label(route, ROUTES, "route")
        entity = check_label(entity, ENTITY_NAMES, "entity")
        self.delivered_records.labels(route=route, entity=entity).inc(records)
        self.delivered_bytes.labels(route=route, entity=entity).inc(nbytes)

    def delivery_succeeded(self, entity: str, at: dt.datetime) -> None:
        """``entity``'s snapshot was published at ``at`` (aware). Also call it at start-up
        with the last published manifest's time, so a restart does not reset the 26-hour alert."""
        if at.tzinfo is None:
            raise ValueError("delivery time must be timezone-aware")
        self.last_delivery.labels(entity=check_label(entity, ENTITY_NAMES, "entity")).set(at.timestamp())

    def api_response(self, status: int | None) -> None:
        """One Portal API response (``None``: no response, e.g. a timeout)."""
        self.api_responses.labels(status_class=status_class(status)).inc()

    def api_retry(self, status: int | None) -> None:
        """One Portal API request about to be retried after ``status`` (``None``: no response)."""
        self.api_retries.labels(status_class=status_class(status)).inc()


METRICS = Metrics()
"""The process's metrics; what ``/metrics`` serves."""
