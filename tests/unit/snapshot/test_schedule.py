"""The daily window across DST changes, the next run, and the start-up decision.

The oracle for "which instants does a wall time mean" is independent of the module: it tries
every UTC offset the zone uses around that day and keeps those that read back as the wall time.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from connector.errors import ConfigError, TerminalError
from connector.snapshot.exceptions import NaiveDatetimeError, SnapshotArgumentError, SnapshotConfigError
from connector.snapshot.schedule import (
    Action,
    Schedule,
    decide_on_startup,
    decision_instant,
    next_run,
    run_window,
)

UTC = dt.UTC
LA = ZoneInfo("America/Los_Angeles")
SPRING_FORWARD = dt.date(2026, 3, 8)  # 02:00 PST -> 03:00 PDT
FALL_BACK = dt.date(2026, 11, 1)  # 02:00 PDT -> 01:00 PST
ZONES = (
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Europe/Dublin",  # negative DST in the tz database
    "Australia/Lord_Howe",  # 30-minute DST
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight
    "Asia/Kolkata",  # no DST, half-hour offset
    "UTC",
)
MINUTES = st.one_of(st.integers(0, 24 * 60 - 1), st.integers(0, 4 * 60))  # most changes are before 04:00


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def wall_instants(day: dt.date, wall: dt.time, zone: str) -> list[dt.datetime]:
    """Every instant at which the clock of ``zone`` shows ``wall`` on ``day``, earliest first."""
    tz = ZoneInfo(zone)
    naive = dt.datetime.combine(day, wall)
    offsets = {(naive + dt.timedelta(hours=h)).replace(tzinfo=tz).utcoffset() for h in range(-26, 27, 2)}
    found = set()
    for offset in offsets:
        assert offset is not None
        instant = (naive - offset).replace(tzinfo=UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == naive:
            found.add(instant)
    return sorted(found)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    first, second = sorted(draw(st.lists(MINUTES, min_size=2, max_size=2, unique=True)))
    return Schedule(
        draw(st.sampled_from(ZONES)),
        dt.time(*divmod(first, 60)),
        dt.time(*divmod(second, 60)),
    )


DAYS = st.dates(dt.date(2020, 1, 1), dt.date(2035, 12, 31))


def change_days(zone: str) -> list[dt.date]:
    """The days of 2020-2035 on which ``zone`` changes its offset (so hypothesis hits them)."""
    tz = ZoneInfo(zone)
    days, day = [], dt.date(2020, 1, 1)
    while day.year < 2036:
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=tz)
        if midnight.utcoffset() != (midnight + dt.timedelta(days=1)).utcoffset():
            days.append(day)
            days.append(day + dt.timedelta(days=1))  # a change at 24:00 belongs to the next day's wall time
        day += dt.timedelta(days=1)
    return days


CHANGE_DAYS = {zone: change_days(zone) for zone in ZONES}


@st.composite
def schedule_days(draw: st.DrawFn) -> tuple[Schedule, dt.date]:
    schedule = draw(schedules())
    changes = CHANGE_DAYS[schedule.zone]
    return schedule, draw(st.one_of(DAYS, st.sampled_from(changes)) if changes else DAYS)


INSTANTS = st.datetimes(
    dt.datetime(2020, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds and adds the zone itself
    dt.datetime(2035, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)


# --- the schedule itself ---------------------------------------------------------------------------


def test_defaults_are_careclouds_window() -> None:
    schedule = Schedule()
    assert (schedule.zone, schedule.start, schedule.deadline) == (
        "America/Los_Angeles",
        dt.time(0, 30),
        dt.time(3),
    )


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "America"])
def test_unknown_zone_is_a_config_error(zone: str) -> None:
    with pytest.raises(SnapshotConfigError, match="IANA"):
        Schedule(zone=zone)


@pytest.mark.parametrize(("start", "deadline"), [(dt.time(3), dt.time(3)), (dt.time(4), dt.time(3))])
def test_start_must_come_before_the_deadline(start: dt.time, deadline: dt.time) -> None:
    with pytest.raises(SnapshotConfigError, match="before the deadline"):
        Schedule(start=start, deadline=deadline)


def test_times_with_a_zone_are_refused() -> None:
    with pytest.raises(SnapshotConfigError, match="wall time"):
        Schedule(start=dt.time(0, 30, tzinfo=UTC))


def test_errors_are_in_the_tree_and_value_errors() -> None:
    assert issubclass(SnapshotConfigError, ConfigError)
    assert issubclass(SnapshotConfigError, ValueError)
    assert issubclass(NaiveDatetimeError, TerminalError)
    assert issubclass(NaiveDatetimeError, ValueError)


# --- run_window ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "start", "deadline"),
    [
        (dt.date(2026, 1, 15), utc(2026, 1, 15, 8, 30), utc(2026, 1, 15, 11)),  # PST all window
        (dt.date(2026, 6, 15), utc(2026, 6, 15, 7, 30), utc(2026, 6, 15, 10)),  # PDT all window
        (SPRING_FORWARD, utc(2026, 3, 8, 8, 30), utc(2026, 3, 8, 10)),  # 00:30 PST .. 03:00 PDT: 1h30
        (FALL_BACK, utc(2026, 11, 1, 7, 30), utc(2026, 11, 1, 11)),  # 00:30 PDT .. 03:00 PST: 3h30
    ],
)
def test_default_window_on_both_dst_change_days(
    day: dt.date, start: dt.datetime, deadline: dt.datetime
) -> None:
    assert run_window(Schedule(), day) == (start, deadline)


def test_a_start_that_does_not_exist_is_shifted_forward_by_the_gap() -> None:
    # 02:30 does not exist on 2026-03-08: read as PST, it is 03:30 PDT.
    start, deadline = run_window(Schedule(start=dt.time(2, 30), deadline=dt.time(4)), SPRING_FORWARD)
    assert start == utc(2026, 3, 8, 10, 30)
    assert start.astimezone(LA).time() == dt.time(3, 30)
    assert deadline == utc(2026, 3, 8, 11)


def test_a_deadline_that_does_not_exist_is_shifted_forward_by_the_gap() -> None:
    _, deadline = run_window(Schedule(start=dt.time(1), deadline=dt.time(2, 30)), SPRING_FORWARD)
    assert deadline.astimezone(LA).time() == dt.time(3, 30)


def test_an_ambiguous_deadline_is_its_first_occurrence() -> None:
    # 01:30 happens twice on 2026-11-01: 08:30Z (PDT) and 09:30Z (PST). The earlier is the safe side.
    start, deadline = run_window(Schedule(start=dt.time(0, 30), deadline=dt.time(1, 30)), FALL_BACK)
    assert deadline == utc(2026, 11, 1, 8, 30)
    assert start == utc(2026, 11, 1, 7, 30)


def test_an_ambiguous_start_is_its_first_occurrence() -> None:
    start, _ = run_window(Schedule(start=dt.time(1, 30), deadline=dt.time(4)), FALL_BACK)
    assert start == utc(2026, 11, 1, 8, 30)


def test_a_start_in_the_gap_never_passes_the_deadline() -> None:
    # 02:30 shifted forward would be 03:30 PDT, after the 03:00 deadline: keep the 30-minute window.
    assert run_window(Schedule(start=dt.time(2, 30), deadline=dt.time(3)), SPRING_FORWARD) == (
        utc(2026, 3, 8, 9, 30),
        utc(2026, 3, 8, 10),
    )


def test_fold_on_the_configured_time_is_ignored() -> None:
    folded = Schedule(start=dt.time(0, 30), deadline=dt.time(1, 30, fold=1))
    assert run_window(folded, FALL_BACK) == run_window(Schedule(deadline=dt.time(1, 30)), FALL_BACK)


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "UTC"])
def test_a_zone_without_dst_has_the_same_window_all_year(zone: str) -> None:
    schedule = Schedule(zone=zone)
    offsets = {
        tuple(
            instant - dt.datetime.combine(day, dt.time(), tzinfo=UTC) for instant in run_window(schedule, day)
        )
        for day in (dt.date(2026, 1, 15), SPRING_FORWARD, dt.date(2026, 6, 15), FALL_BACK)
    }
    assert len(offsets) == 1


def test_run_window_wants_a_date() -> None:
    with pytest.raises(SnapshotArgumentError):
        run_window(Schedule(), utc(2026, 3, 8))


@given(DAYS)
def test_default_window_is_the_configured_wall_times_every_day(day: dt.date) -> None:
    start, deadline = run_window(Schedule(), day)
    assert start < deadline
    assert start.tzinfo is UTC
    assert deadline.tzinfo is UTC
    assert start.astimezone(LA).replace(tzinfo=None) == dt.datetime.combine(day, dt.time(0, 30))
    assert deadline.astimezone(LA).replace(tzinfo=None) == dt.datetime.combine(day, dt.time(3))


@settings(max_examples=1000)
@given(schedule_days())
def test_any_window_follows_the_documented_rule(schedule_day: tuple[Schedule, dt.date]) -> None:
    schedule, day = schedule_day
    start, deadline = run_window(schedule, day)
    assert start < deadline
    naive_deadline = dt.datetime.combine(day, schedule.deadline)
    meant = wall_instants(day, schedule.deadline, schedule.zone)
    event(f"deadline occurs {len(meant)} time(s)")
    if meant:  # exists: the configured wall time, first occurrence when there are two
        assert deadline == meant[0]
    else:  # in a gap: shifted forward, by less than a day
        local = deadline.astimezone(schedule.tz).replace(tzinfo=None)
        assert naive_deadline < local < naive_deadline + dt.timedelta(hours=3)
    meant = wall_instants(day, schedule.start, schedule.zone)
    length = naive_deadline - dt.datetime.combine(day, schedule.start)
    event(f"start occurs {len(meant)} time(s)")
    if meant:
        assert start == meant[0]
    else:  # in a gap: shifted forward, or, if that passes the deadline, the configured length back
        event("start in a gap kept the length" if start == deadline - length else "start in a gap shifted")
        local = start.astimezone(schedule.tz).replace(tzinfo=None)
        assert local > dt.datetime.combine(day, schedule.start) or start == deadline - length


# --- next_run ----------------------------------------------------------------------------------------


def test_next_run_before_todays_start_is_today() -> None:
    assert next_run(Schedule(), utc(2026, 3, 8, 8)) == (
        SPRING_FORWARD,
        utc(2026, 3, 8, 8, 30),
        utc(2026, 3, 8, 10),
    )


def test_next_run_at_the_start_is_now() -> None:
    assert next_run(Schedule(), utc(2026, 3, 8, 8, 30))[1] == utc(2026, 3, 8, 8, 30)


def test_next_run_after_todays_start_is_tomorrow_across_the_change() -> None:
    # 2026-03-07 00:31 PST; the next start is 2026-03-08 00:30 PST, then 03-09 00:30 PDT.
    assert next_run(Schedule(), utc(2026, 3, 7, 8, 31))[:2] == (SPRING_FORWARD, utc(2026, 3, 8, 8, 30))
    assert next_run(Schedule(), utc(2026, 3, 8, 8, 31))[:2] == (dt.date(2026, 3, 9), utc(2026, 3, 9, 7, 30))


def test_next_run_rejects_a_naive_now() -> None:
    with pytest.raises(NaiveDatetimeError):
        next_run(Schedule(), dt.datetime(2026, 3, 8, 8))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_on_startup(Schedule(), dt.datetime(2026, 3, 8, 8), None, dt.timedelta(0))  # noqa: DTZ001


def test_next_run_accepts_any_zone_for_now() -> None:
    now = dt.datetime(2026, 3, 8, 0, 10, tzinfo=LA)
    assert next_run(Schedule(), now)[1] == utc(2026, 3, 8, 8, 30)


@settings(max_examples=300)
@given(schedules(), INSTANTS)
def test_next_run_is_never_in_the_past_and_is_the_first(schedule: Schedule, now: dt.datetime) -> None:
    day, start, deadline = next_run(schedule, now)
    assert start >= now
    assert (start, deadline) == run_window(schedule, day)
    previous_start, _ = run_window(schedule, day - dt.timedelta(days=1))
    assert previous_start < now


# --- decide_on_startup --------------------------------------------------------------------------------

HALF_HOUR = dt.timedelta(minutes=30)


def test_a_missed_day_runs_when_it_can_finish_in_time() -> None:
    decision = decide_on_startup(Schedule(), utc(2026, 3, 8, 8, 40), dt.date(2026, 3, 7), HALF_HOUR)
    assert (decision.action, decision.day, decision.missed) == (Action.RUN, SPRING_FORWARD, ())
    assert decision.wake_utc == utc(2026, 3, 8, 8, 40)
    assert decision.deadline_utc == utc(2026, 3, 8, 10)


def test_finishing_exactly_at_the_deadline_is_in_time() -> None:
    # 01:45 PST on the spring-forward day: the deadline 03:00 PDT is only 15 minutes away.
    now = utc(2026, 3, 8, 9, 45)
    assert decide_on_startup(Schedule(), now, None, dt.timedelta(minutes=15)).action is Action.RUN
    missed = decide_on_startup(Schedule(), now, None, dt.timedelta(minutes=16))
    assert (missed.action, missed.day, missed.missed) == (Action.MISSED, SPRING_FORWARD, (SPRING_FORWARD,))
    assert missed.wake_utc == utc(2026, 3, 9, 7, 30)


def test_the_fall_back_day_has_an_hour_more() -> None:
    # 01:30 PST, the second 01:30 of 2026-11-01: the deadline 03:00 PST is 90 minutes away.
    decision = decide_on_startup(
        Schedule(), utc(2026, 11, 1, 9, 30), dt.date(2026, 10, 31), dt.timedelta(minutes=90)
    )
    assert (decision.action, decision.day) == (Action.RUN, FALL_BACK)


def test_a_delivered_day_waits_for_the_next_start() -> None:
    decision = decide_on_startup(Schedule(), utc(2026, 3, 8, 9), SPRING_FORWARD, HALF_HOUR)
    assert (decision.action, decision.day, decision.missed) == (Action.WAIT, dt.date(2026, 3, 9), ())
    assert decision.wake_utc == utc(2026, 3, 9, 7, 30)


def test_before_todays_start_yesterday_is_reported_if_undelivered() -> None:
    now = utc(2026, 3, 8, 8, 10)  # 00:10 PST, before today's 00:30 start
    decision = decide_on_startup(Schedule(), now, dt.date(2026, 3, 6), HALF_HOUR)
    assert (decision.action, decision.day, decision.missed) == (
        Action.MISSED,
        dt.date(2026, 3, 7),
        (dt.date(2026, 3, 7),),
    )
    assert decision.wake_utc == utc(2026, 3, 8, 8, 30)
    assert decide_on_startup(Schedule(), now, dt.date(2026, 3, 7), HALF_HOUR).action is Action.WAIT


def test_older_undelivered_days_are_reported_never_run() -> None:
    decision = decide_on_startup(Schedule(), utc(2026, 3, 8, 8, 40), dt.date(2026, 3, 5), HALF_HOUR)
    assert decision.action is Action.RUN
    assert decision.missed == (dt.date(2026, 3, 6), dt.date(2026, 3, 7))


def test_reason_holds_dates_and_times() -> None:
    decision = decide_on_startup(Schedule(), utc(2026, 3, 8, 9, 45), None, HALF_HOUR)
    assert decision.reason.startswith(
        "2026-03-08 cannot finish before its deadline 2026-03-08T10:00:00+00:00"
    )


def test_bad_start_up_arguments_are_refused() -> None:
    with pytest.raises(SnapshotArgumentError, match="negative"):
        decide_on_startup(Schedule(), utc(2026, 3, 8), None, -HALF_HOUR)
    with pytest.raises(SnapshotArgumentError, match="date"):
        decide_on_startup(Schedule(), utc(2026, 3, 8), utc(2026, 3, 7), HALF_HOUR)


@settings(max_examples=300)
@given(
    schedules(),
    INSTANTS,
    st.one_of(st.none(), st.integers(-5, 2)),
    st.integers(0, 6 * 60).map(lambda m: dt.timedelta(minutes=m)),
)
def test_the_decision_is_consistent(
    schedule: Schedule, now: dt.datetime, delivered_offset: int | None, duration: dt.timedelta
) -> None:
    local_day = now.astimezone(schedule.tz).date()
    delivered = None if delivered_offset is None else local_day + dt.timedelta(days=delivered_offset)
    decision = decide_on_startup(schedule, now, delivered, duration)
    start, deadline = run_window(schedule, decision.day)
    assert decision.deadline_utc == deadline
    assert list(decision.missed) == sorted(set(decision.missed))
    if delivered is not None:
        assert all(day > delivered for day in decision.missed)
    if decision.action is Action.RUN:
        assert start <= now
        assert now + duration <= deadline
        assert decision.wake_utc == now
        assert delivered is None or delivered < decision.day
        assert decision.day not in decision.missed
    else:
        assert decision.wake_utc > now
        assert decision.wake_utc == next_run(schedule, now + dt.timedelta(microseconds=1))[1]
    if decision.action is Action.MISSED:
        assert start <= now
        assert now + duration > deadline
        assert decision.missed[-1] == decision.day
    if decision.action is Action.WAIT:
        assert decision.missed == ()
        assert start > now
        assert delivered is not None
        assert delivered >= decision.day - dt.timedelta(days=1)


def test_the_decision_time_is_an_instant_of_the_day_within_its_window() -> None:
    schedule = Schedule(decision=dt.time(2, 30))
    assert decision_instant(Schedule(), dt.date(2026, 11, 25)) is None  # no decision time: no wait
    winter = decision_instant(schedule, dt.date(2026, 11, 25))
    assert winter == dt.datetime(2026, 11, 25, 10, 30, tzinfo=dt.UTC)  # 02:30 PST
    summer = decision_instant(schedule, dt.date(2026, 7, 1))
    assert summer == dt.datetime(2026, 7, 1, 9, 30, tzinfo=dt.UTC)  # 02:30 PDT
    # 02:30 does not exist on the spring-forward day: it is read as run_window reads wall times,
    # and never lands after the deadline.
    spring = decision_instant(schedule, dt.date(2026, 3, 8))
    assert spring is not None
    assert (
        run_window(schedule, dt.date(2026, 3, 8))[0] <= spring <= run_window(schedule, dt.date(2026, 3, 8))[1]
    )


@pytest.mark.parametrize("decision", [dt.time(0, 0), dt.time(3, 1)])
def test_a_decision_time_outside_the_window_is_a_config_error(decision: dt.time) -> None:
    with pytest.raises(SnapshotConfigError, match="decision time"):
        Schedule(decision=decision)
