"""RELIABILITY row 25: a multi-table source transaction straddling the daily cut is never
delivered half-applied (issue 19, docs/decisions/0020).

The synthetic stream (``connector.devtools.synthetic``) with Debezium's transaction metadata
(its events' transaction blocks, its ``transaction_ends``) is ingested by the real service
over the real broker, with the mapping's ``transactions.topic`` set. One transaction that pays
a claim (the claim's update and the new payment, two tables) is cut in two: its payment events
are produced only after the first cut. The run either waits and cuts again, then delivers it
whole, or, at its wait bound, holds the claim out (and its EOPs as orphans) and reports it. The
oracle is the generator's expected state, never ``replay``.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from connector.devtools._demo_check import check_entity
from connector.devtools.synthetic import SyntheticEvent, SyntheticStream, generate
from connector.ingest.service import IngestService
from connector.mapping import MappingSpec, parse_mapping
from connector.model import ENTITY_NAMES, REFERENCES
from connector.sinks.local import LocalStorage
from connector.snapshot.cut import Cut
from connector.snapshot.lag import Lag, cut_when_caught_up
from connector.snapshot.run import Outcome, RunConfig, SnapshotRun
from connector.snapshot.transactions import incomplete_below
from tests.integration.family_ingest import ingest_names, ingest_settings
from tests.kafka_helpers import KafkaTestCluster, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 25)
PARTITIONS = 3
HORIZON_S = 7 * 86400


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Straddle:
    """A stream produced but for one transaction's payment events, held back."""

    kafka: KafkaTestCluster
    stream: SyntheticStream
    spec: MappingSpec
    service: IngestService
    state_topic: str
    group: str
    txid: str
    held_back: list[SyntheticEvent]
    claims: set[str]
    """EntityIds of the claims the transaction updated (applied before the cut)."""
    names: dict[str, str]
    work: Path

    def restart(self) -> None:
        """The same replica started again on an empty volume: every store, the ledger's records
        with them, is restored from the state topic before the rest is ingested."""
        self.service.close()
        settings = ingest_settings(
            self.kafka, self.work / "restarted", self.names, batch_max_events=200, batch_max_ms=200
        )
        self.service = IngestService(settings, self.spec)
        self.service.start()

    def topics(self) -> list[str]:
        assert self.spec.transaction_topic is not None
        return [*sorted(self.spec.topics), self.spec.transaction_topic]

    def ingest_all(self) -> None:
        """Run batches until the ingest group has committed every source message."""
        for _ in range(400):
            if self.service.run_batch() == 0 and self._lag() == 0:
                return
        raise AssertionError("ingest did not catch up")

    def _lag(self) -> int:
        from connector.snapshot.lag import measure_lag

        return measure_lag(self.kafka.config(), self.group, self.topics()).total

    def cut(self, wait_until: dt.datetime, sleep: Any) -> tuple[Cut, Lag]:
        tables = frozenset(self.spec.tables)
        return cut_when_caught_up(
            self.kafka.config(),
            state_topic=self.state_topic,
            group_id=self.group,
            source_topics=self.topics(),
            policy="wait",
            max_lag=0,
            wait_until=wait_until,
            clock=_now,
            sleep=sleep,
            poll_s=0.0,
            incomplete=lambda cut: incomplete_below(
                self.kafka.config(), cut, tables=tables, horizon_s=HORIZON_S
            ),
        )

    def produce_held_back(self) -> None:
        _produce(self.kafka, self.held_back)

    def produce_end_only(self) -> None:
        """The transaction's END arrives, its payment events never do (dead-lettered upstream,
        say): waiting cannot complete it."""
        _produce(self.kafka, [e for e in self.held_back if e.topic == self.stream.transaction_topic])
        self.ingest_all()


def _produce(kafka: KafkaTestCluster, events: list[SyntheticEvent]) -> None:
    """Keyed with Kafka's Java partitioner, as Debezium does: a row's events stay in one partition."""
    producer = Producer(kafka.config({"enable.idempotence": True, "partitioner": "murmur2_random"}))
    for event in events:
        producer.produce(event.topic, event.value, event.key)
    assert producer.flush(30) == 0


