"""The metric families and their label vocabularies (private to ``connector.ops.metrics``).

``connector.ops.metrics`` re-exports the vocabularies, lists every family in its docstring's
table, and adds to ``Families`` the helpers that production code calls. Labels carry only names
from fixed vocabularies or from configuration, never data: these tuples are the fixed ones,
``check_label`` refuses anything else, and ``dlq_reason`` folds an unknown dead-letter code into
``other``, so a record value or an EntityId cannot become a label and a label set cannot grow
without bound. Series of the fixed vocabularies are created at zero when the registry is made,
so ``increase()`` sees the first event and every series the alerts and the dashboard query
exists from the first scrape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connector.model.schemas import ENTITY_NAMES

__all__ = [
    "ALLOWED_LABELS",
    "CHANGES",
    "DLQ_REASONS",
    "OPERATIONS",
    "OUTCOMES",
    "PHASES",
    "REMAP_OUTCOMES",
    "ROUTES",
    "SCHEMA_PROBLEMS",
    "STATUS_CLASSES",
    "Families",
    "check_label",
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
        "table",
        "column",
        "problem",
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
REMAP_OUTCOMES = ("remapped", "failed", "no_source")
"""What the re-mapping pass did with a row under an older mapping (``connector.ingest.remap``):
brought to the current one; refused by it (a dead letter); kept, having no source columns."""
CHANGES = ("added", "removed", "changed")
"""What a delivered set changed against the entity's last delivery (``snapshot.digest``)."""
SCHEMA_PROBLEMS = ("dropped", "retyped")
"""What a source schema change did to a column the mapping reads (``connector.mapping.schema_check``);
the ``table`` and ``column`` labels beside it are names from the mapping file, never data."""
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "error", "other")
"""Portal API outcomes: HTTP status classes, ``error`` for no response (timeout, connection)."""

DLQ_REASONS = frozenset(
    str.split(
        # connector.errors' defaults
        "bad_input decode_error mapping_error schema_violation "
        # the source decoders
        "bad_source bad_source_position bad_transaction entity_id_mismatch invalid_avro invalid_envelope "
        "bad_transaction_record "
        "invalid_header invalid_json invalid_key invalid_schema invalid_utf8 key_mismatch missing_entity_id "
        "missing_key missing_row missing_source payload_type_mismatch truncated_message unknown_op "
        "unknown_schema_id unsupported_connector unsupported_schema_type wrong_magic_byte "
        # logical types and the mapper's converters
        "bad_primary_key control_character date_out_of_range decimal_out_of_range decimal_scale_exceeded "
        "decimal_too_long nesting_too_deep "
        "integer_out_of_range invalid_decimal invalid_timestamp missing_primary_key non_finite_number "
        "entity_id_changed required_field_missing required_field_null unknown_enum_symbol unknown_table "
        "unparseable_date "
        "unparseable_decimal unparseable_json unparseable_timestamp wrong_type "
        # the ingest loop (sizes, the per-message barrier), and the label of any code not listed here
        "oversized_record oversized_key oversized_headers state_row_too_large internal_error other"
    )
)
"""Every dead-letter reason code the connector raises (a test scans the source for them)."""


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


def check_label(value: str, allowed: Iterable[str], label: str) -> str:
    if value not in allowed:
        raise ValueError(f"{label} {value!r} is not one of the metric's fixed values")
    return value


_PHASE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
"""Snapshot phases take seconds to an hour; the run has 2.5 hours before the deadline."""


class Families:
    """Every metric family of one ``CollectorRegistry`` (a fresh one unless given), with the
    series of the fixed vocabularies at zero; ``Metrics`` adds the label-checking helpers."""

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
        self.incomplete_transactions = Gauge(
            "carecloud_snapshot_incomplete_transactions",
            "Source transactions incomplete at the latest run's cut, whose rows it held out "
            "(transaction tracking on; 0 otherwise).",
            registry=r,
        )
        self.older_mapping_rows = Gauge(
            "carecloud_state_rows_older_mapping",
            "Complete rows of the entity at the latest run's cut written under another mapping "
            "version than the current one (not yet re-mapped); any mix of versions blocks the entity.",
            ["entity"],
            registry=r,
        )
        self.swept_records = Gauge(
            "carecloud_snapshot_swept_records",
            "Live rows of the entity the latest run's cut left out because a completed re-snapshot "
            "of their source did not read them (deleted while the replication slot was lost).",
            ["entity"],
            registry=r,
        )
        self.sweep_waiting = Gauge(
            "carecloud_snapshot_sweep_waiting_partitions",
            "Source partitions ingest had not yet read to the end of a completed re-snapshot at the "
            "latest run's cut: that source's rows are not swept until they are.",
            registry=r,
        )
        self.expired_transactions = Gauge(
            "carecloud_snapshot_expired_transactions",
            "Source transactions still incomplete at the latest run's cut but older than half the "
            "ledger's purge horizon: reported, not held out.",
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
        self.source_schema_mismatch = Gauge(
            "carecloud_source_schema_mismatch",
            "1 while the latest source schema seen for a mapped table lacks a column the mapping "
            "reads (dropped) or types it so its field cannot take it (retyped); 0 once it fits again.",
            ["table", "column", "problem"],
            registry=r,
        )
        self.remap_rows = Counter(
            "carecloud_remap_rows",
            "Rows under an older mapping the re-mapping pass visited, by outcome: remapped, failed "
            "(dead-lettered with its reason) or no_source (no source columns kept: left as it is).",
            ["outcome"],
            registry=r,
        )
        self.remap_rows_left = Gauge(
            "carecloud_remap_rows_left",
            "Rows under an older mapping the re-mapping pass has still to visit in the owned partitions.",
            registry=r,
        )
        self.remap_rows_kept = Gauge(
            "carecloud_remap_rows_kept",
            "Rows the re-mapping pass's current sweep visited and left under an older mapping "
            "(failed or without source columns): their entities stay held by the snapshot.",
            registry=r,
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
            self.older_mapping_rows.labels(entity=entity)
        for reason in DLQ_REASONS:
            self.dlq_events.labels(reason=reason)
        for outcome in OUTCOMES:
            self.snapshot_runs.labels(outcome=outcome)
        for outcome in REMAP_OUTCOMES:
            self.remap_rows.labels(outcome=outcome)
        for phase in PHASES:
            self.snapshot_phase_duration.labels(phase=phase)
        for cls in STATUS_CLASSES:
            self.api_responses.labels(status_class=cls)
            self.api_retries.labels(status_class=cls)
