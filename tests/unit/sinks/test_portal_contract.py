"""``openapi.yaml``: valid OpenAPI 3.1, generated parts current, entity schemas equal to the Avro
schemas, and the wire rules (paths, canonical JSON, checksum) the client and simulator share."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import ValidationError
from openapi_spec_validator import validate as validate_spec

from connector.devtools._portal_app import PortalApp
from connector.model import ENTITY_NAMES, field_names, fingerprint, raw_schema
from connector.model.samples import sample
from connector.sinks import _portal_openapi, _portal_wire
from connector.sinks._portal_openapi import generate, load_openapi, openapi_path, record_schema
from connector.sinks._portal_wire import EMPTY_CHECKSUM, PATH_TEMPLATES, canonical, checksum_of
from connector.sinks.portal import PortalClient
from connector.snapshot.routing import API_BATCH_LIMIT
from tests.portal_helpers import ContractChecker, FakeTime, expected_json, family_records, sim_transport

REPO = Path(__file__).resolve().parents[3]
DOCUMENT = load_openapi()
CHECKER = ContractChecker(DOCUMENT)


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate_spec(copy.deepcopy(DOCUMENT))


def test_the_committed_file_is_the_generator_output() -> None:
    """Run ``python -m connector.sinks._portal_openapi`` after editing openapi.yaml or an .avsc."""
    text = (REPO / "openapi.yaml").read_text(encoding="utf-8")
    assert generate(text) == text
    assert _portal_openapi.main(["--check", str(REPO / "openapi.yaml")]) == 0


def test_the_file_in_use_is_the_checkout_one_or_the_packaged_copy() -> None:
    assert openapi_path().name == "openapi.yaml"
    packaged = 'openapi.yaml" = "connector/sinks/openapi.yaml"'
    assert packaged in (REPO / "pyproject.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("entity", ENTITY_NAMES)
def test_entity_schemas_agree_with_avro(entity: str) -> None:
    documented = DOCUMENT["components"]["schemas"][entity]
    assert documented == record_schema(entity)
    assert list(documented["properties"]) == list(field_names(entity))
    assert documented["required"] == list(field_names(entity))
    assert documented["x-avro-fingerprint"] == fingerprint(entity)
    for field in raw_schema(entity)["fields"]:
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        types = documented["properties"][field["name"]]["type"]
        assert ("null" in types) == nullable if isinstance(types, list) else not nullable
    CHECKER.validate(entity, expected_json(entity, [sample(entity)])[0])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("DeductibleAmount", "12.5"),
        ("DeductibleAmount", "98765432109.00"),
        ("DeductibleAmount", 12.5),
        ("UpdatedAt", "2024-11-04T17:30:05Z"),
        ("UpdatedAt", "2024-11-04T17:30:05.123+00:00"),
        ("CoverageStartDate", "2024-1-1"),
        ("Status", "NOT_A_STATUS"),
        ("FamilyName", None),
    ],
)
def test_entity_schemas_refuse_values_the_encoders_never_write(field: str, value: Any) -> None:
    record = expected_json("Family", [sample("Family")])[0]
    record[field] = value
    with pytest.raises(ValidationError):
        CHECKER.validate("Family", record)


def test_a_record_with_a_missing_or_unknown_field_is_refused() -> None:
    record = expected_json("Family", [sample("Family")])[0]
    with pytest.raises(ValidationError):
        CHECKER.validate("Family", {**record, "Extra": "x"})
    del record["PostalCode"]
    with pytest.raises(ValidationError):
        CHECKER.validate("Family", record)


def test_every_wire_path_is_documented_and_every_documented_path_is_on_the_wire() -> None:
    assert set(PATH_TEMPLATES) == set(DOCUMENT["paths"])
    assert _portal_wire.MAX_BATCH_RECORDS == API_BATCH_LIMIT
    batch = DOCUMENT["components"]["schemas"]["BatchUpload"]["properties"]["records"]
    assert batch["maxItems"] == API_BATCH_LIMIT


def test_every_call_the_client_makes_is_documented() -> None:
    seen: list[httpx.Request] = []
    app = PortalApp("key")
    time = FakeTime()
    with PortalClient(
        "http://portal", "key", batch_size=400, transport=sim_transport(app, seen), clock=time.clock
    ) as client:
        day = dt.date(2024, 11, 5)
        client.deliver("Family", day, family_records(900), 900, snapshot_id="cut-1")
        client.deliver("Family", day, family_records(900), 900, snapshot_id="cut-1")  # already committed
        [session] = client.sessions("Family", day)
        client.session("Family", session.session_id)
    calls = {(request.method, CHECKER.template(request.url.path)) for request in seen}
    assert None not in {template for _, template in calls}
    for method, template in calls:
        assert template is not None
        assert method.lower() in DOCUMENT["paths"][template]
    assert {method for method, _ in calls} == {"POST", "PUT", "GET"}


def test_canonical_json_is_rfc_8785_for_strings_booleans_and_null() -> None:
    record = {"b": '\x00\x1f"\\\x7f\u2028é😀/\n\t', "a": None, "c": True, "B": "x"}
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical(record) == expected
    assert canonical(record).startswith(b'{"B":"x","a":null')


@given(st.lists(st.dictionaries(st.sampled_from("abcdef"), st.one_of(st.none(), st.booleans(), st.text()))))
def test_the_set_checksum_is_sha256_of_canonical_json_lines(records: list[dict[str, Any]]) -> None:
    lines = [canonical(record) for record in records]
    jsonl = b"".join(
        json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
        + b"\n"
        for r in records
    )
    assert checksum_of(lines) == hashlib.sha256(jsonl).hexdigest()


def test_the_checksum_of_an_empty_set_is_the_sha256_of_nothing() -> None:
    assert checksum_of([]) == EMPTY_CHECKSUM == hashlib.sha256(b"").hexdigest()


def test_decimals_are_written_exactly_as_the_pattern_says() -> None:
    pattern = record_schema("Family")["properties"]["DeductibleAmount"]["pattern"]
    assert pattern == "^-?(0|[1-9][0-9]{0,9})[.][0-9]{2}$"
    assert (
        expected_json("Family", [{**sample("Family"), "DeductibleAmount": Decimal("-0.50")}])[0][
            "DeductibleAmount"
        ]
        == "-0.50"
    )
