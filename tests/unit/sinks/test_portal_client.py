"""The Portal client over ``httpx.MockTransport``: retries, backoff, Retry-After, the deadline cap,
terminal errors, resume and bounded concurrency, without a socket or a real wait."""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from connector.devtools._portal_app import Fault, PortalApp
from connector.devtools._portal_requests import Problem
from connector.errors import TerminalError, TransientError
from connector.sinks._portal_retry import retry_after_seconds
from connector.sinks._portal_wire import EMPTY_CHECKSUM
from connector.sinks.exceptions import (
    EncodeError,
    PortalAuthError,
    PortalBackpressureError,
    PortalMismatchError,
    PortalRejectedError,
    PortalUnavailableError,
    SinkConfigError,
)
from connector.sinks.portal import ApiDelivery, PortalClient, set_checksum
from tests.portal_helpers import CANARY_NAME, FakeTime, expected_json, family_records, sim_transport

DAY = dt.date(2024, 11, 5)
KEY = "secret-key"
Handler = Callable[[httpx.Request], httpx.Response]


def client(transport: httpx.BaseTransport, time_: FakeTime, **options: Any) -> PortalClient:
    options.setdefault("rng", random.Random(7))
    return PortalClient(
        "http://portal", KEY, transport=transport, clock=time_.clock, sleep=time_.sleep, **options
    )


def scripted(app: PortalApp, script: dict[int, list[Any]], seen: list[httpx.Request]) -> httpx.MockTransport:
    """The simulator, except that batch ``n``'s first answers come from ``script[n]``:
    an ``httpx.Response`` or an exception to raise (the simulator is not called for those)."""
    inner = sim_transport(app)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "PUT":
            pending = script.get(int(request.url.path.rsplit("/", 1)[-1]), [])
            if pending:
                step = pending.pop(0)
                if isinstance(step, Exception):
                    raise step
                assert isinstance(step, httpx.Response)
                return step
        return inner.handle_request(request)

    return httpx.MockTransport(handle)


def puts(seen: list[httpx.Request], sequence: int) -> list[httpx.Request]:
    return [r for r in seen if r.method == "PUT" and r.url.path.endswith(f"/batches/{sequence}")]


def test_a_set_is_sent_as_full_batches_then_committed_with_count_and_checksum() -> None:
    app, seen, time_ = PortalApp(KEY), [], FakeTime()
    records = family_records(2500)
    with client(scripted(app, {}, seen), time_) as portal:
        delivery = portal.deliver("Family", DAY, records, 2500, snapshot_id="cut-1")
    assert delivery == ApiDelivery(
        "Family", DAY, delivery.session_id, 3, 2500, set_checksum("Family", records)[1], 0, 0
    )
    sizes = [len(orjson.loads(r.content)["records"]) for r in seen if r.method == "PUT"]
    assert sorted(sizes) == [500, 1000, 1000]
    accepted = app.store.accepted("Family", DAY.isoformat())
    assert accepted["records"] == expected_json("Family", records)
    assert (accepted["record_count"], accepted["checksum"]) == (2500, delivery.checksum)
    assert delivery.as_manifest() == {
        "session_id": delivery.session_id,
        "batch_count": 3,
        "record_count": 2500,
        "checksum": delivery.checksum,
    }


def test_an_empty_set_is_a_session_with_no_batches_and_the_empty_checksum() -> None:
    app, time_ = PortalApp(KEY), FakeTime()
    with client(sim_transport(app), time_) as portal:
        delivery = portal.deliver("Provider", DAY, [], 0, snapshot_id="cut-1")
    assert (delivery.batch_count, delivery.record_count, delivery.checksum) == (0, 0, EMPTY_CHECKSUM)
    assert app.store.accepted("Provider", DAY.isoformat())["records"] == []


@pytest.mark.parametrize("header", ["7", "date"])
def test_429_waits_for_retry_after_and_resends_the_same_key_and_bytes(header: str) -> None:
    app, seen, time_ = PortalApp(KEY), [], FakeTime()
    value = (
        header
        if header != "date"
        else email.utils.format_datetime(time_.now + dt.timedelta(seconds=30), True)
    )
    script = {1: [httpx.Response(429, headers={"Retry-After": value})]}
    with client(scripted(app, script, seen), time_, max_concurrency=1) as portal:
        delivery = portal.deliver("Family", DAY, family_records(10), 10, snapshot_id="cut-1")
    wanted = 7.0 if header == "7" else 30.0
    assert len(time_.sleeps) == 1
    assert wanted <= time_.sleeps[0] <= wanted * 1.1
    first, second = puts(seen, 1)
    assert first.content == second.content
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert delivery.retries == 1


