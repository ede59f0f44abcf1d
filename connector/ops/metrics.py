"""Every Prometheus metric the connector exports, defined once, on a registry of its own.

``Metrics`` holds all metrics of one ``CollectorRegistry``: the process uses the module-level
``METRICS``; a test makes a fresh ``Metrics()`` and reads its registry, so no test sees another's
counts. The health server (``connector.ops.health``) serves the registry on ``/metrics``.

Labels carry only names from fixed vocabularies or from configuration, never data: ``entity``
is one of the six entity names, ``operation``/``route``/``outcome``/``phase``/``status_class``
come from the tuples below, ``reason`` is a dead-letter reason code (unknown codes are counted
as ``other``), ``topic`` is a configured topic name and ``partition`` a number. The helper
methods check this, so a record value or an EntityId cannot become a label (and a label set
cannot grow without bound). Series of the fixed vocabularies are created at zero when the
registry is made, so ``increase()`` sees the first event and every series the alerts and the
dashboard query exists from the first scrape.

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
carecloud_delivered_records_total                               counter    route, entity
carecloud_delivered_bytes_total                                 counter    route, entity
carecloud_api_responses_total                                   counter    status_class
carecloud_api_retries_total                                     counter    status_class
carecloud_last_successful_delivery_timestamp_seconds            gauge      entity
carecloud_deadline_slack_seconds                                gauge      -
carecloud_ready                                                 gauge      -
=============================================================  =========  =====================

docs/metrics.md explains each one and the alerts built on them.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connector.model.schemas import ENTITY_NAMES

__all__ = [
    "ALLOWED_LABELS",
    "CHANGES",
    "DLQ_REASONS",
    "METRICS",
    "OPERATIONS",
    "OUTCOMES",
    "PHASES",
    "ROUTES",
    "STATUS_CLASSES",
    "Metrics",
    "dlq_reason",
    "status_class",
]

ALLOWED_LABELS = frozenset(
    {
        "topic",
        "partition",
        "entity",
        "operation",
        "reason",
        "route",
        "outcome",
        "phase",
        "status_class",
        "change",
    }
)
"""The only label names any metric may have (a test checks every metric against it)."""
OPERATIONS = ("upsert", "delete")
"""What a change event did to its entity."""
ROUTES = ("s3", "sftp", "api")
"""How a snapshot's records reach CareCloud."""
OUTCOMES = ("published", "partial", "already_published", "held", "failed")
"""How a snapshot run ended (``connector.snapshot.run.Outcome`` plus ``failed``): every entity
delivered; manifest written with some entity blocked by a check or refused by its route; the
date already had a manifest; no manifest yet, an entity blocked or refused waits for an
override or a fix until the decision time; gave up (terminal error, or still failing near the
deadline)."""
PHASES = ("cut", "read", "plan", "deliver", "publish")
"""The timed phases of a snapshot run, in order (``connector.snapshot.run.RunResult.phases``)."""
CHANGES = ("added", "removed", "changed")
"""What a delivered set changed against the entity's last delivery (``snapshot.digest``)."""
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "error", "other")
"""Portal API outcomes: HTTP status classes, ``error`` for no response (timeout, connection)."""

DLQ_REASONS = frozenset(
    str.split(
        # connector.errors' defaults
        "bad_input decode_error mapping_error schema_violation "
        # the source decoders
        "bad_source bad_source_position bad_transaction entity_id_mismatch invalid_avro invalid_envelope "
        "invalid_header invalid_json invalid_key invalid_schema invalid_utf8 key_mismatch missing_entity_id "
        "missing_key missing_row missing_source payload_type_mismatch truncated_message unknown_op "
        "unknown_schema_id unsupported_connector unsupported_schema_type wrong_magic_byte "
        # logical types and the mapper's converters
        "bad_primary_key control_character date_out_of_range decimal_out_of_range decimal_scale_exceeded "
        "decimal_too_long nesting_too_deep "
        "integer_out_of_range invalid_decimal invalid_timestamp missing_primary_key non_finite_number "
        "required_field_missing required_field_null unknown_enum_symbol unknown_table unparseable_date "
        "unparseable_decimal unparseable_json unparseable_timestamp wrong_type "
        # the ingest loop (sizes, the per-message barrier), and the label of any code not listed here
        "oversized_record oversized_key oversized_headers state_row_too_large internal_error other"
    )
)
"""Every dead-letter reason code the connector raises (a test scans the source for them)."""

_PHASE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
"""Snapshot phases take seconds to an hour; the run has 2.5 hours before the deadline."""


def dlq_reason(reason: str) -> str:
    """The label value for a dead-letter reason: the code itself if known, else ``other``."""
    return reason if reason in DLQ_REASONS else "other"


