"""Ingest throughput: the whole ingest path beside the minimal exactly-once loop, on one broker.

    .venv/bin/python bench/ingest.py [--events 200000] [--batch 5000] [--rounds 3] [--profile] [--no-faust]
                                     [--transactions]

Starts the project's broker on loopback, seeds a 3-partition topic with N ~1 KB Debezium
PostgreSQL JSON events (``family_events_full``, mapped by the example mapping's Family table),
warms the new JVM up, then measures over that topic, each loop timed from its partition
assignment to its last event, never asking for more events than remain: the ingest path
(``IngestService.run_batch`` in a loop; join and empty-store restore apart as ``join_s``) and
the minimal exactly-once loop (orjson decode, produce unchanged to a compacted topic, send
offsets, commit), alternating for ``--rounds`` rounds and compared by their medians; a bare
consume loop, a faust-streaming agent with a Table (``_faust_baseline``), and
``restore_partitions`` rebuilding deleted stores from a state topic of ``--restore-records``
records (the ingest's own state records, copied with distinct keys; median of ``--rounds``).
``--transactions`` turns transaction tracking on (the mapping's ``transactions.topic``, an empty
transaction topic): every event carries its own transaction block, so each adds a ledger record,
the worst case of docs/decisions/0020. ``--profile`` adds an ingest pass under a wall-clock
sampler of the main thread (unbiased, unlike cProfile) and prints where each event's time goes.
Targets live in ``docs/benchmarks.md``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import yaml
from _faust_baseline import faust_rate, require_faust  # bench/ is on sys.path: this runs as a script
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connector.config import IngestSettings, KafkaSettings, Settings
from connector.devtools.debezium_schema import column_schemas, wrap
from connector.devtools.generator import family_events_full
from connector.devtools.kafka import KafkaBroker, fetch_jars
from connector.ingest.service import IngestService
from connector.mapping import Mapper, parse_mapping
from connector.state.restore import restore_partitions
from connector.state.store import PartitionStore

TOPIC, PARTITIONS = "benefits.public.family", 3
TRANSACTIONS = "benefits.transaction"
TRACKING = False
"""``--transactions``: the mapping names Debezium's transaction topic (set once in ``main``)."""
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mapping.yaml"
CONSUMER = {  # what IngestService.start() sets, minus static membership
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "range",
    "fetch.queue.backoff.ms": 10,
}
# A sample goes to the first rule matching its innermost connector frame (file, function or "").
RULES = [
    ("mapping/fastpath.py", "", "fast path: compiled decode + map"),
    ("ingest/batch.py", "apply_fast", "fast path: apply (store get, peek, produce)"),
    ("model/codec.py", "", "validate"),
    ("state/codec.py", "decode_row", "decode_row (stored rows)"),
    ("state/codec.py", "", "encode_row, state_key"),
    ("state/store.py", "get", "store get (rocksdict)"),
    ("state/store.py", "write", "store write (rocksdict)"),
    ("state/resolve.py", "", "merge"),
    ("state/apply.py", "", "apply_change, batch view"),
    ("ingest/batch.py", "BatchView", "apply_change, batch view"),
    ("mapping/convert.py", "", "map: field converters"),
    ("mapping/", "", "map: fields loop, ids, EntityChange"),
    ("source/version.py", "", "decode: version (source.sequence)"),
    ("source/", "", "decode: orjson, envelope, ChangeEvent"),
    ("ingest/transaction.py", "_commit", "commit (send offsets, commit)"),
    ("ingest/transaction.py", "_on_delivery", "delivery callbacks"),
    ("ingest/transaction.py", "", "loop: Message calls, produce, Position"),
]


def _mapping() -> str:
    """The example mapping cut to the Family table (templates, enums, JSON paths, decimals, dates)."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["topics"] = {TOPIC: doc["topics"][TOPIC]}
    doc["tables"] = {"public.family": doc["tables"]["public.family"]}
    if TRACKING:
        doc["transactions"] = {"topic": TRANSACTIONS}
    return yaml.safe_dump(doc, sort_keys=False)


def _seed(base: dict[str, Any], events: list[tuple[bytes, bytes | None]]) -> None:
    admin = AdminClient(base)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)
    if TRACKING:
        admin.create_topics([NewTopic(TRANSACTIONS, 1, 1)])[TRANSACTIONS].result(30)
    # log_level 3: not the "coordinator load in progress" warning a just-started broker gives
    producer = Producer({**base, "enable.idempotence": True, "linger.ms": 20, "log_level": 3})
    for key, value in events:
        while True:
            try:
                producer.produce(TOPIC, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("seeding did not finish in 60 s")


def _subscribed(base: dict[str, Any], group: str) -> tuple[Consumer, list[float]]:
    """A consumer set up like the ingest's, and the list its assignment time goes to."""
    consumer = Consumer({**base, **CONSUMER, "group.id": group})
    assigned: list[float] = []
    consumer.subscribe([TOPIC], on_assign=lambda c, parts: assigned.append(time.perf_counter()))
    return consumer, assigned


