"""Of a Portal problem only the status and the ``type`` token survive (issue 16): a real Portal
may echo the refused record in ``title``, ``detail`` or ``errors``, and the error's text goes to
logs, the manifest's ``reason`` and the CLI's table."""

from __future__ import annotations

import datetime as dt
import io
import random
import traceback
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import ConnectorError
from connector.ops.logs import configure_logging
from connector.sinks._portal_retry import classify, problem_type_of
from connector.sinks.exceptions import (
    PortalAuthError,
    PortalRejectedError,
    PortalUnavailableError,
)
from connector.sinks.portal import PortalClient
from tests.portal_helpers import CANARY_NAME, FakeTime, family_records

DAY = dt.date(2024, 11, 5)
NOW = dt.datetime(2024, 11, 5, 9, 0, tzinfo=dt.UTC)
CANARY_ID = "FAM-CANARY-7f3a9"
CANARY_AMOUNT = "98765.4321"
TITLE = f"Record {CANARY_ID} breaks the schema"
DETAIL = f"FamilyName {CANARY_NAME!r} is longer than allowed; DeductibleAmount {CANARY_AMOUNT}"
TYPE = "https://portal.carecloud.example/problems/schema-violation"


def echoing_problem(status: int) -> dict[str, Any]:
    """A problem as a careless Portal might write it: the record's values everywhere but ``type``."""
    return {
        "type": TYPE,
        "title": TITLE,
        "status": status,
        "detail": DETAIL,
        "instance": f"/v1/entities/Family/{CANARY_ID}",
        "errors": [{"record": 0, "field": "FamilyName", "value": CANARY_NAME}],
    }


def answering(status: int, body: dict[str, Any]) -> httpx.MockTransport:
    """Every request gets ``status`` with ``body`` as application/problem+json."""
    return httpx.MockTransport(
        lambda _request: httpx.Response(
            status, json=body, headers={"Content-Type": "application/problem+json"}
        )
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (422, PortalRejectedError),
        (409, PortalRejectedError),
        (400, PortalRejectedError),
        (401, PortalAuthError),
        (403, PortalAuthError),
        (500, PortalUnavailableError),
        (503, PortalUnavailableError),  # no Retry-After: a failure, not backpressure
    ],
)
def test_a_problem_echoing_the_record_leaves_only_status_and_type(
    status: int, kind: type[ConnectorError]
) -> None:
    logs = io.StringIO()
    configure_logging("DEBUG", "json", stream=logs)  # the retries' log lines are checked too
    time_ = FakeTime()
    client = PortalClient(
        "http://portal",
        "secret-key",
        transport=answering(status, echoing_problem(status)),
        max_attempts=2,
        clock=time_.clock,
        sleep=time_.sleep,
        rng=random.Random(7),
    )
    with client as portal, pytest.raises(kind) as caught:
        portal.deliver("Family", DAY, family_records(3), 3, snapshot_id="cut-1")
    error = caught.value
    text = "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(error)),
            repr(vars(error)),
            logs.getvalue(),
        ]
    )
    for leaked in (CANARY_ID, CANARY_NAME, CANARY_AMOUNT, "breaks the schema", "longer than allowed"):
        assert leaked not in text
    assert f"({status} " in str(error)
    assert "problem type schema-violation" in str(error)
    if isinstance(error, PortalRejectedError):
        assert (error.status, error.problem_type) == (status, "schema-violation")
        assert not hasattr(error, "title")
        assert not hasattr(error, "detail")


def test_a_refused_key_names_the_setting_not_the_portals_words() -> None:
    body = {"type": "unauthorized", "title": "Nope", "detail": f"key of {CANARY_ID} expired", "status": 401}
    with pytest.raises(PortalAuthError) as caught:
        classify(httpx.Response(401, json=body), "Family 2024-11-05 sessions", NOW)
    message = str(caught.value)
    assert message.startswith("Family 2024-11-05 sessions: the Portal refused the API key (401 Unauthorized")
    assert "CARECLOUD_PORTAL_API_KEY" in message
    assert "X-API-Key" in message
    assert "Nope" not in message
    assert CANARY_ID not in message


@pytest.mark.parametrize(
    ("problem_type", "kept"),
    [
        ("schema-violation", "schema-violation"),
        (TYPE, "schema-violation"),
        ("https://portal.carecloud.example/problems/count-mismatch", "count-mismatch"),
        ("about:blank", "about:blank"),
        (None, "about:blank"),  # no type: RFC 9457's default
        (f"https://portal.carecloud.example/problems/{CANARY_ID}", "unknown"),  # not lower case
        (f"https://portal.carecloud.example/problems/schema-violation?record={CANARY_ID}", "unknown"),
        ("https://portal.carecloud.example/problems/schema-violation#FamilyName", "unknown"),
        ("https://portal.carecloud.example/problems/", "unknown"),
        (f"Record {CANARY_ID} breaks the schema", "unknown"),
        ("urn:carecloud:schema-violation", "unknown"),
        ("x" * 65, "unknown"),
        (42, "unknown"),
        (["schema-violation"], "unknown"),
    ],
)
def test_only_a_token_or_a_uri_ending_in_one_is_kept_as_the_type(problem_type: object, kept: str) -> None:
    body = {"title": TITLE} if problem_type is None else {"type": problem_type, "title": TITLE}
    assert problem_type_of(httpx.Response(422, json=body)) == kept


def test_a_body_that_is_no_problem_has_the_default_type() -> None:
    html = httpx.Response(502, text=f"<html>{CANARY_NAME}</html>")
    assert problem_type_of(html) == "about:blank"
    with pytest.raises(PortalUnavailableError) as caught:
        classify(html, "Family 2024-11-05 commit", NOW)
    assert str(caught.value) == (
        "Family 2024-11-05 commit: the Portal failed (502 Bad Gateway, problem type about:blank)"
    )


@given(
    st.one_of(
        st.text(max_size=120), st.from_regex(r"https://[a-z.]{1,20}/p/[A-Za-z0-9-]{0,70}", fullmatch=True)
    )
)
def test_the_kept_type_is_a_short_token_taken_from_the_input(value: str) -> None:
    kept = problem_type_of(httpx.Response(422, json={"type": value}))
    if kept not in ("about:blank", "unknown"):
        assert kept in value
        assert len(kept) <= 64
        assert set(kept) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
