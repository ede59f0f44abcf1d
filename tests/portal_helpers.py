"""Shared by the Portal API tests: records with canaries, the expected JSON, a fake clock, an
``httpx.MockTransport`` over the simulator's app, and a contract checker for ``openapi.yaml``.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connector.devtools._portal_app import PortalApp
from connector.model.samples import sample
from connector.sinks._cells import encoders

__all__ = [
    "CANARY_AMOUNT",
    "CANARY_NAME",
    "ContractChecker",
    "FakeTime",
    "expected_json",
    "family_records",
    "sim_transport",
]

CANARY_NAME = "Zyxwvutsrq"
"""A family name seeded into every generated record: it must never appear in an error or log."""
CANARY_AMOUNT = Decimal("98765432109.00")
"""A deductible with 11 digits before the point: the encoder writes it, the schema refuses it."""


def family_records(count: int, prefix: str = "fam") -> list[dict[str, Any]]:
    """``count`` valid Family records in a fixed order, each carrying ``CANARY_NAME``."""
    records = []
    for index in range(count):
        record = sample("Family")
        record["EntityId"] = f"{prefix}-{index:06d}"
        record["FamilyName"] = f"{CANARY_NAME}{index}"
        record["DeductibleAmount"] = Decimal(index % 5000).scaleb(-2) + Decimal("100.00")
        record["UpdatedAt"] = record["UpdatedAt"] + dt.timedelta(milliseconds=index)
        records.append(record)
    return records


def expected_json(entity: str, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The JSON values the Portal should hold for ``records`` (computed with the file encoders)."""
    field_encoders = encoders(entity, for_csv=False)
    return [{name: encode(record.get(name)) for name, encode in field_encoders} for record in records]


class FakeTime:
    """A clock that only moves when the client sleeps: ``sleeps`` records every wait."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2024, 11, 5, 9, 0, tzinfo=dt.UTC)
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> dt.datetime:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += dt.timedelta(seconds=seconds)


def sim_transport(app: PortalApp, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    """The simulator's app behind ``httpx.MockTransport``: a dropped connection is raised as httpx would."""

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        reply = app.handle(request.method, request.url.raw_path.decode(), headers, request.content)
        if reply.drop:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(
            reply.status, content=reply.body, headers=[("Content-Type", reply.content_type), *reply.headers]
        )

    return httpx.MockTransport(handle)


class ContractChecker:
    """Checks a response against ``openapi.yaml``: path, method, documented status, body schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource("urn:openapi", resource)
        self._paths = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"), template)
            for template in document["paths"]
        ]

    def template(self, path: str) -> str | None:
        """The documented path template that ``path`` (no query) matches, if any."""
        for pattern, template in self._paths:
            if pattern.match(path):
                return template
        return None

    def check(self, method: str, path: str, status: int, content_type: str, body: Any) -> None:
        """Raise ``AssertionError`` unless the response is one the contract documents."""
        template = self.template(path)
        if template is None:  # outside the API (404 outside-session): still a problem detail
            assert content_type.startswith("application/problem+json"), (path, status)
            self.validate("Problem", body)
            return
        operation = self.document["paths"][template].get(method.lower())
        if operation is None:  # a method the path does not have (405)
            assert status == 405
            assert content_type.startswith("application/problem+json")
            self.validate("Problem", body)
            return
        responses = operation["responses"]
        response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
        assert response is not None, f"{method} {template}: {status} is not documented"
        if "$ref" in response:
            response = self._resolve(response["$ref"])
        media = content_type.split(";")[0].strip()
        assert media in response["content"], f"{method} {template} {status}: {media} not documented"
        schema = response["content"][media]["schema"]
        self.validate(schema["$ref"].rsplit("/", 1)[-1], body)

    def validate(self, schema_name: str, body: Any) -> None:
        validator = Draft202012Validator(
            {"$ref": f"urn:openapi#/components/schemas/{schema_name}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        validator.validate(body)

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)
        return node