def _raw(base: dict[str, Any], n: int, batch: int) -> float:
    consumer, assigned = _subscribed(base, "bench-raw")
    seen = 0
    while seen < n:
        seen += sum(1 for m in consumer.consume(min(batch, n - seen), 0.5) if m.error() is None)
    elapsed = time.perf_counter() - assigned[0]
    consumer.close()
    return n / elapsed


def _baseline(base: dict[str, Any], n: int, batch: int, name: str = "baseline") -> float:
    """The least an exactly-once consumer of these events can do per batch."""
    out, admin = f"bench.{name}.out", AdminClient(base)  # held: a dropped client fails its futures
    admin.create_topics([NewTopic(out, PARTITIONS, 1, config={"cleanup.policy": "compact"})])[out].result(30)
    producer = Producer({**base, "transactional.id": f"bench-{name}", "linger.ms": 5})
    producer.init_transactions(30)
    consumer, assigned = _subscribed(base, f"bench-{name}")
    seen, loads = 0, orjson.loads
    while seen < n:
        msgs = [m for m in consumer.consume(min(batch, n - seen), 0.5) if m.error() is None]
        if not msgs:
            continue
        producer.begin_transaction()
        last: dict[int, int] = {}
        for msg in msgs:
            value = msg.value()
            if value is not None:
                loads(value)
            partition = msg.partition() or 0
            producer.produce(out, value, msg.key(), partition=partition)
            last[partition] = msg.offset() or 0
        offsets = [TopicPartition(TOPIC, p, o + 1) for p, o in last.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
        seen += len(msgs)
    elapsed = time.perf_counter() - assigned[0]
    consumer.close()
    return n / elapsed


def _service(bootstrap: str, work: Path, name: str, batch: int, fast_path: str = "auto") -> IngestService:
    ingest = IngestSettings(
        mapping_file=work / "mapping.yaml",
        group_id=f"bench-{name}",
        state_topic=f"bench.{name}.state",
        dlq_topic=f"bench.{name}.dlq",
        state_dir=work / f"{name}-store",
        transactional_id=f"bench-{name}",
        batch_max_events=batch,
        fast_path=fast_path,
    )
    settings = Settings(KafkaSettings(bootstrap_servers=bootstrap), ingest)
    return IngestService(settings, parse_mapping(_mapping()))


def _run_service(service: IngestService, n: int, step: Callable[[], int]) -> tuple[float, float]:
    """(join seconds, events/s from the assignment until all ``n`` are committed)."""
    batch, assigned = service.ingest.batch_max_events, []

    def watch() -> None:  # ready is set at the end of the assignment callback
        service.ready.wait()
        assigned.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    service.start()
    while service.counts["events"] < n:
        service.ingest.batch_max_events = min(batch, n - service.counts["events"])  # no idle tail
        step()
        if time.perf_counter() > start + 900:
            service.ready.set()  # release the watcher
            raise TimeoutError(f"ingest committed {service.counts['events']} of {n} events in 900 s")
    done = time.perf_counter()
    watcher.join()
    return assigned[0] - start, n / (done - assigned[0])


def _records(base: dict[str, Any], topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """Every committed record of ``topic``: (partition, key, value)."""
    consumer = Consumer({**base, **CONSUMER, "group.id": "bench-count", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    records, eof = [], 0
    while eof < PARTITIONS:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error() is not None:
                eof += 1
            else:
                records.append((msg.partition() or 0, msg.key() or b"", msg.value()))
    consumer.close()
    return records


def _state_topic(base: dict[str, Any], source: str, target: str, records: int, batch: int) -> int:
    """A state topic of about ``records`` records made of the ingest's own state records
    (copies with distinct keys), written as the ingest writes it: per partition, in
    transactions of ``batch`` records. The restore's fixed costs (consumer, stores, flush) are
    then small beside the reading, as in a real replica's store of millions of rows."""
    rows = _records(base, source)
    admin = AdminClient(base)
    admin.create_topics([NewTopic(target, PARTITIONS, 1, config={"cleanup.policy": "compact"})])[
        target
    ].result(30)
    producer = Producer({**base, "transactional.id": f"bench-{target}", "linger.ms": 5})
    producer.init_transactions(30)
    written, copy = 0, 0
    while written < records:
        for start in range(0, len(rows), batch):
            producer.begin_transaction()
            for partition, key, value in rows[start : start + batch]:
                producer.produce(target, value, key + f"~{copy}".encode(), partition=partition)
            producer.commit_transaction(60)
            written += len(rows[start : start + batch])
            if written >= records:
                break
        copy += 1
    return written


def _restore(base: dict[str, Any], state_topic: str, state_dir: Path) -> float:
    """Seconds to rebuild deleted local stores from the state topic, all partitions at once
    as a replica restores what it is assigned (one consumer), stores closed (flushed)."""
    shutil.rmtree(state_dir, ignore_errors=True)
    start = time.perf_counter()
    stores = {p: PartitionStore(state_dir / f"p{p}") for p in range(PARTITIONS)}
    restore_partitions(base, state_topic, stores)
    for store in stores.values():
        store.close()
    return time.perf_counter() - start


def _category(frame: FrameType | None) -> str | None:
    """The rule for the innermost connector frame of a stack inside ``run_batch``, else None."""
    stack = []
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    if not any(f.f_code.co_name == "run_batch" for f in stack):
        return None
    for f in stack:
        file, func = f.f_code.co_filename, f.f_code.co_qualname
        if func.endswith("run_batch") and ".consume(" in linecache.getline(file, f.f_lineno):
            return "consume (fetch wait, rebalance callbacks)"
        for suffix, name, label in RULES:
            if f"connector/{suffix}" in file and name in func:
                return label
    return "other"


def _profile(bootstrap: str, work: Path, n: int, batch: int) -> None:
    """Where the ingest path's time goes, by wall-clock samples of the main thread every 1 ms.

    Unlike cProfile, sampling does not inflate many small Python calls against C calls."""
    service, samples, stop = _service(bootstrap, work, "profile", batch), Counter[str](), threading.Event()
    main_id = threading.get_ident()

    def sample() -> None:
        while not stop.wait(0.001):
            label = _category(sys._current_frames().get(main_id))  # noqa: SLF001  # the sampling API
            if label is not None and service.ready.is_set():
                samples[label] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, rate = _run_service(service, n, service.run_batch)
    finally:
        stop.set()
        service.close()
    total = sum(samples.values())
    print(f"\nprofile: {rate:,.0f} events/s under sampling, {1e6 / rate:.1f} us/event, {total:,} samples")
    for label, count in samples.most_common():
        print(f"  {label:<42} {count / total * 1e6 / rate:7.2f} us/event {count / total:6.1%}")


def _measure(args: argparse.Namespace, events: list[tuple[bytes, bytes | None]]) -> dict[str, Any]:
    n, out = len(events), dict[str, Any]()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with KafkaBroker(work / "kafka") as broker:
            base: dict[str, Any] = broker.client_config()
            (work / "mapping.yaml").write_text(_mapping())
            _seed(base, events)
            _baseline(base, min(n, 50_000), args.batch, "warm-up")  # a new JVM runs slow at first
            out["raw_events_per_s"] = _raw(base, n, args.batch)
            # The two loops alternate, each round on fresh groups and topics, and the medians are
            # compared: on a shared 2-core machine one pass of either moves by +-20 % between runs.
            baselines, ingests, joins = [], [], []
            for r in range(args.rounds):
                baselines.append(_baseline(base, n, args.batch, f"baseline-{r}"))
                service = _service(broker.bootstrap, work, f"ingest-{r}", args.batch, args.fast_path)
                try:
                    join_s, rate = _run_service(service, n, service.run_batch)
                finally:
                    out["counts"] = dict(service.counts)
                    service.close()
                ingests.append(rate)
                joins.append(join_s)
            out["baseline_rounds"] = [round(x) for x in baselines]
            out["ingest_rounds"] = [round(x) for x in ingests]
            out["baseline_events_per_s"] = statistics.median(baselines)
            out["events_per_s"] = statistics.median(ingests)
            out["join_s"] = statistics.median(joins)
            state_topic = f"bench.ingest-{args.rounds - 1}.state"
            records = _state_topic(base, state_topic, "bench.restore.state", args.restore_records, args.batch)
            restores = [
                _restore(base, "bench.restore.state", work / "restore-store") for _ in range(args.rounds)
            ]
            out["restore_records"] = records
            out["restore_s"] = round(statistics.median(restores), 2)
            out["restore_records_per_s"] = records / statistics.median(restores)
            for guarantee, key in (("exactly_once", "faust"), ("at_least_once", "faust_alo")):
                rate, note = None, "skipped (--no-faust)"
                if not args.no_faust:
                    rate, note = faust_rate(
                        broker.bootstrap, TOPIC, args.faust_events, args.faust_seconds, guarantee
                    )
                out[f"{key}_events_per_s"], out[f"{key}_note"] = rate, note
            if args.profile:
                _profile(broker.bootstrap, work, n, args.batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to seed (about)")
    parser.add_argument("--batch", type=int, default=5000, help="events per transaction")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ingest/baseline passes (medians)")
    parser.add_argument(
        "--restore-records",
        type=int,
        default=1_000_000,
        help="state records the restore reads (median of --rounds)",
    )
    parser.add_argument("--faust-events", type=int, default=30_000)
    parser.add_argument("--faust-seconds", type=float, default=45.0, help="measurement window at most")
    parser.add_argument("--no-faust", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also sample where the ingest time goes")
    parser.add_argument(
        "--wrapped", action="store_true", help="each event with its Connect schema (schemas.enable=true)"
    )
    parser.add_argument(
        "--fast-path", choices=["auto", "on", "off"], default="auto", help="ingest.fast_path of the ingest"
    )
    parser.add_argument(
        "--transactions", action="store_true", help="transaction tracking on: a ledger record per event"
    )
    args = parser.parse_args()
    global TRACKING
    TRACKING = args.transactions
    if not args.no_faust:
        require_faust()  # before minutes of measuring: `make bench-deps` installs it
    for sig in (signal.SIGINT, signal.SIGTERM):  # unwind (stop the broker) on either; a background
        signal.signal(sig, signal.default_int_handler)  # job ignores SIGINT unless told otherwise

    load = os.getloadavg()[0]
    events = list(family_events_full(args.events // 4, 3, deletes_every=50))
    if args.wrapped:  # JsonConverter's default, schemas.enable=true: each value carries its schema
        typed = column_schemas(Mapper(parse_mapping(_mapping())), TOPIC)
        events = [(k, v if v is None else orjson.dumps(wrap(orjson.loads(v), typed))) for k, v in events]
    values = [len(v) for _, v in events if v]
    fetch_jars()
    m = _measure(args, events)
    rates = [k for k, v in m.items() if k.endswith("_per_s") and v is not None]
    r: dict[str, Any] = {
        "events": len(events),
        "batch": args.batch,
        "rounds": args.rounds,
        "wrapped": args.wrapped,
        "fast_path": args.fast_path,
        "transactions": args.transactions,
        **m,
        **{k: round(m[k]) for k in rates},
    }
    r["ratio"] = round(m["events_per_s"] / m["baseline_events_per_s"], 3)
    r["avg_value_bytes"], r["join_s"] = round(sum(values) / len(values)), round(m["join_s"], 2)
    r["load_avg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    r["cpus"], r["python"] = os.cpu_count(), platform.python_version()
    print(f"\n{r['events']:,} events ({r['avg_value_bytes']} B avg), batch {args.batch}, {r['cpus']} CPUs")
    for label, key, note in [
        ("ingest (IngestService)", "events_per_s", f"median of {r['ingest_rounds']}, join {r['join_s']} s"),
        (
            "baseline (minimal EOS loop)",
            "baseline_events_per_s",
            f"median of {r['baseline_rounds']}, ratio {r['ratio']} (target >= 0.5)",
        ),
        ("raw consume", "raw_events_per_s", ""),
        ("faust, exactly_once", "faust_events_per_s", r["faust_note"]),
        ("faust, at_least_once", "faust_alo_events_per_s", r["faust_alo_note"]),
        (
            "restore",
            "restore_records_per_s",
            f"{r['restore_records']:,} records, {r['restore_s']} s (median of {r['rounds']}, all partitions)",
        ),
    ]:
        rate = "n/a" if r[key] is None else f"{r[key]:,}/s"
        print(f"  {label:<28} {rate:>10}  {note}")
    print(f"  load average (1 min): {r['load_avg_1m'][0]} before, {r['load_avg_1m'][1]} after")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
