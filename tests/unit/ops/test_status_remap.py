"""``status``'s re-mapping line (issue 20, docs/decisions/0025): the pass's progress per state
partition as the mapping registry holds it, summed; or why it could not be read."""

from __future__ import annotations

import datetime as dt

from connector.errors import TransientError
from connector.ops.status import Status, format_status, gather_remap, schedule_status
from connector.snapshot.schedule import Schedule


def _status() -> Status:
    return Status("g", schedule_status(Schedule(), dt.datetime(2026, 3, 8, 20, tzinfo=dt.UTC)))


def test_the_pass_is_summed_over_partitions_with_what_it_left() -> None:
    status = _status()
    progress = {
        0: {"versions": {"Family": "a"}, "done": True, "counts": {"remapped": 500, "failed": 2}, "left": 0},
        1: {"versions": {}, "done": False, "counts": {"remapped": 40, "no_source": 3}, "left": 460},
    }
    gather_remap(status, lambda: progress)
    assert (
        "re-mapping pass: done in 1 of 2 partitions; 540 re-mapped, 2 failed (dead letters), "
        "3 without source columns, 460 left"
    ) in format_status(status)
    assert status.as_json()["remap"]["partitions"]["1"]["left"] == 460


def test_no_progress_and_an_unreadable_registry_say_so() -> None:
    status = _status()
    gather_remap(status, dict)
    assert "re-mapping pass: no progress recorded" in format_status(status)

    def away() -> dict[int, dict[str, object]]:
        raise TransientError("reading the registry: not at its end in time")

    status = _status()
    gather_remap(status, away)
    assert "re-mapping pass: unknown (TransientError: reading the registry" in format_status(status)
    assert status.as_json()["remap"]["partitions"] is None
