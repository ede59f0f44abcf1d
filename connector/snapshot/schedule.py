"""When the daily snapshot runs: its window in the configured zone, and what to do on start-up.

CareConnect ingests between 3 and 5 AM Pacific, so the window is defined in wall-clock time of an
IANA zone, not in UTC, and must stay right across both DST changes. No function here reads the
clock: callers pass ``now``, so every decision is a pure function that property tests can drive
over any day and any instant (docs/decisions/0007-snapshot-schedule-and-routing.md).

Wall time to instant, one rule for start and deadline (PEP 495 ``fold=0``, what ``zoneinfo`` does):

- a wall time that does not exist that day (spring-forward gap: 02:30 on 2026-03-08 in Los
  Angeles) is read with the offset in force before the change, i.e. shifted forward by the gap
  (02:30 PST = 03:30 PDT);
- a wall time that occurs twice (fall-back: 01:30 on 2026-11-01) is its FIRST occurrence, the
  earlier instant: the safe side for a deadline.

Only a start inside a gap can then land at or after the deadline (start 02:30, deadline 03:00).
In that case the start is moved to ``deadline - (deadline - start in wall time)``: the deadline
is CareCloud's and is kept; the window keeps its configured length. So ``start < deadline`` on
every day, which the property tests check for many zones.

The snapshot *date* of a window is the local calendar date on which it is scheduled (the run at
00:30 on 2026-03-08 is the snapshot of 2026-03-08); it names the files and the manifest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connector.snapshot.exceptions import NaiveDatetimeError, SnapshotArgumentError, SnapshotConfigError

__all__ = [
    "Action",
    "Decision",
    "Schedule",
    "decide_on_startup",
    "decision_instant",
    "next_run",
    "run_window",
]

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Schedule:
    """The daily window: start and deadline as wall times of ``zone``, same day, start first.

    A time's ``fold`` is ignored: the module's rule decides which instant a wall time means.
    """

    zone: str = "America/Los_Angeles"
    """IANA zone name the times are read in; checked against the tz database at construction."""
    start: dt.time = dt.time(0, 30)
    """Local wall time at which the run may start (and the cut is taken)."""
    deadline: dt.time = dt.time(3, 0)
    """Local wall time by which every file and the manifest must be published."""
    decision: dt.time | None = None
    """Local wall time until which a date with an entity blocked or refused waits for an
    override or a fix before its manifest is written without it (``decision_instant``); None:
    the manifest is written at once, as every run before issue 17 did."""

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
            raise SnapshotConfigError(f"schedule zone {self.zone!r} is not an IANA time zone") from None
        for name, value in (("start", self.start), ("deadline", self.deadline)):
            if not isinstance(value, dt.time) or value.tzinfo is not None:
                raise SnapshotConfigError(f"schedule {name} must be a wall time without a zone")
        if not self.start < self.deadline:
            raise SnapshotConfigError("schedule start must be before the deadline on the same day")
        if self.decision is not None:
            if not isinstance(self.decision, dt.time) or self.decision.tzinfo is not None:
                raise SnapshotConfigError("schedule decision must be a wall time without a zone")
            if not self.start <= self.decision <= self.deadline:
                raise SnapshotConfigError("schedule decision time must lie between start and deadline")

    @property
    def tz(self) -> ZoneInfo:
        """The zone (``ZoneInfo`` caches instances, so this is cheap)."""
        return ZoneInfo(self.zone)


class Action(StrEnum):
    """What the scheduler does after start-up."""

    RUN = "run"
    """Run ``Decision.day`` now: it is not delivered and can still finish before its deadline."""
    MISSED = "missed"
    """``Decision.day`` cannot finish before its deadline: report it, then wait for the next start."""
    WAIT = "wait"
    """Everything due is delivered: sleep until ``Decision.wake_utc``."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The start-up decision, with everything the caller needs to act on it and report it."""

    action: Action
    day: dt.date
    """RUN: the day to run now; MISSED: the day that cannot be delivered; WAIT: the next run's day."""
    deadline_utc: dt.datetime
    """The deadline of ``day``."""
    wake_utc: dt.datetime
    """When to act next: ``now`` for RUN, the next window's start otherwise."""
    missed: tuple[dt.date, ...]
    """Every day to report as missed, oldest first (includes ``day`` when the action is MISSED)."""
    reason: str
    """One sentence for the log; holds dates and times only."""


