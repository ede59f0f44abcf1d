"""The ingest stage's commands: ``ingest`` (the service), ``replay`` (captured events through
decode -> map -> resolve, in memory) and ``dlq list|replay`` (the dead letters: defined in
``connector.ingest.dlq_commands``, registered from here).

``ingest`` runs the service alone: what runs beside it in the same process (the daily
snapshot) is handed in by ``connector.cli``, since ingest never imports the snapshot.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from connector.ingest.dlq_commands import add_dlq_command, format_replay, parse_timestamp

if TYPE_CHECKING:  # Kafka clients are imported when a command runs, so --help stays fast
    from connector.config import Settings

__all__ = [
    "Beside",
    "add_dlq_command",
    "add_ingest_command",
    "add_replay_command",
    "format_replay",
    "parse_timestamp",
]

Beside = Callable[["Settings", threading.Event], Callable[[], None] | None]
"""What runs beside ingest in its process (the daily snapshot): started once ingest has started,
given the stop event; returns how to wait for it when ingest stops, or None if it did not start."""


def add_ingest_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], *, beside: Beside | None = None
) -> None:
    p = sub.add_parser(
        "ingest",
        help="run the ingest service: source topics into the state (settings: CARECLOUD_* env)",
    )
    p.set_defaults(handler=partial(_cmd_ingest, beside=beside))


def _cmd_ingest(args: argparse.Namespace, *, beside: Beside | None) -> int:
    import faulthandler
    import signal

    from connector.config import load_settings
    from connector.ingest.service import IngestService
    from connector.mapping import load_mapping
    from connector.ops.health import HealthServer, Heartbeat
    from connector.ops.logs import configure_logging_from
    from connector.ops.metrics import METRICS

    faulthandler.register(signal.SIGUSR1)  # on-call: `kill -USR1` prints every thread's stack
    settings = load_settings()
    configure_logging_from(settings)
    heartbeat = Heartbeat()
    service = IngestService(
        settings, load_mapping(settings.ingest.mapping_file), metrics=METRICS, heartbeat=heartbeat
    )

    def readiness() -> str | None:
        if service.ready.is_set() and service.stores:
            return None
        return "restoring the local state or no partitions assigned"

    health = HealthServer.from_settings(settings.ops, METRICS, readiness, heartbeat).start()
    stop = threading.Event()
    # SIGTERM (Kubernetes) and Ctrl-C: finish or abort the batch in flight, then leave cleanly.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        service.start()
        print(f"ingest: started; health and metrics on port {health.port}", flush=True)
        wait = beside(settings, stop) if beside is not None else None
        service.run(stop)
        if wait is not None:
            wait()
    finally:
        health.stop()
    print(f"ingest: stopped after {service.counts['events']} events", flush=True)
    return 0


def add_replay_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="run captured events through decode -> map -> resolve in memory and print the final state",
        description=(
            "Input: one JSON object per line, {topic, partition, offset, key, value} where key and value are "
            "the message's JSON (value null for a tombstone), or key_b64/value_b64 for binary messages, "
            "and optional headers {name: JSON}. Exit 0 when it ran, even with dead letters."
        ),
    )
    p.add_argument("--mapping", required=True, help="the mapping YAML file")
    p.add_argument(
        "--compare",
        default=None,
        metavar="NEW",
        help="a new mapping: replay the events under both and show, per entity, records and fields that "
        "change, EntityIds removed and added, and events the new one refuses (a preview before a rollout)",
    )
    p.add_argument("--input", required=True, help="the events file (JSON Lines)")
    p.add_argument("--schema-registry", default=None, help="Schema Registry URL for Avro topics")
    p.add_argument(
        "--transaction-topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="Debezium's transaction topic in the capture (besides the mapping's transactions.topic; "
        "an unlisted topic's BEGIN/END records are recognised anyway): tallied, never dead-lettered",
    )
    p.add_argument(
        "--skip-topic", action="append", default=[], metavar="TOPIC", help="leave this topic's messages out"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    p.set_defaults(handler=_cmd_offline_replay)


def _cmd_offline_replay(args: argparse.Namespace) -> int:
    from collections import Counter

    from connector.ingest.replay import encode_json, read_events, replay
    from connector.mapping import load_mapping
    from connector.model import ENTITY_NAMES

    result = replay(
        load_mapping(args.mapping),
        read_events(args.input),
        schema_registry_url=args.schema_registry,
        transaction_topics=args.transaction_topic,
        skip_topics=args.skip_topic,
    )
    out = sys.stdout.buffer
    if args.compare is not None:
        return _compare(args, result)
    if args.json:
        for entity, entity_id, record in result.live:
            out.write(encode_json({"entity": entity, "entity_id": entity_id, "record": record}) + b"\n")
        for dead in result.dead_letters:
            out.write(encode_json({"dead_letter": dead.as_json()}) + b"\n")
        tx = result.transactions
        if tx.begins or tx.ends or tx.skipped:  # the capture holds a transaction topic
            out.write(encode_json({"transactions": tx.as_json()}) + b"\n")
        return 0
    tx = result.transactions
    counts = Counter(entity for entity, _, _ in result.live)
    print("live entities:")
    for name in ENTITY_NAMES:
        print(f"  {name:<14} {counts.get(name, 0):>8}")
    print(f"stale or duplicate changes ignored: {result.stale}; tombstones skipped: {result.tombstones}")
    if result.swept:
        print(f"rows a completed re-snapshot did not read (deleted in a gap), left out: {result.swept}")
    if tx.begins or tx.ends or tx.skipped:
        print(
            f"source transactions: {tx.complete} whole, {len(tx.incomplete)} not whole in this capture "
            f"(BEGIN {tx.begins}, END {tx.ends}); messages of skipped topics: {tx.skipped}"
        )
    print(f"dead letters: {len(result.dead_letters)}")
    for dead in result.dead_letters:
        p = dead.position
        print(f"  {p.topic}[{p.partition}]@{p.offset}: {dead.error} ({dead.reason})")
    return 0


def _compare(args: argparse.Namespace, current: Any) -> int:
    """``replay --compare NEW``: the same events under the new mapping, the two states compared."""
    from connector.ingest.mapping_diff import replay_diff
    from connector.ingest.replay import encode_json, read_events, replay
    from connector.mapping import Mapper, load_mapping

    old_spec, new_spec = load_mapping(args.mapping), load_mapping(args.compare)
    new = replay(
        new_spec,
        read_events(args.input),
        schema_registry_url=args.schema_registry,
        transaction_topics=args.transaction_topic,
        skip_topics=args.skip_topic,
    )
    diff = replay_diff(current, new, Mapper(old_spec).versions, Mapper(new_spec).versions)
    if args.json:
        sys.stdout.buffer.write(encode_json(diff.as_json()) + b"\n")
    else:
        print(f"{args.compare} against {args.mapping} on {args.input}:")
        print(diff.describe())
    return 0
