"""The daily loop over simulated days: runs once per day, retries, gives up, reports missed days."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from zoneinfo import ZoneInfo

from connector.errors import ConfigError, TransientError
from connector.ops.logs import JsonFormatter
from connector.snapshot.exceptions import LeaseBusyError
from connector.snapshot.run import Outcome, RunResult
from connector.snapshot.schedule import Schedule
from connector.snapshot.scheduler import Scheduler, SchedulerEvents

LA = ZoneInfo("America/Los_Angeles")


class World:
    """A clock that only moves when the scheduler sleeps, and a storage of published days."""

    def __init__(self, start: dt.datetime, stop_after: dt.datetime) -> None:
        self.now = start.astimezone(dt.UTC)
        self.stop_after = stop_after.astimezone(dt.UTC)
        self.published: set[dt.date] = set()
        self.runs: list[tuple[dt.date, dt.datetime]] = []
        self.failures: list[BaseException] = []
        self.run_takes = dt.timedelta(minutes=20)
        self.missed: list[tuple[dt.date, str]] = []
        self.finished: list[tuple[dt.date, str]] = []

    def clock(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.now += dt.timedelta(seconds=seconds)
        return self.now >= self.stop_after

    def run(self, day: dt.date) -> RunResult:
        self.runs.append((day, self.now.astimezone(LA)))
        if self.failures:
            failure = self.failures.pop(0)
            self.now += dt.timedelta(minutes=1)
            raise failure
        self.now += self.run_takes
        self.published.add(day)
        return RunResult(Outcome.PUBLISHED, day, f"{day}/_manifest.json", None)

    def last_published(self) -> dt.date | None:
        return max(self.published, default=None)

    def scheduler(self, **kwargs: object) -> Scheduler:
        events = SchedulerEvents(
            missed=lambda day, why: self.missed.append((day, why)),
            finished=lambda day, outcome, slack: self.finished.append((day, outcome)),
        )
        return Scheduler(
            Schedule(),
            self.run,
            self.last_published,
            expected_duration=dt.timedelta(minutes=30),
            clock=self.clock,
            sleep=self.sleep,
            events=events,
            **kwargs,  # type: ignore[arg-type]
        )


def test_runs_once_a_day_at_the_start_across_the_spring_forward_change() -> None:
    world = World(dt.datetime(2026, 3, 6, 12, 0, tzinfo=LA), dt.datetime(2026, 3, 9, 12, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 3, 6))
    world.scheduler().run_forever()
    assert [(day.isoformat(), at.strftime("%H:%M %Z")) for day, at in world.runs] == [
        ("2026-03-07", "00:30 PST"),
        ("2026-03-08", "00:30 PST"),
        ("2026-03-09", "00:30 PDT"),
    ]
    assert world.missed == []


def test_a_missed_day_runs_on_start_up_when_it_can_still_finish() -> None:
    world = World(dt.datetime(2026, 11, 25, 2, 0, tzinfo=LA), dt.datetime(2026, 11, 25, 12, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 11, 24))
    world.scheduler().run_forever()
    assert [(d.isoformat(), at.strftime("%H:%M")) for d, at in world.runs] == [("2026-11-25", "02:00")]


def test_a_day_that_cannot_finish_is_reported_missed_once_and_not_run() -> None:
    world = World(dt.datetime(2026, 11, 25, 2, 45, tzinfo=LA), dt.datetime(2026, 11, 25, 23, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 11, 23))
    world.scheduler().run_forever()
    assert world.runs == []
    assert [day.isoformat() for day, _ in world.missed] == ["2026-11-24", "2026-11-25"]


def test_transient_failures_are_retried_with_backoff_then_published() -> None:
    world = World(dt.datetime(2026, 11, 25, 0, 29, tzinfo=LA), dt.datetime(2026, 11, 25, 12, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 11, 24))
    world.failures = [TransientError("s3 down"), TransientError("s3 down")]
    world.scheduler().run_forever()
    starts = [at for _, at in world.runs]
    assert len(starts) == 3
    assert (starts[1] - starts[0]) < (starts[2] - starts[1])  # backoff grows
    assert world.finished == [(dt.date(2026, 11, 25), "published")]


def test_transient_failures_until_the_deadline_give_up_and_report_the_day() -> None:
    world = World(dt.datetime(2026, 11, 25, 0, 29, tzinfo=LA), dt.datetime(2026, 11, 26, 0, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 11, 24))
    world.failures = [TransientError("s3 down")] * 100
    world.scheduler().run_forever()
    assert all(at.time() < dt.time(3, 0) for _, at in world.runs)
    assert [day for day, _ in world.missed] == [dt.date(2026, 11, 25)]
    assert world.finished == [(dt.date(2026, 11, 25), "failed")]


def test_a_terminal_failure_is_not_retried() -> None:
    world = World(dt.datetime(2026, 11, 25, 0, 29, tzinfo=LA), dt.datetime(2026, 11, 25, 12, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 11, 24))
    world.failures = [ConfigError("CARECLOUD_S3_BUCKET: bucket does not exist")]
    world.scheduler().run_forever()
    assert len(world.runs) == 1
    assert world.missed[0][0] == dt.date(2026, 11, 25)
    assert "CARECLOUD_S3_BUCKET" in world.missed[0][1]


def test_a_busy_lease_waits_for_the_other_pod_to_publish() -> None:
    world = World(dt.datetime(2026, 11, 25, 0, 29, tzinfo=LA), dt.datetime(2026, 11, 25, 12, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 11, 24))
    original = world.run

    def other_pod_runs(day: dt.date) -> RunResult:
        if len(world.runs) == 0:
            world.runs.append((day, world.now.astimezone(LA)))
            world.published.add(day)  # the other pod publishes while we wait
            raise LeaseBusyError("snapshot is being run by pod-b")
        return original(day)

    world.run = other_pod_runs  # type: ignore[method-assign]
    world.scheduler(busy_wait_s=30).run_forever()
    assert len(world.runs) == 1
    assert world.missed == []


def test_runs_once_a_day_at_the_start_across_the_fall_back_change() -> None:
    world = World(dt.datetime(2026, 10, 30, 12, 0, tzinfo=LA), dt.datetime(2026, 11, 2, 12, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 10, 30))
    world.scheduler().run_forever()
    assert [(day.isoformat(), at.strftime("%H:%M %Z")) for day, at in world.runs] == [
        ("2026-10-31", "00:30 PDT"),
        ("2026-11-01", "00:30 PDT"),
        ("2026-11-02", "00:30 PST"),
    ]
    assert all(day in world.published for day, _ in world.runs)


class HeldWorld(World):
    """A date held (an entity blocked) until ``fixed_at``; each run takes one minute."""

    def __init__(self, start: dt.datetime, stop_after: dt.datetime, fixed_at: dt.datetime | None) -> None:
        super().__init__(start, stop_after)
        self.fixed_at = fixed_at
        self.decide_by = dt.datetime(2026, 11, 25, 2, 30, tzinfo=LA).astimezone(dt.UTC)

    def run(self, day: dt.date) -> RunResult:
        self.runs.append((day, self.now.astimezone(LA)))
        self.now += dt.timedelta(minutes=1)
        fixed = self.fixed_at is not None and self.now >= self.fixed_at
        if not fixed and self.now < self.decide_by:
            return RunResult(Outcome.HELD, day, "m", None, decide_by=self.decide_by)
        self.published.add(day)
        return RunResult(Outcome.PUBLISHED if fixed else Outcome.PARTIAL, day, "m", None)


def test_a_held_date_is_run_again_until_a_fix_lets_it_publish() -> None:
    world = HeldWorld(
        dt.datetime(2026, 11, 25, 0, 30, tzinfo=LA),
        dt.datetime(2026, 11, 25, 12, 0, tzinfo=LA),
        fixed_at=dt.datetime(2026, 11, 25, 1, 3, tzinfo=LA).astimezone(dt.UTC),
    )
    world.scheduler(recheck_s=600).run_forever()
    times = [at.strftime("%H:%M") for day, at in world.runs if day == dt.date(2026, 11, 25)]
    assert times == ["00:30", "00:41", "00:52", "01:03"]  # every recheck (10 min after each look)
    outcomes = [outcome for day, outcome in world.finished if day == dt.date(2026, 11, 25)]
    assert outcomes == ["held", "held", "held", "published"]  # each look counted: the alert holds


def test_a_held_date_is_published_without_the_entity_at_the_decision_time() -> None:
    world = HeldWorld(
        dt.datetime(2026, 11, 25, 2, 0, tzinfo=LA), dt.datetime(2026, 11, 25, 12, 0, tzinfo=LA), fixed_at=None
    )
    world.scheduler(recheck_s=900).run_forever()
    times = [at.strftime("%H:%M") for day, at in world.runs if day == dt.date(2026, 11, 25)]
    assert times == ["02:00", "02:16", "02:30"]  # the last look is at the decision time, not after it
    assert [o for d, o in world.finished if d == dt.date(2026, 11, 25)][-1] == "partial"
    assert world.missed == []


def test_the_lines_a_run_logs_carry_its_snapshot_date_as_a_field() -> None:
    """The sinks and the run log without knowing which date they serve: the scheduler sets it
    for the run's thread (connector.ops.logs.log_context)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("connector.test.scheduled")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    world = World(dt.datetime(2026, 11, 25, 0, 29, tzinfo=LA), dt.datetime(2026, 11, 25, 12, 0, tzinfo=LA))
    world.published.add(dt.date(2026, 11, 24))
    run = world.run

    def logging_run(day: dt.date) -> RunResult:
        log.info("inside the run")
        return run(day)

    world.run = logging_run  # type: ignore[method-assign]
    try:
        world.scheduler().run_forever()
        log.info("after the run")
    finally:
        log.removeHandler(handler)
    inside, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["snapshot_date"] == "2026-11-25"
    assert "snapshot_date" not in after
