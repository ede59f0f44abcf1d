"""The ingest command as the pod runs it: SIGTERM mid-stream, canaries, and what Prometheus scrapes.

Every process here is ``python -m connector.cli ...`` configured by environment only, with the
health port chosen by the OS (``CARECLOUD_OPS_HTTP_PORT=0``) and read from its output.

- RELIABILITY row 2: SIGTERM while a stream is being published ends the process with 0 within
  the grace period; the state topic then holds exactly the offline replay of the committed
  source offsets (the batch in flight committed or aborted whole, no transaction left open),
  and a restart finishes to exactly the generator's expected state.
- One full run (ingest with JSON logs at DEBUG and the daily snapshot in the same process,
  then a ``snapshot`` command whose upload of the canary's file is refused) over a stream
  seeded with canary values, some in events that are dead-lettered: no canary in any log
  line of any process nor in any scrape of ``/metrics``; and that running process exports
  every metric the alerts and the Grafana dashboard query, and is ready once caught up.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from connector.devtools.faulty_http import S3_ACCESS_DENIED, FaultyHttpProxy
from connector.devtools.s3_server import S3Endpoint
from connector.devtools.synthetic import SyntheticStream, generate
from connector.ingest.replay import replay
from connector.mapping import parse_mapping
from tests.integration.canary import (
    CANARY_AMOUNT,
    CANARY_DEAD_LETTERS,
    CANARY_ID,
    CANARY_NAME,
    canary_events,
    leaks,
)
from tests.integration.ops_helpers import (
    ConnectorProcess,
    committed_offsets,
    create_topics,
    expected_rows,
    local_today,
    open_transactions,
    produce,
    s3_env,
    source_messages,
    wait_caught_up,
    window_around_now,
)
from tests.integration.state_helpers import live_rows, read_state
from tests.kafka_helpers import KafkaTestCluster, unique
from tests.unit.ops.test_deploy_files import _alert_rules, _dashboard_exprs, _metric_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAPPING = (ROOT / "examples" / "mapping.yaml").read_text()
PARTITIONS = 3
GRACE_S = 30.0
"""The pod's terminationGracePeriodSeconds (deploy/k8s/base/statefulset.yaml)."""


def _ingest_env(kafka: KafkaTestCluster, work: Path, prefix: str, **extra: str) -> dict[str, str]:
    mapping = work / "mapping.yaml"
    mapping.write_text(MAPPING.replace("benefits.public.", prefix))
    return {
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "CARECLOUD_INGEST_MAPPING_FILE": str(mapping),
        "CARECLOUD_INGEST_GROUP_ID": unique("ops"),
        "CARECLOUD_INGEST_STATE_TOPIC": unique("state"),
        "CARECLOUD_INGEST_DLQ_TOPIC": unique("dlq"),
        "CARECLOUD_INGEST_STATE_DIR": str(work / "store"),
        "CARECLOUD_INGEST_TRANSACTIONAL_ID": unique("txn"),
        "CARECLOUD_OPS_HTTP_HOST": "127.0.0.1",
        "CARECLOUD_OPS_HTTP_PORT": "0",
        **extra,
    }


def _committed_records(kafka: KafkaTestCluster, topic: str) -> int:
    """Records of committed transactions in a one-partition topic (the dead-letter topic)."""
    return sum(1 for _ in _dlq_messages(kafka, topic))


