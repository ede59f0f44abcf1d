"""The ingest stage's commands: ``ingest`` (the service), ``replay`` (captured events through
decode -> map -> resolve, in memory) and ``dlq list|replay`` (the dead letters).

``dlq`` acts on the dead-letter topic and the source topics, with the deployment's settings
(``CARECLOUD_*``). Output names partitions, offsets, error classes and reasons; never a key,
a value or an EntityId (the dead letters are families' health claims).

``ingest`` runs the service alone: what runs beside it in the same process (the daily
snapshot) is handed in by ``connector.cli``, since ingest never imports the snapshot.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import orjson

from connector._table import table

if TYPE_CHECKING:  # Kafka clients are imported when a command runs, so --help stays fast
    from connector.config import Settings
    from connector.ingest.dlq import DeadLetter, ReplayResult

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
    p.add_argument("--input", required=True, help="the events file (JSON Lines)")
    p.add_argument("--schema-registry", default=None, help="Schema Registry URL for Avro topics")
    p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    p.set_defaults(handler=_cmd_offline_replay)


def _cmd_offline_replay(args: argparse.Namespace) -> int:
    from collections import Counter

    from connector.ingest.replay import encode_json, read_events, replay
    from connector.mapping import load_mapping
    from connector.model import ENTITY_NAMES

    result = replay(
        load_mapping(args.mapping), read_events(args.input), schema_registry_url=args.schema_registry
    )
    out = sys.stdout.buffer
    if args.json:
        for entity, entity_id, record in result.live:
            out.write(encode_json({"entity": entity, "entity_id": entity_id, "record": record}) + b"\n")
        for dead in result.dead_letters:
            out.write(encode_json({"dead_letter": dead.as_json()}) + b"\n")
        return 0
    counts = Counter(entity for entity, _, _ in result.live)
    print("live entities:")
    for name in ENTITY_NAMES:
        print(f"  {name:<14} {counts.get(name, 0):>8}")
    print(f"stale or duplicate changes ignored: {result.stale}; tombstones skipped: {result.tombstones}")
    print(f"dead letters: {len(result.dead_letters)}")
    for dead in result.dead_letters:
        p = dead.position
        print(f"  {p.topic}[{p.partition}]@{p.offset}: {dead.error} ({dead.reason})")
    return 0


def parse_timestamp(text: str) -> dt.datetime:
    """``--from-timestamp``: ISO 8601 with an offset (``Z`` is UTC); a naive time is ambiguous."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if when.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add one, e.g. {text}Z or {text}-08:00")
    return when


def add_dlq_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="list dead letters, or replay them to their original topics after a fix")
    dlq = p.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq.required = True
    listing = dlq.add_parser("list", help="dead letters: position, error, reason, time (never payloads)")
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    listing.set_defaults(handler=_cmd_list)
    again = dlq.add_parser(
        "replay",
        help="re-publish dead letters (original key, value, headers) to their original topic and partition",
        description="Run it after fixing the cause (e.g. the mapping): ingest takes the events again. "
        "Dead letters kept by reference (oversized: no bytes) are listed and skipped. A dead letter "
        "whose carecloud.topic header is not one of the mapping's source topics is refused and "
        "listed by DLQ offset (exit 1), never produced. Replaying an "
        "event twice, or one that is now stale, is harmless: the state merge orders changes by the "
        "source's version key (LSN, binlog position) inside the event, so an event older than the "
        "state's row is dropped and a second copy writes the same values again.",
    )
    _filters(again)
    again.add_argument("--dry-run", action="store_true", help="list what would be replayed; publish nothing")
    again.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    again.set_defaults(handler=_cmd_replay)


def _filters(p: argparse.ArgumentParser) -> None:
    start = p.add_mutually_exclusive_group()
    start.add_argument("--since", type=int, metavar="OFFSET", help="first dead-letter topic offset")
    start.add_argument(
        "--from-timestamp",
        type=parse_timestamp,
        metavar="ISO",
        help="dead-lettered at or after (with offset)",
    )
    p.add_argument("--reason", action="append", default=[], metavar="R", help="only this reason (repeatable)")
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="at most N dead letters, oldest first"
    )


def _settings() -> Settings:
    from connector.config import load_settings
    from connector.ops.logs import configure_logging_from

    settings = load_settings()
    configure_logging_from(settings)
    return settings


