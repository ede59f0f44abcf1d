"""The daily loop: decide, run with retries until the deadline, report missed days, sleep.

Every decision is ``schedule.decide_on_startup`` (pure, tested over DST changes); this module
only acts on it, with the clock, the sleep and the run passed in, so its tests drive days of
schedule in milliseconds. The loop asks the storage what was last published each time round,
so several pods agree without talking to each other: the one that wins the lease runs, the
others see ``LeaseBusyError`` and look again after a short wait, by which time the date is
published (``WAIT``) or the holder died and its lease expired (``RUN``).

A held date (``Outcome.HELD``: an entity blocked or refused before the decision time) is run
again every ``recheck_s`` until the decision time: a fix (a corrected API key) or an operator's
``snapshot --override`` lets it publish complete; at the decision time the run publishes it
without the entity.

Retries: a transient failure (S3 down, broker unavailable) is retried with capped exponential
backoff for as long as a retry could still finish before the deadline; after that the day is
reported missed. A terminal failure (bad config, a lost lease) is reported at once and the day
is not retried: running it again would fail the same way, and on-call is paged by the metric.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from connector.errors import ConnectorError, TerminalError, TransientError
from connector.ops.logs import log_context
from connector.snapshot.exceptions import LeaseBusyError, RunStoppedError
from connector.snapshot.run import Outcome, RunResult
from connector.snapshot.schedule import Action, Schedule, decide_on_startup, next_run, run_window

__all__ = ["Scheduler", "SchedulerEvents"]

log = logging.getLogger(__name__)


@dataclass
class SchedulerEvents:
    """Callbacks for metrics; each takes plain values (dates, outcomes, seconds), no records."""

    starting: Callable[[dt.date, float], None] = lambda day, slack_s: None
    """Called before each attempt with the seconds between its expected finish and the deadline."""
    missed: Callable[[dt.date, str], None] = lambda day, why: None
    finished: Callable[[dt.date, str, float], None] = lambda day, outcome, slack_s: None
    """Called with the outcome and the seconds left before the deadline (negative: late)."""
    reported: set[dt.date] = field(default_factory=set)


class Scheduler:
    """Runs ``run(day)`` once per scheduled day, before ``schedule``'s deadline."""

    def __init__(
        self,
        schedule: Schedule,
        run: Callable[[dt.date], RunResult],
        last_published: Callable[[], dt.date | None],
        *,
        expected_duration: dt.timedelta,
        clock: Callable[[], dt.datetime],
        sleep: Callable[[float], bool],
        events: SchedulerEvents | None = None,
        busy_wait_s: float = 30.0,
        max_backoff_s: float = 300.0,
        recheck_s: float = 300.0,
    ) -> None:
        self._schedule, self._run, self._last_published = schedule, run, last_published
        self._expected, self._clock, self._sleep = expected_duration, clock, sleep
        self._events = events or SchedulerEvents()
        self._busy_wait_s, self._max_backoff_s, self._recheck_s = busy_wait_s, max_backoff_s, recheck_s
        self._given_up: set[dt.date] = set()

    def run_forever(self) -> None:
        """Loop until ``sleep`` returns True (the stop event was set)."""
        while not self.step():
            pass

    def step(self) -> bool:
        """One decision and the action it calls for; True when asked to stop."""
        now = self._clock()
        decision = decide_on_startup(self._schedule, now, self._last_published(), self._expected)
        for day in decision.missed:
            self._report_missed(day, decision.reason)
        if decision.action is Action.RUN and decision.day not in self._given_up:
            return self._attempt(decision.day, decision.deadline_utc)
        wake = decision.wake_utc
        if decision.action is Action.RUN:  # given up on this day: wait for the next window
            _, wake, _ = next_run(self._schedule, now)
        log.info("next snapshot decision at %s (%s)", wake.isoformat(timespec="seconds"), decision.reason)
        return self._sleep(max((wake - now).total_seconds(), 0.0))

    def _attempt(self, day: dt.date, deadline: dt.datetime) -> bool:
        backoff = 10.0
        while True:
            expected_finish = self._clock() + self._expected
            self._events.starting(day, (deadline - expected_finish).total_seconds())
            try:
                with log_context(snapshot_date=day):  # on every line the run logs on this thread
                    result = self._run(day)
            except RunStoppedError:
                log.info("snapshot %s stopped for shutdown; its lease is released", day)
                return True
            except LeaseBusyError:
                log.info(
                    "snapshot %s is being run by another owner; looking again",
                    day,
                    extra={"retry_in_s": self._busy_wait_s},
                )
                return self._sleep(self._busy_wait_s)
            except TransientError as exc:
                now = self._clock()
                if now + dt.timedelta(seconds=backoff) + self._expected > deadline:
                    self._give_up(day, "still failing near the deadline", exc)
                    return False
                log.warning(
                    "snapshot %s failed; retrying",
                    day,
                    extra={"error": type(exc).__name__, "retry_in_s": backoff},
                )
                if self._sleep(backoff):
                    return True
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            except TerminalError as exc:
                self._give_up(day, "failed", exc)
                return False
            except Exception as exc:  # a bug: report the day rather than kill the scheduler thread
                log.exception("snapshot %s failed unexpectedly", day)
                self._give_up(day, "failed unexpectedly", exc)
                return False
            slack = (deadline - self._clock()).total_seconds()
            self._events.finished(day, result.outcome.value, slack)
            if result.outcome is Outcome.HELD and result.decide_by is not None:
                # Counted (and alerted on) at every look, until an override or a fix lets the
                # date publish complete, or the decision time publishes it without the entity.
                wait = min(
                    self._recheck_s, max((result.decide_by - self._clock()).total_seconds(), 0.0) + 1.0
                )
                log.warning(
                    "snapshot %s waits for an override or a fix; looking again",
                    day,
                    extra={"retry_in_s": round(wait)},
                )
                if self._sleep(wait):
                    return True
                continue
            if result.outcome is not Outcome.ALREADY_PUBLISHED:
                log.info("snapshot %s %s with %.0f s to spare", day, result.outcome.value, slack)
            return False

    def _give_up(self, day: dt.date, cause: str, exc: Exception) -> None:
        """Report ``day`` missed because of ``exc``; the events' reason is the cause and the
        error: a ``ConnectorError``'s message (it names settings and positions, never values,
        by contract) or, for any other error, its class (its message may be a record's key)."""
        self._given_up.add(day)
        self._events.finished(day, "failed", (self._deadline(day) - self._clock()).total_seconds())
        detail = str(exc) if isinstance(exc, ConnectorError) else type(exc).__name__
        self._report_missed(day, f"{cause}: {detail}", cause=cause, exc=exc)

    def _deadline(self, day: dt.date) -> dt.datetime:
        return run_window(self._schedule, day)[1]

    def _report_missed(
        self, day: dt.date, why: str, *, cause: str | None = None, exc: Exception | None = None
    ) -> None:
        if day in self._events.reported:
            return
        self._events.reported.add(day)
        if exc is None:
            log.error("snapshot %s missed: %s", day, why)
        else:  # the error by name and exc_info, never in the message (connector.ops.logs keeps the
            # message of a ConnectorError only; an unexpected error was logged with its stack)
            log.error(
                "snapshot %s missed: %s",
                day,
                cause,
                extra={"error": type(exc).__name__},
                exc_info=exc if isinstance(exc, ConnectorError) else None,
            )
        self._events.missed(day, why)