def test_a_retry_after_that_would_pass_the_deadline_fails_at_once_as_transient() -> None:
    app, seen, time_ = PortalApp(KEY), [], FakeTime()
    script = {1: [httpx.Response(429, headers={"Retry-After": "3600"})]}
    deadline = time_.now + dt.timedelta(minutes=10)
    with (
        client(scripted(app, script, seen), time_, deadline=deadline) as portal,
        pytest.raises(PortalUnavailableError, match="would pass the deadline") as caught,
    ):
        portal.deliver("Family", DAY, family_records(10), 10, snapshot_id="cut-1")
    assert isinstance(caught.value, TransientError)
    assert time_.sleeps == []
    assert app.store.stats()["applied_batches"] == 0


def test_backoff_is_exponential_with_full_jitter_on_5xx_timeouts_and_dropped_connections() -> None:
    app, seen, time_ = PortalApp(KEY), [], FakeTime()
    request = httpx.Request("PUT", "http://portal")
    script = {
        1: [
            httpx.Response(500),
            httpx.ReadTimeout("slow", request=request),
            httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request),
            httpx.ConnectError("refused", request=request),
            httpx.Response(503),
        ]
    }
    with client(scripted(app, script, seen), time_, max_concurrency=1, backoff_base=1.0) as portal:
        delivery = portal.deliver("Family", DAY, family_records(5), 5, snapshot_id="cut-1")
    assert delivery.retries == 5
    assert len(time_.sleeps) == 5
    for attempt, slept in enumerate(time_.sleeps, start=1):
        assert 0 <= slept <= 2 ** (attempt - 1)
    assert len({r.content for r in puts(seen, 1)}) == 1
    assert len({r.headers["Idempotency-Key"] for r in puts(seen, 1)}) == 1
    assert app.store.stats()["applied_batches"] == 1


def test_a_batch_applied_before_its_answer_was_lost_is_applied_once() -> None:
    app, time_ = PortalApp(KEY, faults=[Fault(on="put_batch", after_apply=True, sequence=2)]), FakeTime()
    with client(sim_transport(app), time_) as portal:
        delivery = portal.deliver("Family", DAY, family_records(2500), 2500, snapshot_id="cut-1")
    stats = app.store.stats()
    assert (stats["applied_batches"], stats["replays"], stats["duplicate_applications"]) == (3, 1, 0)
    assert delivery.retries == 1


def test_retries_stop_after_max_attempts_and_backpressure_keeps_its_delay() -> None:
    app, seen, time_ = PortalApp(KEY), [], FakeTime()
    script = {1: [httpx.Response(429, headers={"Retry-After": "2"})] * 3}
    with (
        client(scripted(app, script, seen), time_, max_attempts=3) as portal,
        pytest.raises(PortalBackpressureError) as caught,
    ):
        portal.deliver("Family", DAY, family_records(5), 5, snapshot_id="cut-1")
    assert caught.value.retry_after == 2.0
    assert len(puts(seen, 1)) == 3


def test_a_4xx_is_terminal_for_the_entity_with_its_status_and_type_and_no_values() -> None:
    app, seen, time_ = PortalApp(KEY), [], FakeTime()
    problem = {"type": "x", "title": "Record breaks the schema", "status": 422, "detail": "record 3, field X"}
    script = {1: [httpx.Response(422, json=problem, headers={"Content-Type": "application/problem+json"})]}
    with client(scripted(app, script, seen), time_) as portal, pytest.raises(PortalRejectedError) as caught:
        portal.deliver("Family", DAY, family_records(5), 5, snapshot_id="cut-1")
    error = caught.value
    assert isinstance(error, TerminalError)
    assert not isinstance(error, PortalAuthError)
    assert (error.status, error.problem_type) == (422, "x")
    assert "batch 1" in str(error)  # where: the operator finds the record by entity, date and batch
    assert "(422 Unprocessable Entity, problem type x)" in str(error)
    assert "Record breaks the schema" not in str(error)  # the Portal's free text is not kept
    assert "record 3, field X" not in str(error)
    assert CANARY_NAME not in str(error)
    assert "fam-0" not in str(error)
    assert len(puts(seen, 1)) == 1
    assert time_.sleeps == []


