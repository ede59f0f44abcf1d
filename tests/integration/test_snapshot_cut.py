"""The cut: lag measured from the brokers, the wait policy, and exactly the state at the cut."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from connector.devtools.generator import family_events
from connector.model import ENTITY_NAMES
from connector.sinks.formats import CSV
from connector.sinks.local import LocalStorage
from connector.snapshot.lag import cut_when_caught_up, measure_lag
from connector.snapshot.run import RunConfig, SnapshotRun
from tests.integration.test_ingest import _run_until, _setup
from tests.kafka_helpers import KafkaTestCluster

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 25)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_a_snapshot_taken_while_ingest_goes_on_holds_exactly_the_state_at_the_cut(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    service, settings, prefix, ctx = _setup(kafka, tmp_path)
    group, topics = settings.ingest.group_id, [f"{prefix}{t}" for t in ("family",)]
    sources = sorted(t for t in kafka.admin().list_topics(timeout=10).topics if t.startswith(prefix))
    assert measure_lag(kafka.config(), group, sources).total == 38  # nothing ingested yet

    _run_until(service, 38)
    cut_args = {
        "state_topic": settings.ingest.state_topic,
        "group_id": group,
        "source_topics": sources,
        "policy": "wait",
        "max_lag": 0,
        "clock": now,
    }
    cut, lag = cut_when_caught_up(kafka.config(), wait_until=now() + dt.timedelta(minutes=1), **cut_args)
    assert (lag.total, lag.gave_up_waiting) == (0, False)

    # Ingest goes on after the cut: FAM-1..3 change, FAM-4 and FAM-5 appear.
    kafka.seed_topic(topics[0], list(family_events(5, 1)))
    while service.run_batch() or service.counts["events"] < 48:
        pass
    storage = LocalStorage(tmp_path / "out")
    run = SnapshotRun(
        RunConfig(state_topic=settings.ingest.state_topic, work_dir=tmp_path),
        kafka.config(),
        storage,
        take_cut=lambda day: (cut, lag),
    )
    manifest = run.run(DAY).manifest
    service.close()

    assert manifest is not None
    assert manifest.cut == cut.as_json()
    for entity in ENTITY_NAMES:
        entry = manifest.entity(entity)
        assert entry is not None
        assert entry.key is not None
        live = sorted((i, r) for e, i, r in ctx["expected"].live if e == entity)
        complete = [r for i, r in live if i != "EOP-2"]  # EOP-2 is held out: its TOAST value never came
        expected = b"".join(CSV.writer(entity).write_rows(complete))
        stored = storage.get(entry.key)
        assert stored is not None
        assert gzip.decompress(stored[0]) == expected, entity
    assert manifest.checks["incomplete"]["EOP"] == 1


def test_the_wait_policy_waits_for_ingest_and_gives_up_at_its_bound(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    service, settings, prefix, _ = _setup(kafka, tmp_path)
    sources = sorted(t for t in kafka.admin().list_topics(timeout=10).topics if t.startswith(prefix))
    args = {
        "state_topic": settings.ingest.state_topic,
        "group_id": settings.ingest.group_id,
        "source_topics": sources,
        "max_lag": 0,
        "clock": now,
    }
    kafka.admin().create_topics(  # the state topic exists before ingest has run
        [NewTopic(settings.ingest.state_topic, 1, 1, config={"cleanup.policy": "compact"})]
    )[settings.ingest.state_topic].result(30)
    # Bound already reached: cut at once, with the lag recorded and the give-up flagged.
    _, lag = cut_when_caught_up(kafka.config(), policy="wait", wait_until=now(), **args)
    assert (lag.total, lag.gave_up_waiting) == (38, True)
    # policy "go": no wait whatever the lag.
    _, lag = cut_when_caught_up(kafka.config(), policy="go", wait_until=now(), **args)
    assert (lag.total, lag.gave_up_waiting) == (38, False)

    # Waiting: ingest catches up on another thread while the snapshot polls the lag.
    ingest = threading.Thread(target=_run_until, args=(service, 38))
    ingest.start()
    cut, lag = cut_when_caught_up(
        kafka.config(), policy="wait", wait_until=now() + dt.timedelta(minutes=2), poll_s=0.2, **args
    )
    ingest.join()
    service.close()
    assert (lag.total, lag.gave_up_waiting) == (0, False)
    assert sum(cut.end_offsets.values()) > 0


def test_a_wall_clock_jump_during_the_run_changes_no_byte_it_delivers(
    kafka: KafkaTestCluster, tmp_path: Path
) -> None:
    """RELIABILITY.md row 13: the cut is offsets, so a clock stepped both ways (NTP, a VM
    resumed) while the run cuts, leases and delivers leaves every file and count as they were."""
    service, settings, prefix, _ = _setup(kafka, tmp_path)
    _run_until(service, 38)
    service.close()
    sources = sorted(t for t in kafka.admin().list_topics(timeout=10).topics if t.startswith(prefix))

    def deliver(clock: Callable[[], dt.datetime], name: str) -> tuple[dict[str, bytes], list[Any]]:
        storage = LocalStorage(tmp_path / name)
        run = SnapshotRun(
            RunConfig(state_topic=settings.ingest.state_topic, work_dir=tmp_path),
            kafka.config(),
            storage,
            take_cut=lambda day: cut_when_caught_up(
                kafka.config(),
                state_topic=settings.ingest.state_topic,
                group_id=settings.ingest.group_id,
                source_topics=sources,
                policy="wait",
                max_lag=0,
                wait_until=clock() + dt.timedelta(minutes=1),
                clock=clock,
            ),
            clock=clock,
        )
        manifest = run.run(DAY).manifest
        assert manifest is not None
        files = {e.entity: (storage.get(e.key) or (b"",))[0] for e in manifest.entities if e.key}
        counts = [(e.entity, e.records, e.sha256, e.route) for e in manifest.entities]
        offsets = {k: v for k, v in manifest.cut.items() if k != "taken_at"}  # when, not what
        return files, [offsets, counts]

    steady = deliver(now, "steady")
    # Steps forward past the lease's TTL and a whole day, and back past midnight, call by call.
    steps = itertools.cycle(dt.timedelta(hours=h) for h in (0, 3, -7, 26, -30, 11))
    jumping = deliver(lambda: now() + next(steps), "jumping")
    assert set(steady[0]) == set(ENTITY_NAMES)  # every entity went as a file: nothing to compare is empty
    assert jumping == steady