def _transaction(event: SyntheticEvent) -> dict[str, Any] | None:
    if event.value is None:
        return None
    tx = orjson.loads(event.value).get("transaction")
    return tx if isinstance(tx, dict) else None


def _paying_transaction(stream: SyntheticStream) -> str:
    """The txId of a transaction that updates a claim and creates a payment (two tables)."""
    tables: dict[str, set[tuple[str, str]]] = {}
    for event in stream.events():
        tx = _transaction(event)
        if tx is None or event.value is None:
            continue
        op = orjson.loads(event.value)["op"]
        tables.setdefault(str(tx["id"]).split(":")[0], set()).add((event.topic.rsplit(".", 1)[1], op))
    for txid, seen in tables.items():
        if ("claim", "u") in seen and ("payment", "c") in seen:
            return txid
    raise AssertionError("no transaction pays a claim at this scale")


@pytest.fixture
def straddle(kafka: KafkaTestCluster, tmp_path: Path) -> Iterator[Straddle]:
    prefix = unique("tx")
    stream = generate(40, seed=3, malformed=0, topic_prefix=f"{prefix}.public.")
    for topic in stream.topics:
        kafka.admin().create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    # Debezium's transaction topic, with another partition count than the sources.
    kafka.admin().create_topics([NewTopic(stream.transaction_topic, 2, 1)])[stream.transaction_topic].result(
        30
    )
    txid = _paying_transaction(stream)
    held_back, first = [], []
    for event in stream.events():
        tx = _transaction(event)
        if tx is not None and str(tx["id"]).startswith(f"{txid}:") and event.topic.endswith(".payment"):
            held_back.append(event)
        else:
            first.append(event)
    ends = list(stream.transaction_ends())
    own_end = [e for e in ends if e.key.startswith(f'{{"id":"{txid}:'.encode())]
    assert len(own_end) == 1
    # Debezium writes a transaction's END after its events: it is held back with them.
    _produce(kafka, first + [e for e in ends if e not in own_end])
    held_back += own_end
    mapping = (
        (ROOT / "examples" / "mapping.yaml").read_text().replace("benefits.public.", f"{prefix}.public.")
    )
    mapping += f"transactions:\n  topic: {stream.transaction_topic}\n"
    spec = parse_mapping(mapping)
    names = ingest_names()
    settings = ingest_settings(kafka, tmp_path, names, batch_max_events=200, batch_max_ms=200)
    service = IngestService(settings, spec)
    claims = set()
    for event in stream.events():
        tx = _transaction(event)
        if tx is not None and str(tx["id"]).startswith(f"{txid}:") and event.topic.endswith(".claim"):
            claims.add(f"CLM-{orjson.loads(event.key)['claim_id']}")
    service.start()
    run = Straddle(
        kafka, stream, spec, service, names["state"], names["group"], txid, held_back, claims, names, tmp_path
    )
    try:
        run.ingest_all()
        yield run
    finally:
        run.service.close()


def _snapshot(
    run: Straddle, cut: Cut, lag: Lag, tmp_path: Path, fast_path: Literal["auto", "off"] = "auto"
) -> tuple[SnapshotRun, LocalStorage]:
    storage = LocalStorage(tmp_path / "bucket")
    config = RunConfig(
        state_topic=run.state_topic,
        work_dir=tmp_path,
        fast_path=fast_path,
        transaction_tables=frozenset(run.spec.tables),
        transaction_horizon_s=HORIZON_S,
    )
    return SnapshotRun(config, run.kafka.config(), storage, take_cut=lambda day: (cut, lag)), storage


