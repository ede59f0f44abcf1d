"""The Portal API route over HTTP: the client against the simulator started by the CLI
(``carecloud-connector simulate-portal``) as a subprocess, with faults injected on demand.

Each test uses its own snapshot date, so the one simulator of this module is shared safely.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.ops.logs import configure_logging
from connector.sinks._portal_openapi import load_openapi
from connector.sinks._portal_wire import canonical, checksum_of
from connector.sinks.exceptions import (
    PortalAuthError,
    PortalRejectedError,
    PortalUnavailableError,
    SinkConfigError,
)
from connector.sinks.portal import PortalClient, set_checksum
from tests.integration.portal_sim import KEY, Simulator, next_day
from tests.portal_helpers import CANARY_AMOUNT, CANARY_NAME, ContractChecker, expected_json, family_records

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean(sim: Simulator) -> Iterator[None]:
    sim.clear()
    yield
    sim.clear()


def client(sim: Simulator, **options: Any) -> PortalClient:
    options.setdefault("backoff_base", 0.05)
    return PortalClient(sim.url, KEY, **options)


def test_2500_records_arrive_as_1000_1000_500_and_are_committed_with_count_and_checksum(
    sim: Simulator,
) -> None:
    day, records = next_day(), family_records(2500)
    with client(sim) as portal:
        delivery = portal.deliver("Family", day, records, 2500, snapshot_id="cut-1")
        [session] = portal.sessions("Family", day)
    assert [(b.sequence, b.record_count) for b in session.batches] == [(1, 1000), (2, 1000), (3, 500)]
    count, checksum = set_checksum("Family", records)
    assert (delivery.batch_count, delivery.record_count, delivery.checksum) == (3, count, checksum)
    assert session.commit is not None
    assert (session.commit.record_count, session.commit.checksum) == (2500, checksum)
    accepted = sim.accepted("Family", day)
    assert accepted["records"] == expected_json("Family", records)
    assert (accepted["record_count"], accepted["checksum"], accepted["session_id"]) == (
        2500,
        checksum,
        delivery.session_id,
    )
    assert sorted(sim.applications(delivery.session_id)) == [1, 2, 3]


def test_a_1001_record_batch_is_refused_by_the_simulator_and_by_the_client(sim: Simulator) -> None:
    opened = sim.http.post(
        "/v1/entities/Family/sessions", json={"snapshot_date": str(next_day()), "snapshot_id": "x"}
    )
    session_id = opened.json()["id"]
    records = expected_json("Family", family_records(1001))
    body = {"checksum": checksum_of(canonical(r) for r in records), "records": records}
    response = sim.http.put(
        f"/v1/entities/Family/sessions/{session_id}/batches/1", json=body, headers={"Idempotency-Key": "a"}
    )
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/batch-too-large")
    with pytest.raises(SinkConfigError, match="1000"):
        PortalClient(sim.url, KEY, batch_size=1001)


def test_a_single_entity_outside_a_session_is_refused(sim: Simulator) -> None:
    record = expected_json("Family", family_records(1))[0]
    for method, path in (("POST", "/v1/entities/Family/records"), ("PUT", "/v1/entities/Family/fam-000000")):
        response = sim.http.request(method, path, json=record)
        assert response.status_code == 404
        assert response.json()["type"].endswith("/outside-session")


def test_a_wrong_key_fails_clearly_at_the_first_call(sim: Simulator) -> None:
    before = sim.stats()["unauthorized"]
    with PortalClient(sim.url, "wrong-key") as portal, pytest.raises(PortalAuthError) as caught:
        portal.deliver("Family", next_day(), family_records(10), 10, snapshot_id="cut-1")
    assert "401 Unauthorized" in str(caught.value)
    assert "X-API-Key" in str(caught.value)
    assert sim.stats()["unauthorized"] == before + 1


def test_429_retry_after_in_seconds_and_as_a_date_are_honoured(sim: Simulator) -> None:
    sim.faults(
        {"on": "put_batch", "sequence": 1, "action": "throttle", "retry_after": 1},
        {
            "on": "put_batch",
            "sequence": 2,
            "action": "throttle",
            "retry_after": 2,
            "retry_after_format": "date",
        },
    )
    waits: list[float] = []
    ends: list[float] = []  # the wall clock each wait is to end at

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        ends.append(time.time() + seconds)
        time.sleep(seconds)

    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    with client(sim, batch_size=10, max_concurrency=1, sleep=sleep, deadline=deadline) as portal:
        delivery = portal.deliver("Family", next_day(), family_records(20), 20, snapshot_id="cut-1")
    assert delivery.retries == 2
    assert 1.0 <= waits[0] <= 1.1  # seconds, plus at most 10 % jitter
    # An HTTP-date 2 s ahead, to the whole second, of when the simulator answered batch 2: after
    # the first wait ended, so no earlier than floor(ends[0]) + 2. What is left of it when the
    # client reads it can be under 1 s (the date is truncated, then the reply takes its time on
    # a loaded runner; issue 22 sweep), so the client is held to waiting until the date, and
    # to no more than 2 s plus its jitter.
    assert ends[1] >= math.floor(ends[0]) + 2 - 0.001
    assert waits[1] <= 2.3
    assert sorted(sim.applications(delivery.session_id)) == [1, 2]


def test_a_retry_after_beyond_the_deadline_fails_before_it_instead_of_waiting(sim: Simulator) -> None:
    sim.faults({"on": "put_batch", "action": "throttle", "retry_after": 3600})
    started = time.monotonic()
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    with (
        client(sim, deadline=deadline) as portal,
        pytest.raises(PortalUnavailableError, match="would pass the deadline"),
    ):
        portal.deliver("Family", next_day(), family_records(10), 10, snapshot_id="cut-1")
    assert time.monotonic() - started < 5


def test_a_500_after_the_batch_was_applied_is_retried_with_the_same_key_and_applied_once(
    sim: Simulator,
) -> None:
    sim.faults({"on": "put_batch", "sequence": 2, "action": "error", "status": 500, "after_apply": True})
    replays = sim.stats()["replays"]
    day, records = next_day(), family_records(2500)
    with client(sim) as portal:
        delivery = portal.deliver("Family", day, records, 2500, snapshot_id="cut-1")
    assert delivery.retries == 1
    assert sorted(sim.applications(delivery.session_id)) == [1, 2, 3]
    assert sim.stats()["replays"] == replays + 1
    assert sim.stats()["duplicate_applications"] == 0
    assert sim.accepted("Family", day)["records"] == expected_json("Family", records)


def test_dropped_connections_and_timeouts_are_retried_and_applied_once(sim: Simulator) -> None:
    sim.faults(
        {"on": "put_batch", "sequence": 1, "action": "drop"},
        {"on": "put_batch", "sequence": 2, "action": "drop", "after_apply": True},
        {"on": "put_batch", "sequence": 3, "action": "slow", "delay": 1.5},
        {"on": "commit", "action": "drop", "after_apply": True},
    )
    day, records = next_day(), family_records(300)
    with client(sim, batch_size=100, max_concurrency=2, timeout=0.5) as portal:
        delivery = portal.deliver("Family", day, records, 300, snapshot_id="cut-1")
    assert delivery.retries >= 4
    assert sorted(sim.applications(delivery.session_id)) == [1, 2, 3]
    assert sim.accepted("Family", day)["checksum"] == delivery.checksum


def test_a_client_killed_mid_session_is_resumed_at_the_first_unacknowledged_batch(sim: Simulator) -> None:
    """The killed client is pinned in batch 6 by a fault, not by timing, so what it left is known.

    Batch 6 sleeps in the simulator's worker when the client is killed; the worker then applies
    it (as a real Portal may after the client has gone), so 1-6 are acknowledged when the new
    client opens the session. The resuming client runs with its production concurrency, so the
    Portal may apply 7-40 in any order: what resume must guarantee is that every unacknowledged
    batch is applied exactly once, no acknowledged one is sent again, and the commit's count and
    checksum are the whole set's (issue 22: the first applied batch was asserted to be the lowest
    and failed one run in six).
    """
    day, count, size, pinned = next_day(), 4000, 100, 6
    batches = set(range(1, count // size + 1))
    sim.faults({"on": "put_batch", "sequence": pinned, "action": "slow", "delay": 2.0, "times": 1})
    command = [
        sys.executable,
        "-m",
        "tests.integration.portal_client_run",
        sim.url,
        KEY,
        str(day),
        str(count),
        str(size),
        "cut-1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # The fault is taken when batch 6 arrives, before its sleep: from then until the sleep
        # ends, the client is waiting on batch 6 and nothing else.
        while (stats := sim.stats())["pending_faults"] != 0 or stats["in_flight"] != 1:
            assert time.monotonic() < deadline, "the client never reached the pinned batch"
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        sim.wait_quiet()  # the pinned batch wakes, is applied, and its reply meets a closed socket
        with client(sim, batch_size=size) as portal:  # the killed client's batch size
            [session] = portal.sessions("Family", day)
            acknowledged = set(session.acknowledged)
            assert acknowledged == set(range(1, pinned + 1))
            already = len(sim.applications(session.session_id))
            before = sim.stats()
            delivery = portal.deliver("Family", day, family_records(count), count, snapshot_id="cut-1")
    finally:
        if process.poll() is None:
            process.kill()
    after = sim.stats()
    resumed = sim.applications(session.session_id)[already:]
    assert sorted(resumed) == sorted(batches - acknowledged)  # each unacknowledged batch once
    assert after["replays"] == before["replays"]  # no acknowledged batch was sent again
    assert sorted(sim.applications(session.session_id)) == sorted(batches)
    assert (delivery.session_id, delivery.resumed_batches) == (session.session_id, len(acknowledged))
    assert (delivery.record_count, delivery.checksum) == set_checksum("Family", family_records(count))
    assert after["duplicate_applications"] == 0
    assert sim.accepted("Family", day)["records"] == expected_json("Family", family_records(count))


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The test's log lines as the service writes them (JSON, through connector.ops.logs)."""
    names = ("", "botocore", "boto3", "urllib3", "paramiko", "httpx", "httpcore")
    levels = {name: logging.getLogger(name).level for name in names}
    stream = io.StringIO()
    handler = configure_logging("DEBUG", "json", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_a_record_that_breaks_the_schema_is_terminal_for_its_entity_with_status_and_type_only(
    sim: Simulator, logs: io.StringIO
) -> None:
    """The simulator's problem says which record and field; a real Portal may say more (the
    value), so of the problem only the status and the type token are kept (issue 16)."""
    day, records = next_day(), family_records(30)
    records[17]["DeductibleAmount"] = CANARY_AMOUNT
    with client(sim) as portal:
        with pytest.raises(PortalRejectedError) as caught:
            portal.deliver("Family", day, records, 30, snapshot_id="cut-1")
        other = portal.deliver("Family", day, family_records(5), 5, snapshot_id="cut-2")
    error = caught.value
    assert (error.status, error.problem_type) == (422, "schema-violation")
    assert "(422 Unprocessable Entity, problem type schema-violation)" in str(error)
    text = "\n".join([str(error), repr(error), repr(vars(error)), logs.getvalue()])
    for leaked in (
        "Record breaks the schema",  # the problem's title
        "record 17, field DeductibleAmount",  # its detail
        str(CANARY_AMOUNT),
        "98765432109",
        CANARY_NAME,
        "fam-000017",
    ):
        assert leaked not in text
    assert sim.accepted("Family", day)["session_id"] == other.session_id


def test_the_simulator_answers_as_its_openapi_yaml_says(sim: Simulator) -> None:
    checker = ContractChecker(load_openapi())
    served = sim.http.get("/openapi.yaml", headers={"X-API-Key": ""})
    assert served.status_code == 200
    assert "openapi: 3.1.0" in served.text
    day = str(next_day())
    records = expected_json("Family", family_records(3))
    body = {"checksum": checksum_of(canonical(r) for r in records), "records": records}
    seen: list[tuple[str, str, httpx.Response]] = []

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = sim.http.request(method, path, **kwargs)
        seen.append((method, path, response))
        return response

    opened = call(
        "POST", "/v1/entities/Family/sessions", json={"snapshot_date": day, "snapshot_id": "c"}
    ).json()
    base = f"/v1/entities/Family/sessions/{opened['id']}"
    call("POST", "/v1/entities/Family/sessions", json={"snapshot_date": day, "snapshot_id": "c"})
    call("POST", "/v1/entities/Family/sessions", json={"snapshot_date": "soon", "snapshot_id": "c"})
    call("POST", "/v1/entities/Nope/sessions", json={"snapshot_date": day, "snapshot_id": "c"})
    call("PUT", f"{base}/batches/1", json=body, headers={"Idempotency-Key": "k1"})
    call("PUT", f"{base}/batches/1", json=body, headers={"Idempotency-Key": "k1"})
    call("PUT", f"{base}/batches/1", json=body, headers={"Idempotency-Key": "k2"})
    call(
        "PUT",
        f"{base}/batches/2",
        json={**body, "records": [{"EntityId": 1}]},
        headers={"Idempotency-Key": "k3"},
    )
    call("PUT", f"{base}/batches/2", json=body)
    call("GET", base)
    call("GET", "/v1/entities/Family/sessions", params={"snapshot_date": day})
    call("POST", f"{base}/commit", json={"record_count": 4, "batch_count": 1, "checksum": body["checksum"]})
    call("POST", f"{base}/commit", json={"record_count": 3, "batch_count": 1, "checksum": body["checksum"]})
    call("PUT", f"{base}/batches/2", json=body, headers={"Idempotency-Key": "k4"})
    call("GET", base, headers={"X-API-Key": "wrong"})
    call("DELETE", base)
    call("GET", "/v1/entities/Family/everything")
    sim.faults({"on": "get_session", "action": "error", "status": 503})
    call("GET", base)
    sim.http.put("/_sim/rate-limit", json={"per_second": 0.001})
    call("GET", base)
    call("GET", base)
    statuses = [response.status_code for _, _, response in seen]
    assert {200, 201, 400, 401, 404, 405, 409, 422, 429, 503} <= set(statuses)
    for method, path, response in seen:
        checker.check(method, path, response.status_code, response.headers["Content-Type"], response.json())
