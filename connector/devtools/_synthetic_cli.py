"""``python -m connector.devtools.synthetic``: publish the stream, write its expected state.

Private to ``synthetic`` (kept apart so the generator module stays readable). Only counts and
rates are printed, never a record's values.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from connector.devtools.synthetic import DEMO_SCALE, SyntheticEvent, SyntheticStream, generate
from connector.model import ENTITY_NAMES

__all__ = ["main", "publish", "write_expected"]

_FILE_THRESHOLD = 5000  # CareCloud's: more records than this go as a file (connector/snapshot/routing.py)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.devtools.synthetic",
        description="Synthetic Debezium CDC stream for the six CareCloud entities (examples/mapping.yaml).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--scale", type=int, default=DEMO_SCALE, help=f"families (default {DEMO_SCALE})")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--malformed", type=int, default=None, help="bad events (default: one per kind)")
    common.add_argument("--topic-prefix", default="benefits.public.", help="topic = prefix + table")
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", parents=[common], help="create the source topics and produce the stream")
    pub.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    pub.add_argument("--partitions", type=int, default=3, help="for topics created here (default 3)")
    pub.add_argument("--replication-factor", type=int, default=1)
    pub.add_argument("-X", dest="config", action="append", default=[], metavar="KEY=VALUE", help="librdkafka")
    exp = sub.add_parser("expected", parents=[common], help="write the expected final state as JSON")
    exp.add_argument("--out", type=Path, required=True)
    sub.add_parser("stats", parents=[common], help="generate without Kafka: counts and events/s")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"seed": args.seed, "topic_prefix": args.topic_prefix}
    if args.malformed is not None:
        options["malformed"] = args.malformed
    try:
        stream = generate(args.scale, **options)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "publish":
        config = dict(item.partition("=")[::2] for item in args.config)
        return publish(stream, args.bootstrap, args.partitions, args.replication_factor, config)
    if args.command == "expected":
        counts = write_expected(stream, args.out)
        print(f"wrote the expected state of scale {stream.scale} (seed {stream.seed}) to {args.out}")
        _print_counts(counts, stream)
        return 0
    return _stats(stream)


def publish(
    stream: SyntheticStream, bootstrap: str, partitions: int, replication: int, config: dict[str, str]
) -> int:
    """Create the missing source topics and produce every event, keyed by the row's primary
    key with Kafka's Java partitioner (as Debezium's) and an idempotent producer, so a row's
    events stay in one partition in the generated order. 0 when every event was acknowledged."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    base: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap, **config}
    admin = AdminClient(base)
    existing = admin.list_topics(timeout=30).topics
    missing = [topic for topic in stream.topics if topic not in existing]
    if missing:
        futures = admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
        for future in futures.values():
            error = future.exception(timeout=60)
            if error is not None and error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                print(f"cannot create topic: {error}", file=sys.stderr)
                return 1
    producer = Producer(
        {
            **base,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    failed = 0

    def delivered(err: Any, _msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    started = time.perf_counter()
    sent = tombstones = 0
    timed = _Timed(iter(stream))
    for event in timed:
        while True:
            try:
                producer.produce(event.topic, value=event.value, key=event.key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.2)
        producer.poll(0)
        sent += 1
        tombstones += event.value is None
    unsent = producer.flush(120)
    elapsed = time.perf_counter() - started
    print(
        f"published {sent} events ({tombstones} tombstones, {stream.malformed} malformed) to "
        f"{len(stream.topics)} topics ({len(missing)} created) in {elapsed:.1f} s: "
        f"{sent / elapsed:,.0f} events/s; generation alone {sent / max(timed.seconds, 1e-9):,.0f} events/s"
    )
    if failed or unsent:
        print(f"{failed + unsent} events were not acknowledged by the broker", file=sys.stderr)
        return 1
    return 0


def write_expected(stream: SyntheticStream, out: Path) -> dict[str, int]:
    """Write ``{"entities": {entity: {EntityId: record}}, "dead_letters": n, ...}`` with each
    value encoded as the JSON Lines sink writes it (ISO dates, ``...Z`` timestamps, decimals
    as exact strings), so a delivered snapshot compares field for field; returns the counts."""
    from connector.sinks._cells import encoders

    entities: dict[str, dict[str, dict[str, Any]]] = {entity: {} for entity in ENTITY_NAMES}
    for entity, entity_id, record in stream.iter_expected():
        entities[entity][entity_id] = {
            name: enc(record[name]) for name, enc in encoders(entity, for_csv=False)
        }
    counts = {entity: len(records) for entity, records in entities.items()}
    doc = {
        "scale": stream.scale,
        "seed": stream.seed,
        "topics": list(stream.topics),
        "dead_letters": stream.expected_dead_letters,
        "dead_letter_reasons": list(stream.dead_letter_reasons()),
        "counts": counts,
        "entities": {entity: dict(sorted(records.items())) for entity, records in entities.items()},
    }
    out.write_bytes(orjson.dumps(doc))
    return counts


class _Timed:
    """Wraps the event iterator to measure generation apart from producing."""

    def __init__(self, events: Iterator[SyntheticEvent]) -> None:
        self._events = events
        self.seconds = 0.0

    def __iter__(self) -> Iterator[SyntheticEvent]:
        while True:
            started = time.perf_counter()
            event = next(self._events, None)
            self.seconds += time.perf_counter() - started
            if event is None:
                return
            yield event


def _stats(stream: SyntheticStream) -> int:
    per_topic: dict[str, int] = {}
    started = time.perf_counter()
    for event in stream:
        per_topic[event.topic] = per_topic.get(event.topic, 0) + 1
    elapsed = time.perf_counter() - started
    total = sum(per_topic.values())
    print(f"generated {total} events in {elapsed:.1f} s: {total / elapsed:,.0f} events/s")
    for topic, count in per_topic.items():
        print(f"  {topic:40} {count:>10}")
    _print_counts(stream.expected_counts(), stream)
    return 0


def _print_counts(counts: dict[str, int], stream: SyntheticStream) -> None:
    print(f"expected live records (dead letters: {stream.expected_dead_letters}):")
    for entity, count in counts.items():
        route = "file" if count > _FILE_THRESHOLD else "api"
        print(f"  {entity:14} {count:>10}  ({route})")
