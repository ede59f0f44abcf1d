"""The connector as operators run it: ``carecloud-connector`` processes, their output and endpoints.

``ConnectorProcess`` starts ``python -m connector.cli <command>`` with an environment only (as
the pod does), keeps stdout and stderr in files, finds the health port the ingest command
prints, and reads ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP. The rest reads what a
run left in Kafka: committed offsets per partition, the source messages up to them (for the
offline replay), whether a transaction is still open, and the synthetic stream's expected rows.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from connector.devtools.s3_server import S3Endpoint
from connector.devtools.synthetic import SyntheticEvent, SyntheticStream
from connector.ingest.replay import RawMessage
from connector.source import Position

__all__ = [
    "ConnectorProcess",
    "committed_offsets",
    "create_topics",
    "expected_rows",
    "lag",
    "local_today",
    "open_transactions",
    "produce",
    "s3_env",
    "source_messages",
    "wait_caught_up",
    "window_around_now",
]

_PORT = re.compile(r"health and metrics on port (\d+)")
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the test process dies (even by SIGKILL or
    a crash), so no connector is left running against a broker that went away with the test."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ConnectorProcess:
    """One ``carecloud-connector`` subprocess; its output goes to ``<log_dir>/<name>.{out,err}``."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_dir: Path, name: str) -> None:
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", *command],
                env={**os.environ, **env},
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                preexec_fn=_terminate_with_parent,  # only a prctl call: no Python locks
            )
        self.port: int | None = None

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self, tail: int = 4000) -> str:
        """The end of stdout and stderr, for assertion messages."""
        return f"--- stdout ---\n{self.stdout[-tail:]}\n--- stderr ---\n{self.stderr[-tail:]}"

    def wait_for_port(self, timeout: float = 60.0) -> int:
        """The health port the ingest command prints once it has started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _PORT.search(self.stdout)
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.process.poll() is not None:
                raise AssertionError(
                    f"exited with {self.process.returncode} before start-up\n{self.output()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no health port printed within {timeout:.0f} s\n{self.output()}")

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the health server: status and body (also for 503s)."""
        if self.port is None:
            raise AssertionError("the health port is not known yet (wait_for_port first)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def terminate(self, grace: float = 30.0) -> tuple[int, float]:
        """SIGTERM as Kubernetes sends it; the exit code and seconds taken (SIGKILL after ``grace``)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"still running {grace:.0f} s after SIGTERM\n{self.output()}") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def create_topics(config: Mapping[str, Any], names: Iterable[str], partitions: int) -> None:
    """Create the topics and wait until every partition has a leader."""
    admin = AdminClient(dict(config))
    names = list(names)
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(
            n in topics and topics[n].partitions and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"topics {names} have no leaders after 30 s")


def produce(config: Mapping[str, Any], events: Iterable[SyntheticEvent]) -> int:
    """Produce as Debezium does (Java partitioner by key, idempotent); fail unless all were acked."""
    producer = Producer(
        {**config, "enable.idempotence": True, "partitioner": "murmur2_random", "linger.ms": 5}
    )
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    sent = 0
    for event in events:
        while True:
            try:
                producer.produce(event.topic, value=event.value, key=event.key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
    remaining = producer.flush(60)
    if remaining or failures:
        raise KafkaException(failures[0] if failures else f"{remaining} events not acknowledged in 60 s")
    return sent


def committed_offsets(
    config: Mapping[str, Any], group: str, topics: Iterable[str], partitions: int
) -> dict[tuple[str, int], int]:
    """The group's committed offset per source partition (0 where nothing is committed).

    Retried while the group's coordinator is still being found or loaded (a fresh broker).
    """
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                committed = consumer.committed(wanted, timeout=10)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
    finally:
        consumer.close()


def lag(config: Mapping[str, Any], group: str, topics: Iterable[str], partitions: int) -> int | None:
    """Source messages the group has not committed yet; None while the coordinator cannot say.

    Not ``connector.snapshot.lag.measure_lag``: its AdminClient ``list_consumer_group_offsets``
    segfaults the process when the coordinator answers NOT_COORDINATOR or LOAD_IN_PROGRESS
    (librdkafka issue 5040, still in 2.16), which a fresh broker or a new group does.
    """
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        behind = 0
        for tp in consumer.committed(wanted, timeout=10):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            behind += max(high - max(tp.offset, 0), 0)
        return behind
    except KafkaException:
        return None
    finally:
        consumer.close()


def wait_caught_up(
    config: Mapping[str, Any],
    group: str,
    topics: Iterable[str],
    partitions: int,
    process: ConnectorProcess,
    timeout: float = 90.0,
) -> None:
    """Until the group has committed every source message; fails early if ``process`` exits."""
    topics = list(topics)
    deadline = time.monotonic() + timeout
    while lag(config, group, topics, partitions) != 0:
        assert process.process.poll() is None, f"exited with {process.process.returncode}\n{process.output()}"
        assert time.monotonic() < deadline, f"not caught up in {timeout:.0f} s\n{process.output()}"
        time.sleep(0.2)


def source_messages(config: Mapping[str, Any], ends: Mapping[tuple[str, int], int]) -> list[RawMessage]:
    """Every source message before ``ends`` (per partition), as replay input in partition order."""
    wanted = {tp: end for tp, end in ends.items() if end > 0}
    consumer = Consumer(
        {
            **config,
            "group.id": "ops-helpers-reader",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for t, p in wanted])
    messages: list[RawMessage] = []
    done: dict[tuple[str, int], int] = dict.fromkeys(wanted, 0)
    deadline = time.monotonic() + 60
    try:
        while any(done[tp] < end for tp, end in wanted.items()):
            assert time.monotonic() < deadline, (
                "reading the source topics up to the committed offsets timed out"
            )
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                tp = (topic, partition)
                if offset < wanted[tp]:
                    raw = msg.headers() or []
                    pairs = raw.items() if isinstance(raw, dict) else raw
                    headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]
                    position = Position(topic, partition, offset)
                    messages.append(RawMessage(position, msg.key(), msg.value(), headers or None))
                done[tp] = max(done[tp], offset + 1)
    finally:
        consumer.close()
    return sorted(messages, key=lambda m: (m.position.topic, m.position.partition, m.position.offset))


def open_transactions(config: Mapping[str, Any], topic: str, partitions: int) -> list[int]:
    """Partitions of ``topic`` whose last stable offset lags the end: a transaction is open there."""
    admin = AdminClient(dict(config))
    ends = {}
    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}  # type: ignore[no-untyped-call]
        futures = admin.list_offsets(request, isolation_level=level, request_timeout=30)
        ends[level] = {tp.partition: f.result(30).offset for tp, f in futures.items()}
    return [
        p
        for p in range(partitions)
        if ends[IsolationLevel.READ_COMMITTED][p] != ends[IsolationLevel.READ_UNCOMMITTED][p]
    ]


def expected_rows(stream: SyntheticStream) -> list[tuple[str, str, dict[str, Any]]]:
    """The generator's own final state in ``live_rows``' shape (never computed by the connector)."""
    return sorted(stream.iter_expected())


def window_around_now(minutes_before: int = 5, minutes_after: int = 60) -> dict[str, str]:
    """``CARECLOUD_SNAPSHOT_*`` settings whose window is open now, so the in-process scheduler
    runs today's snapshot at start-up; the zone is chosen so the window fits in one local day."""
    for zone in ("UTC", "Etc/GMT-6", "Etc/GMT+6", "Etc/GMT-12", "Etc/GMT+12"):
        now = dt.datetime.now(ZoneInfo(zone))
        start = now - dt.timedelta(minutes=minutes_before)
        deadline = now + dt.timedelta(minutes=minutes_after)
        if start.date() == now.date() == deadline.date():
            return {
                "CARECLOUD_SNAPSHOT_ZONE": zone,
                "CARECLOUD_SNAPSHOT_START": start.strftime("%H:%M:%S"),
                "CARECLOUD_SNAPSHOT_DEADLINE": deadline.strftime("%H:%M:%S"),
            }
    raise AssertionError("no zone has the window inside one day")  # pragma: no cover


def local_today(zone: str) -> dt.date:
    return dt.datetime.now(ZoneInfo(zone)).date()


def s3_env(s3_server: S3Endpoint, bucket: str) -> dict[str, str]:
    """The ``CARECLOUD_S3_*`` settings of a bucket on the test's S3 server (moto over HTTP)."""
    return {
        "CARECLOUD_S3_BUCKET": bucket,
        "CARECLOUD_S3_ENDPOINT_URL": s3_server.url,
        "CARECLOUD_S3_REGION": "us-east-1",
        "CARECLOUD_S3_ACCESS_KEY_ID": s3_server.access_key_id,
        "CARECLOUD_S3_SECRET_ACCESS_KEY": s3_server.secret_access_key,
    }
