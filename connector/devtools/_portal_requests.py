"""Reading the Portal simulator's requests: bodies, parameters and batches (private).

Every refusal is a ``Problem`` (RFC 9457) whose detail names the rule, the record index and the
field, never a value from the request.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, TypeGuard

import orjson

from connector.devtools._portal_records import check_records
from connector.model import ENTITY_NAMES
from connector.sinks._portal_wire import MAX_BATCH_RECORDS, canonical, checksum_of

__all__ = [
    "PROBLEM_BASE",
    "Problem",
    "is_checksum",
    "is_count",
    "json_object",
    "known_entity",
    "parse_batch",
    "parse_date",
    "parse_sequence",
    "valid_snapshot_id",
]

PROBLEM_BASE = "https://portal.carecloud.example/problems/"
_SNAPSHOT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_CHECKSUM = re.compile(r"[0-9a-f]{64}")
_MAX_SEQUENCE = 100_000
_DIGITS = re.compile(r"[0-9]{1,6}")


class Problem(Exception):  # noqa: N818 - RFC 9457's name for it
    """An RFC 9457 problem the simulator answers with; ``name`` completes the ``type`` URI."""

    def __init__(
        self, status: int, name: str, title: str, detail: str = "", errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{status} {name}")
        self.status, self.name, self.title, self.detail, self.errors = status, name, title, detail, errors

    def body(self, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = {"type": PROBLEM_BASE + self.name, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return body


def parse_batch(entity: str, body: bytes) -> tuple[list[dict[str, Any]], list[bytes], str]:
    request = json_object(body)
    records, checksum = request.get("records"), request.get("checksum")
    if (
        not isinstance(records, list)
        or not isinstance(checksum, str)
        or set(request) != {"records", "checksum"}
    ):
        raise Problem(400, "bad-request", "Bad request", "the body must be {checksum, records}")
    if len(records) > MAX_BATCH_RECORDS:
        raise Problem(
            422,
            "batch-too-large",
            "Batch too large",
            f"{len(records)} records; a batch holds at most {MAX_BATCH_RECORDS}",
        )
    if not records:
        raise Problem(422, "empty-batch", "Empty batch", "a batch holds at least one record")
    errors = check_records(entity, records)
    if errors:
        first = errors[0]
        raise Problem(
            422,
            "schema-violation",
            "Record breaks the schema",
            f"record {first.record}, field {first.field or '(record)'}: {first.detail}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            [error.as_json() for error in errors],
        )
    try:
        lines = [canonical(record) for record in records]
    except orjson.JSONEncodeError:  # a lone surrogate escaped in the JSON
        raise Problem(
            422, "schema-violation", "Record breaks the schema", "a string is not valid Unicode"
        ) from None
    if checksum_of(lines) != checksum:
        raise Problem(
            422, "checksum-mismatch", "Checksum mismatch", "the checksum does not match the records"
        )
    return records, lines, checksum


def json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Problem(400, "bad-request", "Bad request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Problem(400, "bad-request", "Bad request", "the body is not a JSON object")
    return data


def known_entity(entity: str) -> None:
    if entity not in ENTITY_NAMES:
        raise Problem(404, "not-found", "No such entity type", f"entity types: {', '.join(ENTITY_NAMES)}")


def parse_date(value: Any, name: str) -> dt.date:
    try:
        if isinstance(value, str) and len(value) == 10:
            return dt.date.fromisoformat(value)
    except ValueError:
        pass
    raise Problem(400, "bad-request", "Bad request", f"{name} must be a date YYYY-MM-DD")


def parse_sequence(text: str) -> int:
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= _MAX_SEQUENCE:
        raise Problem(
            400, "bad-request", "Bad request", f"sequence must be an integer from 1 to {_MAX_SEQUENCE}"
        )
    return int(text)


def is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_checksum(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _CHECKSUM.fullmatch(value) is not None


def valid_snapshot_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _SNAPSHOT_ID.fullmatch(value) is not None
