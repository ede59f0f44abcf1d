"""The Portal simulator's rules, driven through ``PortalApp.handle``; every API answer is checked
against ``openapi.yaml`` on the way."""

from __future__ import annotations

import datetime as dt
import email.utils
from typing import Any

import orjson
import pytest

from connector.devtools._portal_app import Fault, PortalApp, RateLimiter, Reply
from connector.devtools._portal_records import check_records
from connector.sinks._portal_openapi import load_openapi
from connector.sinks._portal_wire import canonical, checksum_of
from tests.portal_helpers import CANARY_NAME, ContractChecker, expected_json, family_records

KEY = "k"
CHECKER = ContractChecker(load_openapi())


class Portal:
    """``PortalApp`` with JSON in and out, and the contract check on every API answer."""

    def __init__(self, app: PortalApp | None = None) -> None:
        self.app = app or PortalApp(KEY)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str = KEY,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Reply]:
        raw = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else b"")
        reply = self.app.handle(method, path, {"x-api-key": key, **(headers or {})}, raw)
        data = orjson.loads(reply.body) if reply.body and not reply.drop else None
        if path.startswith("/v1/") and not reply.drop:
            CHECKER.check(method, path.split("?")[0], reply.status, reply.content_type, data)
        return reply.status, data, reply

    def open(self, day: str = "2024-11-05", snapshot_id: str = "cut-1", entity: str = "Family") -> str:
        status, data, _ = self.call(
            "POST", f"/v1/entities/{entity}/sessions", {"snapshot_date": day, "snapshot_id": snapshot_id}
        )
        assert status in (200, 201)
        return str(data["id"])

    def put(
        self, session: str, sequence: int, records: list[dict[str, Any]], key: str | None = None, **kw: Any
    ) -> tuple[int, Any, Reply]:
        body = {"checksum": checksum_of(canonical(r) for r in records), "records": records}
        headers = {"idempotency-key": key or f"{session}-{sequence}"}
        return self.call(
            "PUT", f"/v1/entities/Family/sessions/{session}/batches/{sequence}", body, headers=headers, **kw
        )

    def commit(self, session: str, records: list[dict[str, Any]], batches: int) -> tuple[int, Any, Reply]:
        body = {
            "record_count": len(records),
            "batch_count": batches,
            "checksum": checksum_of(canonical(r) for r in records),
        }
        return self.call("POST", f"/v1/entities/Family/sessions/{session}/commit", body)


def rows(count: int, prefix: str = "fam") -> list[dict[str, Any]]:
    return expected_json("Family", family_records(count, prefix))


def test_a_full_session_is_accepted_whole_and_served_back_in_order() -> None:
    portal = Portal()
    session = portal.open()
    records = rows(1500)
    assert portal.put(session, 2, records[1000:])[0] == 201
    assert portal.put(session, 1, records[:1000])[0] == 201
    status, data, _ = portal.commit(session, records, 2)
    assert (status, data["state"], data["commit"]["record_count"]) == (200, "committed", 1500)
    status, accepted, _ = portal.call("GET", "/_sim/accepted?entity=Family&date=2024-11-05")
    assert accepted["records"] == records
    assert portal.commit(session, records, 2)[0] == 200  # commit is idempotent
    assert portal.open() == session  # the same snapshot id finds the committed session


def test_a_batch_of_1001_records_and_an_empty_batch_are_refused() -> None:
    portal = Portal()
    session = portal.open()
    status, problem, reply = portal.put(session, 1, rows(1001))
    assert (status, problem["type"].rsplit("/", 1)[-1]) == (422, "batch-too-large")
    assert reply.content_type == "application/problem+json"
    assert portal.put(session, 1, [])[1]["type"].endswith("/empty-batch")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/entities/Family/records"),
        ("PUT", "/v1/entities/Family/fam-000001"),
        ("POST", "/v1/entities/Family"),
    ],
)
def test_an_entity_outside_a_session_is_refused(method: str, path: str) -> None:
    status, problem, _ = Portal().call(method, path, rows(1)[0])
    assert (status, problem["type"].rsplit("/", 1)[-1]) == (404, "outside-session")