def _read(args: argparse.Namespace, settings: Settings) -> tuple[str, list[DeadLetter]]:
    from connector.ingest.dlq import DlqFilter, read_dead_letters

    flt = DlqFilter(args.since, args.from_timestamp, frozenset(args.reason), args.limit)
    topic = settings.ingest.dlq_topic
    return topic, list(read_dead_letters(settings.kafka.client_config(), topic, flt))


def _position(letter: DeadLetter) -> str:
    p = letter.position
    return "unknown" if p is None else f"{p.topic}[{p.partition}]@{p.offset}"


def _cmd_list(args: argparse.Namespace) -> int:
    topic, letters = _read(args, _settings())
    if args.json:
        out = sys.stdout.buffer
        for letter in letters:
            out.write(orjson.dumps(letter.as_json()) + b"\n")
        return 0
    rows = [
        [
            letter.dlq_offset,
            _position(letter),
            letter.error,
            letter.reason,
            letter.timestamp.isoformat(timespec="seconds") if letter.timestamp else None,
            "by reference" if letter.by_reference else "",
        ]
        for letter in letters
    ]
    print(table(["dlq offset", "position", "error", "reason", "timestamp", "note"], rows))
    print(f"{len(letters)} dead letter(s) in {topic}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from connector.ingest.dlq import replay
    from connector.mapping import load_mapping

    settings = _settings()
    # Only the mapping's source topics may be produced to, whatever a dead letter's header says.
    sources = frozenset(load_mapping(settings.ingest.mapping_file).topics)
    topic, letters = _read(args, settings)
    result = replay(settings.kafka.client_config(), letters, source_topics=sources, dry_run=args.dry_run)
    next_since = max((letter.dlq_offset for letter in letters), default=None)
    if args.json:
        counts: dict[str, dict[str, int]] = {}
        for (reason, outcome), n in sorted(result.counts.items()):
            counts.setdefault(reason, {})[outcome] = n
        doc = {
            "dry_run": args.dry_run,
            "counts": counts,
            "skipped": [letter.as_json() for letter in result.skipped],
            "refused": [_refused_json(letter) for letter in result.refused],
            "failed": [{**letter.as_json(), "kafka_error": err} for letter, err in result.failed],
            "next_since": None if next_since is None else next_since + 1,
        }
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    else:
        print(format_replay(result, letters, dry_run=args.dry_run, topic=topic))
    return 1 if result.failed or result.refused else 0


def _refused_json(letter: DeadLetter) -> dict[str, object]:
    """A refused dead letter by its place in the DLQ: its position headers are not to be trusted."""
    return {
        "dlq_partition": letter.dlq_partition,
        "dlq_offset": letter.dlq_offset,
        "error": letter.error,
        "reason": letter.reason,
    }


def format_replay(result: ReplayResult, letters: Sequence[DeadLetter], *, dry_run: bool, topic: str) -> str:
    """Counts per reason, then the dead letters that were not (or would be) replayed, by position."""
    out = []
    if dry_run:
        out.append("dry run: nothing published; would replay:")
        rows = [
            [p.topic, p.partition, p.offset, letter.reason]
            for letter in result.replayed
            if (p := letter.position)
        ]
        out.append(table(["topic", "partition", "offset", "reason"], rows))
    outcomes = ("would_replay" if dry_run else "replayed", "skipped", "refused", "duplicate", "failed")
    reasons = sorted({reason for reason, _ in result.counts})
    rows2 = [[reason, *(result.counts.get((reason, o), 0) for o in outcomes)] for reason in reasons]
    out.append(table(["reason", *(o.replace("_", " ") for o in outcomes)], rows2))
    if result.skipped:
        out.append("skipped (re-publish these from the source system):")
        out.extend(
            f"  {_position(letter)} ({letter.reason}): "
            + ("dead-lettered by reference, no bytes kept" if letter.by_reference else "no original position")
            for letter in result.skipped
        )
    if result.refused:
        out.append(
            "refused, not produced: the carecloud.topic header names a topic that is not one of the "
            "mapping's source topics (a corrupted or foreign dead letter; inspect it in the DLQ):"
        )
        out.extend(
            f"  dlq partition {letter.dlq_partition} offset {letter.dlq_offset} ({letter.reason})"
            for letter in result.refused
        )
    for letter, err in result.failed:
        out.append(f"failed: {_position(letter)} ({letter.reason}): {err}")
    if letters:
        last = max(letter.dlq_offset for letter in letters)
        out.append(f"read {topic} through offset {last}; to go on from here next time: --since {last + 1}")
    else:
        out.append(f"no dead letters in {topic} match")
    return "\n".join(out)