def _dlq_messages(kafka: KafkaTestCluster, topic: str) -> Iterator[Message]:
    """The committed records of a one-partition topic, up to its end (callers check first that
    no transaction is open, so the end of a read-committed read is the end of the log)."""
    consumer = kafka.consumer(
        None, {"isolation.level": "read_committed", "enable.auto.commit": False, "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + 30
    try:
        while True:
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                return
            if err is None:
                yield msg
    finally:
        consumer.close()


# -- SIGTERM mid-stream --------------------------------------------------------------------------


def test_sigterm_mid_stream_exits_cleanly_and_leaves_state_and_offsets_exact(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    prefix = unique("term") + ".public."
    stream = generate(300, seed=21, topic_prefix=prefix)
    events = list(stream)
    create_topics(kafka.config(), stream.topics, PARTITIONS)
    env = _ingest_env(
        kafka, tmp_path, prefix, CARECLOUD_INGEST_BATCH_MAX_EVENTS="300", CARECLOUD_INGEST_BATCH_MAX_MS="200"
    )
    group, state_topic, dlq = (env[f"CARECLOUD_INGEST_{k}"] for k in ("GROUP_ID", "STATE_TOPIC", "DLQ_TOPIC"))
    head, trickle = len(events) * 2 // 5, len(events) * 3 // 5
    head_sent, committing, trickling, terminated, published = (threading.Event() for _ in range(5))

    def publish() -> None:
        """A continuous stream: the head at once, then a trickle that is still flowing when the
        SIGTERM lands (however slow the machine: it starts once the ingest has committed, and
        the SIGTERM follows at once), then the rest."""
        produce(kafka.config(), events[:head])
        head_sent.set()
        committing.wait(60)
        trickling.set()
        for start in range(head, trickle, 50):
            produce(kafka.config(), events[start : start + 50])
            if terminated.wait(0.05):
                produce(kafka.config(), events[start + 50 : trickle])
                break
        else:
            trickling.clear()  # the trickle ran out before the SIGTERM: the test says so below
        produce(kafka.config(), events[trickle:])
        published.set()

    publisher = threading.Thread(target=publish, name="publisher", daemon=True)
    publisher.start()
    first = ConnectorProcess(["ingest"], env, tmp_path, "ingest-1")
    try:
        first.wait_for_port()
        assert head_sent.wait(60)
        deadline = time.monotonic() + 30
        while sum(committed_offsets(kafka.config(), group, stream.topics, PARTITIONS).values()) == 0:
            assert time.monotonic() < deadline, first.output()
            time.sleep(0.05)
        committing.set()
        assert trickling.wait(30), "the trickle did not start"
        assert not published.is_set(), "the stream stopped before the SIGTERM; trickle more slowly"
        code, took = first.terminate(GRACE_S)
        terminated.set()
    finally:
        terminated.set()
        first.kill()
    assert code == 0, first.output()
    assert took < GRACE_S
    assert "ingest: stopped after" in first.stdout

    # Exactly the committed prefix is in the state: the batch in flight committed or aborted whole.
    assert open_transactions(kafka.config(), state_topic, PARTITIONS) == []
    assert open_transactions(kafka.config(), dlq, 1) == []
    offsets = committed_offsets(kafka.config(), group, stream.topics, PARTITIONS)
    assert 0 < sum(offsets.values()) < len(events)
    spec = parse_mapping(_mapping_of(env))
    prefix_replay = replay(spec, source_messages(kafka.config(), offsets))
    assert live_rows(read_state(kafka, state_topic, PARTITIONS)) == prefix_replay.live
    assert _committed_records(kafka, dlq) == len(prefix_replay.dead_letters)

    # A restart (same pod name) resumes there and finishes exactly.
    second = ConnectorProcess(["ingest"], env, tmp_path, "ingest-2")
    try:
        second.wait_for_port()
        publisher.join(60)
        assert published.is_set()
        wait_caught_up(kafka.config(), group, stream.topics, PARTITIONS, second)
        code, took = second.terminate(GRACE_S)
    finally:
        second.kill()
    assert code == 0, second.output()
    assert sum(committed_offsets(kafka.config(), group, stream.topics, PARTITIONS).values()) == len(events)
    assert live_rows(read_state(kafka, state_topic, PARTITIONS)) == expected_rows(stream)
    assert _committed_records(kafka, dlq) == stream.expected_dead_letters


def _mapping_of(env: dict[str, str]) -> str:
    return Path(env["CARECLOUD_INGEST_MAPPING_FILE"]).read_text()


# -- one full run with canaries: logs, metrics, readiness ------------------------------------------


@dataclass
class FullRun:
    """What one run left: every process, every scrape, where the snapshot went."""

    stream: SyntheticStream
    env: dict[str, str]
    bucket: str
    day: dt.date
    ingest: ConnectorProcess
    failed_snapshot: ConnectorProcess | None = None
    restarted: ConnectorProcess | None = None
    scrapes: list[str] = field(default_factory=list)
    restarted_scrape: str = ""
    readyz: tuple[int, str] = (0, "")
    files: dict[str, bytes] = field(default_factory=dict)

    def processes(self) -> list[ConnectorProcess]:
        return [p for p in (self.ingest, self.failed_snapshot, self.restarted) if p is not None]


@pytest.fixture(scope="module")
def full_run(
    kafka: KafkaTestCluster, s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FullRun]:
    work = tmp_path_factory.mktemp("full-run")
    prefix = unique("canary") + ".public."
    stream = generate(40, seed=9, topic_prefix=prefix)
    create_topics(kafka.config(), stream.topics, PARTITIONS)
    produce(kafka.config(), [*stream, *canary_events(stream)])
    s3 = s3_server.client()
    bucket = unique("canary")
    s3.create_bucket(Bucket=bucket)
    window = window_around_now()
    s3_settings = s3_env(s3_server, bucket)
    env = _ingest_env(
        kafka,
        work,
        prefix,
        CARECLOUD_OPS_LOG_LEVEL="DEBUG",
        CARECLOUD_OPS_LOG_FORMAT="json",
        CARECLOUD_SNAPSHOT_ENABLED="true",  # today's window is open: the scheduler runs it at once
        CARECLOUD_SNAPSHOT_EXPECTED_DURATION_S="60",
        CARECLOUD_SNAPSHOT_SINK="s3",
        CARECLOUD_SNAPSHOT_WORK_DIR=str(work),
        **window,
        **s3_settings,
    )
    day = local_today(window["CARECLOUD_SNAPSHOT_ZONE"])
    run = FullRun(stream, env, bucket, day, ConnectorProcess(["ingest"], env, work, "ingest"))
    try:
        run.ingest.wait_for_port()
        run.scrapes.append(run.ingest.get("/metrics")[1])  # during start-up and catch-up
        manifest = f"carecloud/{day.isoformat()}/_manifest.json"
        deadline = time.monotonic() + 120
        while "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=manifest):
            assert run.ingest.process.poll() is None, run.ingest.output()
            assert time.monotonic() < deadline, f"no manifest in 120 s\n{run.ingest.output()}"
            run.scrapes.append(run.ingest.get("/metrics")[1])
            time.sleep(0.5)
        group = env["CARECLOUD_INGEST_GROUP_ID"]
        wait_caught_up(kafka.config(), group, stream.topics, PARTITIONS, run.ingest)
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=f"carecloud/{day.isoformat()}/")["Contents"]:
            run.files[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        run.readyz = run.ingest.get("/readyz")
        run.scrapes.append(run.ingest.get("/metrics")[1])

        # A run whose upload of the canary's file is refused (permission revoked), in its own process.
        with FaultyHttpProxy(s3_server.url) as proxy:
            # The stat (HEAD) goes through; the upload (PUT, or POST for a multipart) is refused.
            proxy.fail_next(403, S3_ACCESS_DENIED, count=1000, match=r"^(PUT|POST) \S*/Family\.")
            failed_env = {
                **env,
                "CARECLOUD_S3_ENDPOINT_URL": proxy.url,
                "CARECLOUD_SNAPSHOT_LAG_POLICY": "go",
            }
            yesterday = (day - dt.timedelta(days=1)).isoformat()
            run.failed_snapshot = ConnectorProcess(
                ["snapshot", "--date", yesterday], failed_env, work, "snapshot"
            )
            run.failed_snapshot.process.wait(120)
        run.scrapes.append(run.ingest.get("/metrics")[1])  # after everything
        code, _ = run.ingest.terminate(GRACE_S)
        assert code == 0, run.ingest.output()

        # The pod restarted: it restores its store from the state topic; today is delivered.
        run.restarted = ConnectorProcess(["ingest"], env, work, "ingest-restarted")
        run.restarted.wait_for_port()
        deadline = time.monotonic() + 60
        while run.restarted.get("/readyz")[0] != 200:
            assert time.monotonic() < deadline, run.restarted.output()
            time.sleep(0.2)
        wait_caught_up(kafka.config(), group, stream.topics, PARTITIONS, run.restarted)
        # An empty batch reports the lag per partition: poll for it rather than guess how long
        # one takes on a loaded runner.
        deadline = time.monotonic() + 30
        run.restarted_scrape = run.restarted.get("/metrics")[1]
        while _unexported(run.restarted_scrape) and time.monotonic() < deadline:
            time.sleep(0.2)
            run.restarted_scrape = run.restarted.get("/metrics")[1]
        run.scrapes.append(run.restarted_scrape)
        code, _ = run.restarted.terminate(GRACE_S)
        assert code == 0, run.restarted.output()
        yield run
    finally:
        for process in run.processes():
            process.kill()


def test_the_canaries_reached_the_state_the_file_and_the_dead_letter_topic(
    full_run: FullRun, kafka: KafkaTestCluster
) -> None:
    """The positive control: without it, finding no canary would prove nothing."""
    family = gzip.decompress(full_run.files[f"carecloud/{full_run.day.isoformat()}/Family.csv.gz"]).decode()
    assert CANARY_NAME in family
    assert CANARY_ID in family
    assert str(CANARY_AMOUNT) in family
    dlq = full_run.env["CARECLOUD_INGEST_DLQ_TOPIC"]
    reasons = sorted(_header(m, "carecloud.reason") for m in _dlq_messages(kafka, dlq))
    expected = [*full_run.stream.dead_letter_reasons()]
    expected += [reason for reason, n in CANARY_DEAD_LETTERS.items() for _ in range(n)]
    assert reasons == sorted(expected)
    assert full_run.failed_snapshot is not None
    assert full_run.failed_snapshot.process.returncode != 0, full_run.failed_snapshot.output()
    assert "error:" in full_run.failed_snapshot.stderr, full_run.failed_snapshot.output()


def test_no_canary_in_any_log_line_of_any_process_or_any_scrape(full_run: FullRun) -> None:
    found = {}
    for process in full_run.processes():
        for path in (process.stdout_path, process.stderr_path):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if leaks(line):
                    found[f"{path.name}:{number}"] = (leaks(line), line[:300])
    for number, scrape in enumerate(full_run.scrapes):
        for line in scrape.splitlines():
            if leaks(line):
                found[f"scrape {number}"] = (leaks(line), line[:300])
    assert found == {}
    assert len(full_run.scrapes) >= 3


def test_the_ingest_logs_are_json_lines_at_the_configured_level(full_run: FullRun) -> None:
    lines = full_run.ingest.stderr.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, full_run.ingest.output()
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r.get("reason") == "unparseable_decimal" for r in records), "the dead letters are logged"
    # librdkafka writes its own lines ("%4|...") to stderr; everything else is JSON.
    assert [line for line in lines if not line.startswith(("{", "%"))] == []


def _unexported(scrape: str) -> dict[str, list[str]]:
    """Alerts and dashboard panels whose metric names the scrape lacks."""
    used: dict[str, set[str]] = {rule["alert"]: _metric_names(rule["expr"]) for rule in _alert_rules()}
    for title, expr in _dashboard_exprs():
        used.setdefault(title, set()).update(_metric_names(expr))
    scraped = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines()}
    return {where: sorted(names - scraped) for where, names in used.items() if names - scraped}


def _check_exported(scrape: str) -> None:
    """Every metric the alerts and the dashboard query is in the scrape."""
    assert _unexported(scrape) == {}


def test_a_running_ingest_after_its_snapshot_exports_every_metric_the_alerts_and_dashboard_query(
    full_run: FullRun,
) -> None:
    _check_exported(full_run.scrapes[-2])


def test_a_restarted_ingest_exports_every_metric_the_alerts_and_dashboard_query(full_run: FullRun) -> None:
    _check_exported(full_run.restarted_scrape)


def test_the_running_ingest_is_ready_once_caught_up_and_counts_what_it_did(full_run: FullRun) -> None:
    scrape = full_run.scrapes[-2]  # the first process, after its snapshot and the failed one
    assert full_run.readyz == (200, "ready\n")
    assert _sample(scrape, "carecloud_ready") == 1
    assert _sample(scrape, 'carecloud_snapshot_runs_total{outcome="published"}') == 1
    dead_letters = full_run.stream.expected_dead_letters + sum(CANARY_DEAD_LETTERS.values())
    assert _sum(scrape, "carecloud_dlq_events_total") == dead_letters
    assert _sum(scrape, "carecloud_consumer_lag_messages") == 0
    # After a restart the 26-hour alert still sees the last delivery (read from the manifest).
    assert _sum(full_run.restarted_scrape, "carecloud_last_successful_delivery_timestamp_seconds") > 0
    assert _sample(full_run.restarted_scrape, "carecloud_ready") == 1


def _header(msg: Message, name: str) -> str:
    value = dict(msg.headers() or [])[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def _sample(scrape: str, series: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the scrape")


def _sum(scrape: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines() if line.startswith(name + "{"))