def test_a_batch_for_a_session_that_does_not_exist_or_another_entity_is_refused() -> None:
    portal = Portal()
    assert portal.put("ses_nope", 1, rows(1))[0] == 404
    session = portal.open(entity="Provider")
    assert portal.put(session, 1, rows(1))[0] == 404


def test_a_wrong_or_missing_key_is_401_everywhere_but_the_contract() -> None:
    portal = Portal()
    for path in ("/v1/entities/Family/sessions?snapshot_date=2024-11-05", "/_sim/stats"):
        status, problem, _ = portal.call("GET", path, key="wrong")
        assert (status, problem["title"]) == (401, "Unauthorized")
    assert portal.app.handle("GET", "/openapi.yaml", {}, b"").status == 200


def test_same_key_and_bytes_replays_without_applying_other_bytes_are_refused() -> None:
    portal = Portal()
    session = portal.open()
    records = rows(10)
    first = portal.put(session, 1, records)
    again = portal.put(session, 1, records)
    assert first[1] == again[1]
    assert ("Idempotent-Replayed", "true") in again[2].headers
    assert portal.app.store.stats()["applied_batches"] == 1
    status, problem, _ = portal.put(session, 1, rows(10, "other"))
    assert (status, problem["type"].rsplit("/", 1)[-1]) == (422, "idempotency-key-reused")
    status, problem, _ = portal.put(session, 1, records, key="another-key")
    assert (status, problem["type"].rsplit("/", 1)[-1]) == (409, "sequence-conflict")


@pytest.mark.parametrize(
    ("batches", "count", "checksum_of_other", "problem"),
    [
        (3, 20, False, "incomplete-session"),
        (1, 20, False, "incomplete-session"),
        (2, 19, False, "count-mismatch"),
        (2, 20, True, "checksum-mismatch"),
    ],
)
def test_a_commit_that_does_not_match_is_refused(
    batches: int, count: int, checksum_of_other: bool, problem: str
) -> None:
    portal = Portal()
    session = portal.open()
    records = rows(20)
    portal.put(session, 1, records[:10])
    portal.put(session, 2, records[10:])
    checksum = checksum_of(canonical(r) for r in (rows(20, "x") if checksum_of_other else records))
    body = {"record_count": count, "batch_count": batches, "checksum": checksum}
    status, data, _ = portal.call("POST", f"/v1/entities/Family/sessions/{session}/commit", body)
    assert (status, data["type"].rsplit("/", 1)[-1]) == (422, problem)
    assert portal.commit(session, records, 2)[0] == 200
    assert portal.put(session, 3, rows(1))[1]["type"].endswith("/session-not-open")
    assert (
        portal.call(
            "POST",
            f"/v1/entities/Family/sessions/{session}/commit",
            {**body, "record_count": 7, "batch_count": 2},
        )[0]
        == 409
    )


def test_a_batch_with_a_bad_checksum_is_refused() -> None:
    portal = Portal()
    session = portal.open()
    body = {"checksum": "0" * 64, "records": rows(2)}
    status, data, _ = portal.call(
        "PUT", f"/v1/entities/Family/sessions/{session}/batches/1", body, headers={"idempotency-key": "a"}
    )
    assert (status, data["type"].rsplit("/", 1)[-1]) == (422, "checksum-mismatch")
    status, data, _ = portal.call("PUT", f"/v1/entities/Family/sessions/{session}/batches/1", body)
    assert (status, data["type"].rsplit("/", 1)[-1]) == (400, "idempotency-key-missing")


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("DeductibleAmount", "98765432109.00", "decimal(12,2)"),
        ("DeductibleAmount", "12.5", "exactly 2 places"),
        ("UpdatedAt", "2024-11-04T17:30:05Z", "UTC timestamp"),
        ("CoverageStartDate", "2024-02-30", "calendar date"),
        ("Status", "Zyxwvutsrq", "symbols"),
        ("FamilyName", None, "null but required"),
        ("FamilyName", 7, "expected a string"),
    ],
)
def test_a_record_that_breaks_the_schema_is_named_by_index_and_field_never_value(
    field: str, value: Any, rule: str
) -> None:
    portal = Portal()
    session = portal.open()
    records = rows(5)
    records[3][field] = value
    status, problem, reply = portal.put(session, 1, records)
    assert (status, problem["type"].rsplit("/", 1)[-1]) == (422, "schema-violation")
    assert problem["errors"][0]["pointer"] == f"/records/3/{field}"
    assert rule in problem["errors"][0]["detail"]
    assert "record 3, field " + field in problem["detail"]
    assert CANARY_NAME.encode() not in reply.body
    assert b"98765432109" not in reply.body
    assert b"fam-0" not in reply.body