def run_window(schedule: Schedule, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The window of ``day`` as aware UTC instants ``(start, deadline)``, ``start < deadline``."""
    if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
        raise SnapshotArgumentError("day must be a date, not a datetime")
    tz = schedule.tz
    deadline = _instant(day, schedule.deadline, tz)
    start = _instant(day, schedule.start, tz)
    if start >= deadline:  # only a start in a spring-forward gap (module docstring)
        start = deadline - (
            dt.datetime.combine(day, schedule.deadline) - dt.datetime.combine(day, schedule.start)
        )
    return start, deadline


def decision_instant(schedule: Schedule, day: dt.date) -> dt.datetime | None:
    """Until when ``day`` waits for a blocked or refused entity to be overridden or fixed, as an
    aware UTC instant within the day's window; None when the schedule has no decision time.

    A wall time in a spring-forward gap or a fall-back fold is read as ``run_window`` reads the
    deadline, and the result never lies after the deadline nor before the start."""
    if schedule.decision is None:
        return None
    start, deadline = run_window(schedule, day)
    return min(max(_instant(day, schedule.decision, schedule.tz), start), deadline)


def next_run(schedule: Schedule, now_utc: dt.datetime) -> tuple[dt.date, dt.datetime, dt.datetime]:
    """The first window whose start is at or after ``now_utc``: ``(day, start_utc, deadline_utc)``.

    Never in the past. A window already open at ``now`` is not "next": whether to run it is
    ``decide_on_startup``'s question.
    """
    now = _aware(now_utc, "now_utc")
    day = now.astimezone(schedule.tz).date() - _ONE_DAY
    for _ in range(4):  # windows lie within their local day, so one of these starts after now
        start, deadline = run_window(schedule, day)
        if start >= now:
            return day, start, deadline
        day += _ONE_DAY
    raise AssertionError("no window starts within two days of now")  # pragma: no cover


def decide_on_startup(
    schedule: Schedule,
    now_utc: dt.datetime,
    last_delivered_day: dt.date | None,
    expected_duration: dt.timedelta,
) -> Decision:
    """Run the latest opened window now, report it missed, or wait for the next one.

    The latest opened window is the last day whose start is at or before ``now``. If that day
    (or a later one) is delivered, wait. Otherwise run it now when ``now + expected_duration``
    is at or before its deadline, else report it missed. Days between ``last_delivered_day`` and
    it are always reported missed, never run: a full snapshot holds the current state, so a run
    labelled with an older date would deliver today's data under yesterday's name. With no
    delivery on record (``None``, a first start) no older day is reported.
    """
    now = _aware(now_utc, "now_utc")
    if expected_duration < dt.timedelta(0):
        raise SnapshotArgumentError("expected_duration must not be negative")
    if isinstance(last_delivered_day, dt.datetime):
        raise SnapshotArgumentError("last_delivered_day must be a date, not a datetime")
    day, _, deadline = _latest_opened(schedule, now)
    following, following_start, following_deadline = _following(schedule, day)
    older: tuple[dt.date, ...] = ()
    if last_delivered_day is not None:
        if last_delivered_day >= day:
            return Decision(
                Action.WAIT,
                following,
                following_deadline,
                following_start,
                (),
                f"{day.isoformat()} is delivered; next run {following.isoformat()} "
                f"at {_iso(following_start)}",
            )
        count = (day - last_delivered_day).days - 1
        older = tuple(last_delivered_day + _ONE_DAY * (i + 1) for i in range(count))
    if now + expected_duration <= deadline:
        return Decision(
            Action.RUN,
            day,
            deadline,
            now,
            older,
            f"{day.isoformat()} is not delivered and can finish before its deadline {_iso(deadline)}",
        )
    return Decision(
        Action.MISSED,
        day,
        deadline,
        following_start,
        (*older, day),
        f"{day.isoformat()} cannot finish before its deadline {_iso(deadline)}; "
        f"next run {following.isoformat()} at {_iso(following_start)}",
    )


def _instant(day: dt.date, wall: dt.time, tz: ZoneInfo) -> dt.datetime:
    """``wall`` on ``day`` in ``tz`` as UTC, read with ``fold=0`` (module docstring)."""
    local = dt.datetime.combine(day, wall.replace(fold=0), tzinfo=tz)
    return local.astimezone(dt.UTC)


def _latest_opened(schedule: Schedule, now: dt.datetime) -> tuple[dt.date, dt.datetime, dt.datetime]:
    day = now.astimezone(schedule.tz).date() + _ONE_DAY
    for _ in range(4):
        start, deadline = run_window(schedule, day)
        if start <= now:
            return day, start, deadline
        day -= _ONE_DAY
    raise AssertionError("no window opened within two days before now")  # pragma: no cover


def _following(schedule: Schedule, day: dt.date) -> tuple[dt.date, dt.datetime, dt.datetime]:
    following = day + _ONE_DAY
    start, deadline = run_window(schedule, following)
    return following, start, deadline


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise SnapshotArgumentError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"{name} must be timezone-aware (a naive datetime reads as local time)")
    return value.astimezone(dt.UTC)


def _iso(instant: dt.datetime) -> str:
    return instant.isoformat(timespec="seconds")
