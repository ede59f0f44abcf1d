"""The lag policy before the cut: go, wait, or give up waiting at the bound."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.snapshot.lag import Lag, lag_decision

NOW = dt.datetime(2026, 11, 25, 8, 30, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=30)


@pytest.mark.parametrize(
    ("total", "policy", "max_lag", "now", "expected"),
    [
        (0, "wait", 0, NOW, "go"),
        (500, "go", 0, NOW, "go"),
        (500, "wait", 500, NOW, "go"),
        (501, "wait", 500, NOW, "wait"),
        (501, "wait", 500, LATER, "give_up"),
    ],
)
def test_lag_decision(total: int, policy: str, max_lag: int, now: dt.datetime, expected: str) -> None:
    assert lag_decision(total, policy=policy, max_lag=max_lag, now=now, wait_until=LATER) == expected


def test_lag_as_manifest_json_sums_and_sorts_partitions() -> None:
    lag = Lag({"b/0": 3, "a/1": 4}, waited_s=1.23456, gave_up_waiting=True)
    assert lag.as_json() == {
        "total": 7,
        "partitions": {"a/1": 4, "b/0": 3},
        "waited_s": 1.235,
        "gave_up_waiting": True,
    }
