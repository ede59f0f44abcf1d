"""``carecloud-connector backfill TABLE...``: Debezium reads mapped tables again, incrementally.

For a table newly added to the mapping (its rows existed before anyone consumed its events) or a
gap (events lost to an expired retention, a slot re-created): the command asks Debezium, through
its Kafka signal channel, for an incremental snapshot of the given tables. Debezium then reads
them in chunks beside its stream and emits each row as an ``op=r`` event with
``source.snapshot="incremental"``, which ingest applies like any other change (a read never
regresses a newer streamed change: versions decide, ``connector.source.version``).

Only tables the mapping maps may be asked for: a snapshot of any other table would only fill the
dead-letter topic with ``unknown_table``, so it is refused before anything is sent, naming the
tables the mapping has. The signal's shape and the Debezium settings it needs are in
``connector.source.signal``; the runbook is README's "a new source table".

Ingest owns this command rather than the source stage because it checks the mapping, which sits
above the source in the import layering; the signal itself is the source stage's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connector.errors import ConfigError
from connector.mapping import MappingSpec
from connector.source.signal import SIGNAL_PARTITION, SnapshotSignal

__all__ = ["BackfillPlan", "add_backfill_command", "plan_backfill"]


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    """The signal to send and what the operator should know before it goes."""

    signal: SnapshotSignal
    entities: dict[str, str]
    """Table -> the entity its rows become."""
    warnings: list[str] = field(default_factory=list)


def _prefixes(spec: MappingSpec, table: str) -> set[str]:
    """Prefixes ``P`` for which the mapping lists Debezium's default topic ``P.<table>``."""
    suffix = f".{table}"
    return {
        topic[: -len(suffix)] for topic in spec.topics if topic.endswith(suffix) and len(topic) > len(suffix)
    }


def plan_backfill(
    spec: MappingSpec,
    tables: Sequence[str],
    *,
    topic_prefix: str | None = None,
    signal_topic: str | None = None,
) -> BackfillPlan:
    """Check ``tables`` against the mapping and build the signal; ``ConfigError`` names every problem.

    Debezium's ``topic.prefix`` (the signal's key) is taken from the mapping's topic names
    (``<prefix>.<schema>.<table>``) unless given; ``signal_topic`` defaults to Debezium's own
    default, ``<topic.prefix>-signal``.
    """
    wanted = list(dict.fromkeys(t.strip() for t in tables if t.strip()))
    if not wanted:
        raise ConfigError(
            "backfill: name at least one table (schema.table, as the mapping's tables: list it)"
        )
    unknown = [t for t in wanted if t not in spec.tables]
    if unknown:
        known = ", ".join(sorted(spec.tables)) or "none"
        raise ConfigError(
            f"backfill refused, nothing sent: {', '.join(unknown)} not in the mapping {spec.origin} "
            f"(its tables: {known}); add the table to the mapping and deploy it first, or its "
            "snapshot's rows would only be dead-lettered as unknown_table"
        )
    prefix = topic_prefix
    if prefix is None:
        found = set.union(*(_prefixes(spec, t) for t in wanted))
        if len(found) != 1:
            seen = ", ".join(sorted(found)) or "none"
            raise ConfigError(
                f"backfill: cannot tell Debezium's topic.prefix from the mapping's topics (prefixes "
                f"found: {seen}); pass --topic-prefix"
            )
        (prefix,) = found
    warnings = [
        f"topic {prefix}.{t} is not under the mapping's topics: ingest consumes only those, so the "
        f"snapshot of {t} reaches the state only if Debezium routes it to a listed topic"
        for t in wanted
        if f"{prefix}.{t}" not in spec.topics
    ]
    signal = SnapshotSignal(signal_topic or f"{prefix}-signal", prefix, tuple(wanted))
    return BackfillPlan(signal, {t: spec.tables[t].entity for t in wanted}, warnings)


def add_backfill_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backfill",
        help="ask Debezium (Kafka signal channel) for an incremental snapshot of mapped tables",
        description="Produces one execute-snapshot signal to Debezium's signal.kafka.topic (partition 0), "
        "keyed by its topic.prefix. Tables must be in the mapping. Debezium needs "
        "signal.enabled.channels=source,kafka, signal.kafka.topic, signal.kafka.bootstrap.servers and "
        "its signalling table (signal.data.collection) for the snapshot's watermarks.",
    )
    p.add_argument(
        "tables", nargs="+", metavar="TABLE", help="source table as the mapping names it (schema.table)"
    )
    p.add_argument(
        "--mapping", type=Path, default=None, help="mapping file (default: CARECLOUD_INGEST_MAPPING_FILE)"
    )
    p.add_argument(
        "--topic-prefix",
        default=None,
        help="Debezium's topic.prefix, the signal's key (default: from the mapping's topic names)",
    )
    p.add_argument(
        "--signal-topic", default=None, help="Debezium's signal.kafka.topic (default: <topic.prefix>-signal)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the signal; connect to nothing, send nothing"
    )
    p.set_defaults(handler=_cmd_backfill)


def format_plan(plan: BackfillPlan) -> str:
    """What will be (or would be) sent, for people; a signal holds no row value."""
    s = plan.signal
    lines = [f"  {table} -> {entity}" for table, entity in plan.entities.items()]
    return "\n".join(
        [
            f"incremental snapshot of {len(plan.entities)} table(s):",
            *lines,
            f"signal topic {s.topic} partition {SIGNAL_PARTITION}",
            f"  key:   {s.connector}",
            f"  value: {s.value.decode()}",
            *(f"warning: {w}" for w in plan.warnings),
        ]
    )


def _cmd_backfill(args: argparse.Namespace) -> int:
    from connector.mapping import load_mapping

    settings = None
    path = args.mapping
    if path is None or not args.dry_run:
        from connector.config import load_settings
        from connector.ops.logs import configure_logging_from

        settings = load_settings()
        configure_logging_from(settings)
        path = path or settings.ingest.mapping_file
    plan = plan_backfill(
        load_mapping(path), args.tables, topic_prefix=args.topic_prefix, signal_topic=args.signal_topic
    )
    print(format_plan(plan))
    if args.dry_run:
        print("dry run: nothing sent")
        return 0
    from connector.source.signal import send_signal

    assert settings is not None
    offset = send_signal(settings.kafka.client_config(), plan.signal)
    print(
        f"sent to {plan.signal.topic} partition {SIGNAL_PARTITION} at offset {offset} (signal id "
        f"{plan.signal.id}, in Debezium's log). Its rows arrive as op=r events with "
        "source.snapshot=incremental: watch carecloud_consumer_lag_messages, then the next snapshot."
    )
    return 0