def _delivered(storage: LocalStorage, key: str | None) -> bytes:
    assert key is not None
    found = storage.get(key)
    assert found is not None
    return gzip.decompress(found[0])


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "restarted-on-an-empty-volume"])
def test_the_run_waits_for_a_transaction_cut_in_two_and_delivers_it_whole(
    straddle: Straddle, tmp_path: Path, restart: bool
) -> None:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        """The wait before cutting again: the rest of the transaction arrives and is ingested
        (by the same ingest, or by the replica restarted from the state topic)."""
        naps.append(seconds)
        if len(naps) == 1:
            straddle.produce_held_back()
            if restart:
                straddle.restart()
            straddle.ingest_all()

    cut, lag = straddle.cut(_now() + dt.timedelta(minutes=5), sleep)
    assert len(naps) == 1  # the first cut fell inside the transaction; the second did not
    assert (lag.incomplete_transactions, lag.gave_up_waiting) == (0, False)
    run, storage = _snapshot(straddle, cut, lag, tmp_path)
    result = run.run(DAY)
    assert result.outcome is Outcome.PUBLISHED
    assert result.manifest is not None
    checks = result.manifest.checks["transactions"]
    assert checks["incomplete"] == 0
    assert checks["tracked"] > 10  # every streamed transaction has its ledger
    expected = straddle.stream.expected_state()
    for entity in ENTITY_NAMES:
        entry = result.manifest.entity(entity)
        assert entry is not None
        check = check_entity(entity, entry, expected[entity], _delivered(storage, entry.key))
        assert check.ok, check.as_json()


@pytest.mark.parametrize(
    ("reader", "bound"),
    [("auto", "stuck"), ("off", "passed")],
    ids=["compiled-reader-end-in-nothing-to-ingest", "python-reader-wait-bound-passed"],
)
def test_a_transaction_that_waiting_cannot_complete_is_held_out_and_reported(
    straddle: Straddle, tmp_path: Path, reader: Literal["auto", "off"], bound: str
) -> None:
    """Its END is in and its payment events never come. With the wait bound far off the run
    stops waiting after one pause (nothing left to ingest); with it passed, at once."""
    straddle.produce_end_only()
    naps: list[float] = []
    if bound == "stuck":
        cut, lag = straddle.cut(_now() + dt.timedelta(minutes=5), naps.append)
        assert len(naps) == 1
        assert (lag.incomplete_transactions, lag.gave_up_waiting) == (1, False)
    else:
        cut, lag = straddle.cut(_now() - dt.timedelta(seconds=1), naps.append)
        assert naps == []
        assert (lag.incomplete_transactions, lag.gave_up_waiting) == (1, True)
    run, storage = _snapshot(straddle, cut, lag, tmp_path, reader)
    result = run.run(DAY)
    assert result.manifest is not None
    checks = result.manifest.checks["transactions"]
    assert (checks["incomplete"], checks["held_out"]) == (1, {"Claim": len(straddle.claims)})
    report = orjson.loads(_report(storage, result.manifest.report))["transactions"]
    assert [(t["transaction"], t["status"]) for t in report] == [(straddle.txid, "held_out")]
    assert set(report[0]["rows"]["Claim"]) == straddle.claims
    assert list(report[0]["missing_events"]) == ["public.payment"]

    # The oracle: the generator's final state without the transaction's claims, their EOPs
    # (orphans now) and the payments it created that nothing later wrote (never applied).
    expected = straddle.stream.expected_state()
    held = {"Claim": set(straddle.claims)}
    for entity in ENTITY_NAMES:
        for ref in REFERENCES[entity]:
            for entity_id, record in expected[entity].items():
                if record[ref.field] in held.get(ref.parent, set()):
                    held.setdefault(entity, set()).add(entity_id)
    later = _written_after(straddle)
    for event in straddle.held_back:
        if not event.topic.endswith(".payment"):
            continue
        entity_id = f"EOP-{orjson.loads(event.key)['payment_id']}"
        if entity_id not in later:
            held.setdefault("EOP", set()).add(entity_id)
    for entity in ENTITY_NAMES:
        entry = result.manifest.entity(entity)
        assert entry is not None
        want = {i: r for i, r in expected[entity].items() if i not in held.get(entity, set())}
        check = check_entity(entity, entry, want, _delivered(storage, entry.key))
        assert check.ok, check.as_json()


def _report(storage: LocalStorage, key: str) -> bytes:
    found = storage.get(key)
    assert found is not None
    return found[0]


def _written_after(run: Straddle) -> set[str]:
    """EntityIds of the held-back payments that a later, produced event writes too."""
    held = {event.key for event in run.held_back if event.topic.endswith(".payment")}
    seen = set()
    for event in run.stream.events():
        tx = _transaction(event)
        later = tx is None or not str(tx["id"]).startswith(f"{run.txid}:")
        if event.key in held and event.topic.endswith(".payment") and later:
            seen.add(f"EOP-{orjson.loads(event.key)['payment_id']}")
    return seen