def test_a_wrong_key_fails_at_the_first_call() -> None:
    seen: list[httpx.Request] = []
    with (
        PortalClient("http://portal", "wrong", transport=sim_transport(PortalApp(KEY), seen)) as portal,
        pytest.raises(PortalAuthError, match="401 Unauthorized"),
    ):
        portal.deliver("Family", DAY, family_records(5), 5, snapshot_id="cut-1")
    assert len(seen) == 1


def test_request_timeouts_are_capped_by_the_deadline_and_a_passed_deadline_sends_nothing() -> None:
    app, seen, time_ = PortalApp(KEY), [], FakeTime()
    deadline = time_.now + dt.timedelta(seconds=12)
    with client(scripted(app, {}, seen), time_, deadline=deadline, timeout=30.0) as portal:
        portal.deliver("Family", DAY, family_records(5), 5, snapshot_id="cut-1")
        assert all(r.extensions["timeout"]["read"] <= 12.0 for r in seen)
        time_.now = deadline
        with pytest.raises(PortalUnavailableError, match="deadline has passed"):
            portal.deliver("Family", DAY, family_records(5), 5, snapshot_id="cut-2")
    assert len(seen) == 3


def test_an_interrupted_upload_resumes_at_the_first_unacknowledged_batch() -> None:
    records = family_records(2500)
    app = PortalApp(KEY, faults=[Fault(on="put_batch", sequence=3, times=5)])
    with (
        client(sim_transport(app), FakeTime(), batch_size=500, max_concurrency=1, max_attempts=2) as portal,
        pytest.raises(PortalUnavailableError),
    ):
        portal.deliver("Family", DAY, records, 2500, snapshot_id="cut-1")
    assert [seq for _, seq in app.store.stats()["applications"]] == [1, 2]
    app.clear_faults()
    with client(sim_transport(app), FakeTime(), batch_size=500, max_concurrency=1) as portal:
        delivery = portal.deliver("Family", DAY, records, 2500, snapshot_id="cut-1")
    assert [seq for _, seq in app.store.stats()["applications"]] == [1, 2, 3, 4, 5]
    assert (delivery.resumed_batches, delivery.batch_count) == (2, 5)
    assert delivery.checksum == set_checksum("Family", records)[1]


def test_resuming_with_other_records_under_the_same_snapshot_id_is_refused() -> None:
    app = PortalApp(KEY, faults=[Fault(on="put_batch", sequence=2, times=5)])
    with client(sim_transport(app), FakeTime(), batch_size=5, max_concurrency=1, max_attempts=1) as portal:
        with pytest.raises(PortalUnavailableError):
            portal.deliver("Family", DAY, family_records(10), 10, snapshot_id="cut-1")
        with pytest.raises(PortalMismatchError, match="batch 1 differs"):
            portal.deliver("Family", DAY, family_records(10, prefix="other"), 10, snapshot_id="cut-1")


def test_a_committed_session_is_reported_again_without_uploading() -> None:
    app, time_ = PortalApp(KEY), FakeTime()
    records = family_records(1200)
    with client(sim_transport(app), time_) as portal:
        first = portal.deliver("Family", DAY, records, 1200, snapshot_id="cut-1")
        again = portal.deliver("Family", DAY, records, 1200, snapshot_id="cut-1")
        with pytest.raises(PortalMismatchError, match="committed with other records"):
            portal.deliver("Family", DAY, records[:-1], 1199, snapshot_id="cut-1")
    assert (again.session_id, again.checksum, again.resumed_batches) == (first.session_id, first.checksum, 2)
    assert app.store.stats()["applied_batches"] == 2


@pytest.mark.parametrize(("given", "count"), [(9, 10), (11, 10)])
def test_records_that_do_not_number_the_count_are_never_committed(given: int, count: int) -> None:
    app = PortalApp(KEY)
    with (
        client(sim_transport(app), FakeTime(), batch_size=4) as portal,
        pytest.raises(PortalMismatchError, match="count"),
    ):
        portal.deliver("Family", DAY, family_records(given), count, snapshot_id="cut-1")
    with pytest.raises(Problem, match="404 not-found"):
        app.store.accepted("Family", DAY.isoformat())