def status_class(status: int | None) -> str:
    """``2xx``-style class of an HTTP status; ``error`` when there was no response."""
    if status is None:
        return "error"
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


def _check(value: str, allowed: Iterable[str], label: str) -> str:
    if value not in allowed:
        raise ValueError(f"{label} {value!r} is not one of the metric's fixed values")
    return value


class Metrics:
    """All of the connector's metrics on one registry, with helpers that keep labels safe.

    The attributes are the prometheus-client objects (for reading in tests); production code
    calls the methods, which validate the label values. Call the per-event methods once per
    batch with a count, not once per event: the ingest loop runs at 10^5 events/s.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumer_lag = Gauge(
            "carecloud_consumer_lag_messages",
            "Messages between the committed position and the end of a source partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.events_consumed = Counter(
            "carecloud_events_consumed",
            "Change events applied to the state (committed), by entity and operation.",
            ["entity", "operation"],
            registry=r,
        )
        self.dlq_events = Counter(
            "carecloud_dlq_events", "Events sent to the dead-letter topic, by reason.", ["reason"], registry=r
        )
        self.stale_events_dropped = Counter(
            "carecloud_stale_events_dropped",
            "Out-of-order or duplicate changes ignored because the state holds a newer version.",
            ["entity"],
            registry=r,
        )
        self.aborted_transactions = Counter(
            "carecloud_aborted_transactions",
            "Ingest batches whose transaction was aborted and that were consumed again.",
            registry=r,
        )
        self.fast_path_events = Counter(
            "carecloud_fast_path_events",
            "Committed change events the compiled fast path decoded and mapped (docs/decisions/0012).",
            registry=r,
        )
        self.state_entities = Gauge(
            "carecloud_state_entities", "Live entities in this replica's local state.", ["entity"], registry=r
        )
        self.restore_records = Counter(
            "carecloud_restore_records",
            "State records read into the local store while restoring a partition.",
            ["partition"],
            registry=r,
        )
        self.restore_remaining = Gauge(
            "carecloud_restore_remaining_records",
            "State records still to read before a partition's restore is done (0 when caught up).",
            ["partition"],
            registry=r,
        )
        self.snapshot_runs = Counter(
            "carecloud_snapshot_runs", "Snapshot runs, by how they ended.", ["outcome"], registry=r
        )
        self.snapshot_missed_runs = Counter(
            "carecloud_snapshot_missed_runs",
            "Snapshot dates skipped because the run could no longer finish before the deadline.",
            registry=r,
        )
        self.snapshot_phase_duration = Histogram(
            "carecloud_snapshot_phase_duration_seconds",
            "Wall time of each phase of a snapshot run.",
            ["phase"],
            buckets=_PHASE_BUCKETS,
            registry=r,
        )
        self.changed_records = Gauge(
            "carecloud_snapshot_changed_records",
            "Records of the latest run's set against the entity's last delivery: added, removed, "
            "changed content (same EntityId).",
            ["entity", "change"],
            registry=r,
        )
        self.delivered_records = Counter(
            "carecloud_delivered_records",
            "Records delivered to CareCloud, by route and entity.",
            ["route", "entity"],
            registry=r,
        )
        self.delivered_bytes = Counter(
            "carecloud_delivered_bytes",
            "Bytes delivered to CareCloud (compressed file bytes, or API request bodies).",
            ["route", "entity"],
            registry=r,
        )
        self.api_responses = Counter(
            "carecloud_api_responses", "Portal API responses by status class.", ["status_class"], registry=r
        )
        self.api_retries = Counter(
            "carecloud_api_retries",
            "Portal API requests retried, by the status class that caused the retry.",
            ["status_class"],
            registry=r,
        )
        self.last_delivery = Gauge(
            "carecloud_last_successful_delivery_timestamp_seconds",
            "Unix time of the last snapshot of an entity that CareCloud accepted (manifest written).",
            ["entity"],
            registry=r,
        )
        self.deadline_slack = Gauge(
            "carecloud_deadline_slack_seconds",
            "Deadline minus the expected finish of the snapshot run in progress (NaN when none runs).",
            registry=r,
        )
        self.ready = Gauge(
            "carecloud_ready", "1 when the state is caught up and partitions are assigned.", registry=r
        )
        self.deadline_slack.set(math.nan)
        self._initialise_series()

    def _initialise_series(self) -> None:
        """Create every series of the fixed vocabularies at zero (see the module docstring)."""
        for entity in ENTITY_NAMES:
            for operation in OPERATIONS:
                self.events_consumed.labels(entity=entity, operation=operation)
            self.stale_events_dropped.labels(entity=entity)
            for route in ROUTES:
                self.delivered_records.labels(route=route, entity=entity)
                self.delivered_bytes.labels(route=route, entity=entity)
        for reason in DLQ_REASONS:
            self.dlq_events.labels(reason=reason)
        for outcome in OUTCOMES:
            self.snapshot_runs.labels(outcome=outcome)
        for phase in PHASES:
            self.snapshot_phase_duration.labels(phase=phase)
        for cls in STATUS_CLASSES:
            self.api_responses.labels(status_class=cls)
            self.api_retries.labels(status_class=cls)

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
            entity=_check(entity, ENTITY_NAMES, "entity"),
            operation=_check(operation, OPERATIONS, "operation"),
        ).inc(n)

    def count_dead_letters(self, reason: str, n: int = 1) -> None:
        """``n`` events dead-lettered for ``reason`` (a ``BadInputError.reason``)."""
        self.dlq_events.labels(reason=dlq_reason(reason)).inc(n)

    def count_stale(self, entity: str, n: int = 1) -> None:
        """``n`` changes ignored as older than (or equal to) the stored version."""
        self.stale_events_dropped.labels(entity=_check(entity, ENTITY_NAMES, "entity")).inc(n)

    def set_state_entities(self, entity: str, count: int) -> None:
        """Live entities of one type in this replica's local store."""
        self.state_entities.labels(entity=_check(entity, ENTITY_NAMES, "entity")).set(count)

    def restore_progress(self, partition: int, restored: int, remaining: int) -> None:
        """``restored`` more records read into partition's store; ``remaining`` still to read."""
        label = str(partition)
        self.restore_records.labels(partition=label).inc(restored)  # inc(0) creates the series at 0
        self.restore_remaining.labels(partition=label).set(max(remaining, 0))

    def set_ready(self, ready: bool) -> None:
        """Readiness as a metric (the health server sets it from the same check as ``/readyz``)."""
        self.ready.set(1 if ready else 0)

    # -- snapshot and delivery ---------------------------------------------------------------

    def snapshot_finished(self, outcome: str) -> None:
        """Count a run by ``outcome`` and clear the deadline slack (no run in progress)."""
        self.snapshot_runs.labels(outcome=_check(outcome, OUTCOMES, "outcome")).inc()
        self.deadline_slack.set(math.nan)

    def snapshot_missed(self) -> None:
        """A date that will not be delivered: too late to finish before its deadline."""
        self.snapshot_missed_runs.inc()

    @contextmanager
    def time_phase(self, phase: str) -> Iterator[None]:
        """Observe the wall time of the ``with`` block as the duration of ``phase``."""
        child = self.snapshot_phase_duration.labels(phase=_check(phase, PHASES, "phase"))
        start = time.monotonic()
        try:
            yield
        finally:
            child.observe(time.monotonic() - start)

    def observe_phases(self, phases: Mapping[str, float]) -> None:
        """A finished run's seconds per phase (``RunResult.phases``)."""
        for phase, seconds in phases.items():
            self.snapshot_phase_duration.labels(phase=_check(phase, PHASES, "phase")).observe(seconds)

    def set_deadline_slack(self, seconds: float | None) -> None:
        """Deadline minus expected finish (negative: will be late); ``None`` when no run is on."""
        self.deadline_slack.set(math.nan if seconds is None else seconds)

    def set_changes(self, entity: str, added: int, removed: int, changed: int) -> None:
        """What the latest run's set of ``entity`` changed since its last delivery."""
        label = _check(entity, ENTITY_NAMES, "entity")
        for change, n in zip(CHANGES, (added, removed, changed), strict=True):
            self.changed_records.labels(entity=label, change=change).set(n)

    def delivered(self, route: str, entity: str, records: int, nbytes: int) -> None:
        """Records and bytes of ``entity`` that reached CareCloud by ``route`` (s3|sftp|api)."""
        route = _check(route, ROUTES, "route")
        entity = _check(entity, ENTITY_NAMES, "entity")
        self.delivered_records.labels(route=route, entity=entity).inc(records)
        self.delivered_bytes.labels(route=route, entity=entity).inc(nbytes)

    def delivery_succeeded(self, entity: str, at: dt.datetime) -> None:
        """``entity``'s snapshot was published at ``at`` (aware). Also call it at start-up
        with the last published manifest's time, so a restart does not reset the 26-hour alert."""
        if at.tzinfo is None:
            raise ValueError("delivery time must be timezone-aware")
        self.last_delivery.labels(entity=_check(entity, ENTITY_NAMES, "entity")).set(at.timestamp())

    def api_response(self, status: int | None) -> None:
        """One Portal API response (``None``: no response, e.g. a timeout)."""
        self.api_responses.labels(status_class=status_class(status)).inc()

    def api_retry(self, status: int | None) -> None:
        """One Portal API request about to be retried after ``status`` (``None``: no response)."""
        self.api_retries.labels(status_class=status_class(status)).inc()


METRICS = Metrics()
"""The process's metrics; what ``/metrics`` serves."""