def test_record_checks_catch_missing_unknown_and_non_canonical_fields() -> None:
    record = rows(1)[0]
    del record["PostalCode"]
    record["Extra"] = 1
    errors = check_records("Family", [record, "not an object"])
    assert {(e.record, e.field) for e in errors} == {(0, ""), (0, "PostalCode"), (1, "")}


def test_opening_with_another_snapshot_id_supersedes_the_open_session() -> None:
    portal = Portal()
    old = portal.open(snapshot_id="cut-1")
    new = portal.open(snapshot_id="cut-2")
    assert old != new
    assert portal.call("GET", f"/v1/entities/Family/sessions/{old}")[1]["state"] == "superseded"
    _status, listed, _ = portal.call("GET", "/v1/entities/Family/sessions?snapshot_date=2024-11-05")
    assert [s["id"] for s in listed["sessions"]] == [new, old]


def test_the_rate_limit_answers_429_with_retry_after_in_whole_seconds() -> None:
    ticks = iter([0.0, 0.0, 0.0, 0.1])
    limiter = RateLimiter(2, monotonic=lambda: next(ticks))
    assert (limiter.take(), limiter.take()) == (0.0, 0.0)
    assert limiter.take() == pytest.approx(0.4)  # 0.1 s refilled 0.2 of a token
    portal = Portal(PortalApp(KEY, rate_limit=1))
    portal.open()
    status, _, reply = portal.call("GET", "/v1/entities/Family/sessions?snapshot_date=2024-11-05")
    assert status == 429
    assert dict(reply.headers)["Retry-After"] == "1"


def test_faults_fire_on_their_operation_and_sequence_before_or_after_applying() -> None:
    slept: list[float] = []
    app = PortalApp(KEY, sleep=slept.append, wall_clock=lambda: 1_730_797_200.0)
    app.add_faults(
        [
            Fault(on="put_batch", sequence=2, action="drop", after_apply=True),
            Fault(on="put_batch", action="throttle", retry_after=3, retry_after_format="date"),
            Fault(on="commit", action="slow", delay=0.5),
        ]
    )
    portal = Portal(app)
    session = portal.open()
    records = rows(4)
    status, _, reply = portal.put(session, 1, records[:2])
    assert status == 429
    when = email.utils.parsedate_to_datetime(dict(reply.headers)["Retry-After"])
    assert when == dt.datetime.fromtimestamp(1_730_797_203, dt.UTC)
    assert portal.put(session, 1, records[:2])[0] == 201
    assert portal.put(session, 2, records[2:])[2].drop
    assert portal.app.store.stats()["applied_batches"] == 2  # applied before the drop
    assert portal.commit(session, records, 2)[0] == 200
    assert slept == [0.5]


def test_faults_and_the_rate_limit_can_be_set_over_the_control_surface() -> None:
    portal = Portal()
    status, data, _ = portal.call(
        "POST", "/_sim/faults", {"faults": [{"on": "commit", "action": "error", "status": 503}]}
    )
    assert (status, data) == (200, {"pending": 1})
    assert portal.call("POST", "/_sim/faults", {"on": "nowhere"})[0] == 400
    assert portal.call("DELETE", "/_sim/faults")[1] == {"pending": 0}
    assert portal.call("PUT", "/_sim/rate-limit", {"per_second": 3})[1] == {"per_second": 3}
    assert portal.call("PUT", "/_sim/rate-limit", {"per_second": None})[0] == 200
    stats = portal.call("GET", "/_sim/stats")[1]
    assert stats["duplicate_applications"] == 0
