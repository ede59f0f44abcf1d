"""``make demo``: the connector's whole job on one machine, checked against an independent answer.

    python -m connector.devtools.demo [--scale 1000] [--keep] [--json]

1. starts the real components: the project's Apache Kafka broker, an S3-compatible server
   (moto, over HTTP) and the Portal simulator (unless ``--bootstrap`` / ``--s3-endpoint`` name
   running ones);
2. publishes the synthetic Debezium stream of the six entities (``synthetic.generate``):
   creates, updates, deletes, re-creates, duplicates, out-of-order deliveries and malformed
   events; at the default scale Claim crosses CareCloud's 5000-record file threshold;
3. runs the ingest service until it has caught up (lag 0), with /metrics served meanwhile;
4. runs today's snapshot: files to S3 and batches to the Portal simulator, manifest last;
5. compares what was delivered (the S3 files, the manifest, the simulator's accepted sets)
   with the generator's expected final state, entity by entity, and the dead letters with the
   malformed events it published;
6. prints a summary and where to look, then shuts everything down (``--keep``: waits for
   Ctrl-C first). Exit status 0 only when every entity matches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import orjson

from connector._fastpath import fastpath_available
from connector._table import table
from connector.config import load_settings
from connector.devtools._demo_check import EntityCheck, check_entity
from connector.devtools._synthetic_cli import publish
from connector.devtools.kafka import KafkaBroker, fetch_jars
from connector.devtools.portal_simulator import PortalSimulator
from connector.devtools.s3_server import S3Endpoint, S3Server
from connector.devtools.synthetic import DEMO_SCALE, generate
from connector.ingest.service import IngestService
from connector.mapping import load_mapping
from connector.model import ENTITY_NAMES
from connector.ops.health import HealthServer, Heartbeat
from connector.ops.metrics import METRICS
from connector.snapshot.lag import measure_lag
from connector.snapshot.service import build_run, build_storage, schedule_of

__all__ = ["main"]

_MAPPING = Path(__file__).resolve().parents[2] / "examples" / "mapping.yaml"
_API_KEY = "demo-key"
_BUCKET = "carecloud-demo"


class _Progress:
    """Numbered steps with their duration, and a bar for the long ones (stderr)."""

    def __init__(self, steps: int, quiet: bool) -> None:
        self.steps, self.step, self.quiet = steps, 0, quiet
        self._drawn = False
        self._started = time.monotonic()

    def begin(self, text: str) -> None:
        self.step += 1
        self._started = time.monotonic()
        self._say(f"[{self.step}/{self.steps}] {text} ...")

    def bar(self, done: int, total: int, unit: str) -> None:
        """A bar redrawn in place on a terminal; nothing in a log (CI), where it would be noise."""
        if self.quiet or not sys.stderr.isatty():
            return
        done = min(max(done, 0), total)
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r      [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} {unit}")
        sys.stderr.flush()
        self._drawn = True

    def end(self, text: str = "done") -> None:
        if self._drawn:
            sys.stderr.write("\r" + " " * 70 + "\r")
            self._drawn = False
        self._say(f"      {text} ({time.monotonic() - self._started:.1f} s)")

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=int, default=DEMO_SCALE, help="families to generate (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--file-threshold", type=int, default=5000, help="CareCloud's file threshold")
    parser.add_argument("--bootstrap", default=None, help="use this Kafka instead of starting one")
    parser.add_argument("--s3-endpoint", default=None, help="use this S3 server instead of starting one")
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="carecloud-demo-"))
    progress = _Progress(6, quiet=False)
    try:
        with ExitStack() as stack:
            summary = _demo(args, work, stack, progress)
            _print_summary(summary, args.json)
            if args.keep:
                print("everything is still running; Ctrl-C stops it", file=sys.stderr, flush=True)
                with suppress(KeyboardInterrupt):
                    threading.Event().wait()
            progress.begin("shutting down")
        progress.end()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["ok"] else 1


def _demo(args: argparse.Namespace, work: Path, stack: ExitStack, progress: _Progress) -> dict[str, Any]:
    progress.begin("starting Kafka, the S3 server and the Portal simulator")
    bootstrap = args.bootstrap
    if bootstrap is None:
        fetch_jars()
        bootstrap = stack.enter_context(KafkaBroker(work / "kafka")).bootstrap
    endpoint = S3Endpoint(args.s3_endpoint) if args.s3_endpoint else stack.enter_context(S3Server()).endpoint
    bucket = f"{_BUCKET}-{int(time.time())}"
    endpoint.client().create_bucket(Bucket=bucket)
    portal = stack.enter_context(PortalSimulator(_API_KEY))
    progress.end(f"Kafka {bootstrap}, S3 {endpoint.url}, Portal {portal.url}")

    progress.begin(f"publishing the synthetic CDC stream (scale {args.scale})")
    run_id = f"demo{int(time.time())}"
    # Topics of their own, so a demo against a broker that ran one before starts from nothing.
    stream = generate(args.scale, seed=args.seed, topic_prefix=f"{run_id}.public.")
    mapping = work / "mapping.yaml"
    mapping.write_text(_MAPPING.read_text().replace("benefits.public.", f"{run_id}.public."))
    if publish(stream, bootstrap, 3, 1, {}) != 0:
        raise SystemExit("publishing the stream failed")
    progress.end()

    settings = load_settings(
        kafka={"bootstrap_servers": bootstrap},
        ingest={
            "mapping_file": mapping,
            "group_id": f"{run_id}-ingest",
            "state_topic": f"{run_id}.state",
            "dlq_topic": f"{run_id}.dlq",
            "state_dir": work / "state",
            "transactional_id": f"{run_id}-0",
        },
        snapshot={
            "enabled": True,
            "sink": "s3",
            "prefix": "carecloud",
            "api_enabled": True,
            "file_threshold": args.file_threshold,
            "lag_policy": "go",
            "work_dir": work,
        },
        s3={
            "bucket": bucket,
            "endpoint_url": endpoint.url,
            "region": "us-east-1",
            "access_key_id": "demo",
            "secret_access_key": "demo",
        },
        portal={"base_url": portal.url, "api_key": _API_KEY},
        ops={"http_host": "127.0.0.1", "http_port": 0, "log_level": "ERROR"},  # dead letters are expected
    )
    from connector.ops.logs import configure_logging

    configure_logging(settings.ops.log_level, settings.ops.log_format, secrets_from=settings)
    progress.begin("ingesting until caught up")
    heartbeat = Heartbeat()
    spec = load_mapping(mapping)
    service = IngestService(settings, spec, metrics=METRICS, heartbeat=heartbeat)

    def readiness() -> str | None:
        return None if service.ready.is_set() else "starting"

    health = stack.enter_context(
        HealthServer.from_settings(settings.ops, METRICS, readiness, heartbeat).start()
    )
    stop = threading.Event()
    service.start()
    ingest = threading.Thread(target=service.run, args=(stop,), name="ingest", daemon=True)
    ingest.start()
    stack.callback(ingest.join)
    stack.callback(stop.set)
    total = sum(1 for _ in stream.events())
    for lag in _lag_until_zero(settings.kafka.client_config(), settings.ingest.group_id, sorted(spec.topics)):
        progress.bar(total - lag, total, "events")
    progress.end(f"{total:,} events consumed")

    progress.begin("running today's snapshot (files to S3, batches to the Portal)")
    today = dt.datetime.now(dt.UTC).astimezone(schedule_of(settings).tz).date()
    result = build_run(settings, metrics=METRICS).run(today)
    manifest = result.manifest
    if manifest is None:
        raise SystemExit(f"the snapshot was not published ({result.outcome.value})")
    progress.end(f"{result.outcome.value}: {result.manifest_key}")

    progress.begin("checking the delivery against the generator's expected state")
    storage = build_storage(settings)
    expected = stream.expected_state()
    http = httpx.Client(base_url=portal.url, headers={"X-API-Key": _API_KEY}, timeout=30)
    checks: list[EntityCheck] = []
    for entity in ENTITY_NAMES:
        entry = manifest.entity(entity)
        assert entry is not None
        delivered: bytes | list[Any]
        if entry.key is not None:
            found = storage.get(entry.key)
            delivered = gzip.decompress(found[0]) if found else b""
        else:
            params = {"entity": entity, "date": today.isoformat()}
            delivered = http.get("/_sim/accepted", params=params).raise_for_status().json()["records"]
        checks.append(check_entity(entity, entry, expected[entity], delivered))
    dead_letters = _dead_letters(settings.kafka.client_config(), settings.ingest.dlq_topic)
    progress.end()
    ok = all(check.ok for check in checks) and dead_letters == stream.expected_dead_letters
    return {
        "ok": ok,
        "scale": args.scale,
        "events": total,
        "dead_letters": dead_letters,
        "expected_dead_letters": stream.expected_dead_letters,
        "entities": [check.as_json() for check in checks],
        "manifest": f"s3://{bucket}/{result.manifest_key}",
        "s3_endpoint": endpoint.url,
        "bucket": bucket,
        "metrics_url": f"http://127.0.0.1:{health.port}/metrics",
        "portal_accepted_url": f"{portal.url}/_sim/accepted?entity=Provider&date={today.isoformat()}",
        "lag_at_cut": manifest.lag.get("total"),
        "phases_s": {k: round(v, 2) for k, v in result.phases.items()},
        "fast_path": "compiled" if fastpath_available() is None else "python",
    }


def _lag_until_zero(base: dict[str, Any], group: str, topics: list[str]) -> Iterator[int]:
    """The ingest lag every half second until it is 0 (the DLQ'd events count as consumed)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        lag = measure_lag(base, group, topics).total
        yield lag
        if lag == 0:
            return
        time.sleep(0.5)
    raise SystemExit("ingest did not catch up within 10 minutes")


def _dead_letters(base: dict[str, Any], topic: str) -> int:
    """Committed records in the dead-letter topic (read committed: aborted batches excluded)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **base,
            "group.id": f"{topic}-demo-count",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    count = 0
    try:
        while True:
            msg = consumer.poll(10)
            if msg is None:
                return count
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return count
                raise SystemExit(f"reading the dead-letter topic: {err.name()}")
            count += 1
    finally:
        consumer.close()


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    rows = [
        [e["entity"], e["route"], e["delivered"], e["expected"], "yes" if e["ok"] else f"NO: {e['problem']}"]
        for e in summary["entities"]
    ]
    print()
    print(table(["entity", "route", "delivered", "expected", "matches"], rows))
    print(f"dead letters: {summary['dead_letters']} (expected {summary['expected_dead_letters']})")
    print(f"manifest:         {summary['manifest']}  (S3 endpoint {summary['s3_endpoint']})")
    print(f"metrics:          {summary['metrics_url']}")
    if summary["fast_path"] == "compiled":
        print("fast path:        compiled (the carecloud_fastpath extension, for ingest and snapshot)")
    else:
        print("fast path:        Python (no carecloud_fastpath extension: built without cargo); same")
        print("                  results at about half the ingest rate and a third of the snapshot's")
    print(f"Portal received:  {summary['portal_accepted_url']}  (header X-API-Key: {_API_KEY})")
    print("result:", "every entity matches the expected state" if summary["ok"] else "MISMATCH (see above)")
    if as_json:
        print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    sys.exit(main())