def test_a_record_that_cannot_be_encoded_names_the_field_and_position_not_the_value() -> None:
    records = family_records(5)
    records[3]["PlanCode"] = 12345
    with (
        client(sim_transport(PortalApp(KEY)), FakeTime()) as portal,
        pytest.raises(EncodeError, match=r"Family\.PlanCode in record 4 of the set") as caught,
    ):
        portal.deliver("Family", DAY, records, 5, snapshot_id="cut-1")
    assert "12345" not in str(caught.value)
    assert CANARY_NAME not in str(caught.value)


def test_at_most_max_concurrency_batches_are_in_flight() -> None:
    app, lock = PortalApp(KEY), threading.Lock()
    inner = sim_transport(app)
    state = {"now": 0, "most": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method != "PUT":
            return inner.handle_request(request)
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.02)
        try:
            return inner.handle_request(request)
        finally:
            with lock:
                state["now"] -= 1

    with PortalClient(
        "http://portal", KEY, batch_size=10, max_concurrency=3, transport=httpx.MockTransport(handle)
    ) as p:
        p.deliver("Family", DAY, family_records(200), 200, snapshot_id="cut-1")
    assert 2 <= state["most"] <= 3


def test_records_are_consumed_lazily() -> None:
    taken = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal taken
        for record in family_records(30):
            taken += 1
            yield record

    app = PortalApp(KEY, faults=[Fault(on="put_batch", action="error", status=400, sequence=1)])
    with (
        client(sim_transport(app), FakeTime(), batch_size=10, max_concurrency=1) as portal,
        pytest.raises(PortalRejectedError),
    ):
        portal.deliver("Family", DAY, records(), 30, snapshot_id="cut-1")
    assert taken <= 20


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"batch_size": 1001}, "batch_size must be between 1 and 1000"),
        ({"batch_size": 0}, "batch_size"),
        ({"deadline": dt.datetime(2024, 11, 5, 3)}, "timezone-aware"),  # noqa: DTZ001 - the point
        ({"max_concurrency": 0}, "positive"),
    ],
)
def test_bad_settings_are_refused_at_construction(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(SinkConfigError, match=problem):
        PortalClient("http://portal", KEY, **options)
    with pytest.raises(SinkConfigError, match="api_key"):
        PortalClient("http://portal", "")


def test_bad_delivery_arguments_are_refused_before_any_call() -> None:
    seen: list[httpx.Request] = []
    with PortalClient("http://portal", KEY, transport=sim_transport(PortalApp(KEY), seen)) as portal:
        with pytest.raises(SinkConfigError, match="unknown entity"):
            portal.deliver("Nope", DAY, [], 0, snapshot_id="cut-1")
        with pytest.raises(SinkConfigError, match="snapshot_id"):
            portal.deliver("Family", DAY, [], 0, snapshot_id="has space")
    assert seen == []


def test_retry_after_reads_seconds_dates_and_refuses_garbage() -> None:
    now = dt.datetime(2024, 11, 5, 9, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(" 1.5 ", now) == 1.5
    assert retry_after_seconds("Tue, 05 Nov 2024 09:01:00 GMT", now) == 60.0
    assert retry_after_seconds("Tue, 05 Nov 2024 08:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_every_answer_and_retry_is_reported_to_the_observer_by_status() -> None:
    app, time_ = PortalApp(KEY, faults=[Fault(on="put_batch", after_apply=True, sequence=2)]), FakeTime()
    events: list[tuple[str, int | None]] = []
    with client(
        sim_transport(app), time_, observe=lambda event, status: events.append((event, status))
    ) as portal:
        portal.deliver("Family", DAY, family_records(2500), 2500, snapshot_id="cut-1")
    retries = [status for event, status in events if event == "retry"]
    responses = [status for event, status in events if event == "response"]
    assert retries == [500]  # the batch whose answer failed after it was applied
    assert responses.count(500) == 1
    assert len(responses) == len(app.store.stats()["applications"]) + 1 + 2  # + the retry, open, commit
