"""The ``dlq list|replay`` commands: the dead letters listed, and replayed after a fix.

``dlq`` acts on the dead-letter topic and the source topics, with the deployment's settings
(``CARECLOUD_*``). Output names partitions, offsets, error classes and reasons; never a key,
a value or an EntityId (the dead letters are families' health claims). Registered with the
ingest stage's other commands (``connector.ingest.commands``, which re-exports these names).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from connector._table import table

if TYPE_CHECKING:  # Kafka clients are imported when a command runs, so --help stays fast
    from connector.config import Settings
    from connector.ingest.dead_letter import DeadLetter
    from connector.ingest.dlq_replay import ReplayResult

__all__ = ["add_dlq_command", "format_replay", "parse_timestamp"]


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
    from connector.ingest.dlq_read import DlqFilter, read_dead_letters

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
    from connector.ingest.dlq_replay import replay
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
