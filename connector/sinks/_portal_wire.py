"""The Portal API's wire rules, shared by the client and the simulator (private).

One place for what both ends must agree on byte for byte, so neither can drift:

- the paths and headers of ``openapi.yaml``;
- a record's **canonical JSON**: the JSON object of its field values (as
  ``connector.sinks._cells.encoders(entity, for_csv=False)`` writes them: strings, booleans and
  null only, since dates, timestamps and decimals are strings) serialised per RFC 8785 (JCS):
  keys sorted, no whitespace, UTF-8, only ``"``, ``\\`` and U+0000-U+001F escaped (``\\b \\t \\n
  \\f \\r`` short, others ``\\u00xx``). orjson with sorted keys writes exactly that for these
  value types (a unit test holds it to ``json.dumps(sort_keys=True, ensure_ascii=False)``);
- the **checksum** of a run of records: lower-case hex SHA-256 over the canonical JSON of each
  record followed by one ``\\n``, in order. A batch's checksum covers its records; a set's
  covers all of its records in sequence order, so it does not depend on the batch size and
  equals the SHA-256 of the set written as canonical JSON Lines (empty set: SHA-256 of nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

__all__ = [
    "API_KEY_HEADER",
    "EMPTY_CHECKSUM",
    "IDEMPOTENCY_HEADER",
    "MAX_BATCH_RECORDS",
    "PATH_TEMPLATES",
    "PROBLEM_CONTENT_TYPE",
    "REPLAYED_HEADER",
    "Checksum",
    "batch_body",
    "batch_path",
    "canonical",
    "checksum_of",
    "commit_path",
    "idempotency_key",
    "session_path",
    "sessions_path",
]

MAX_BATCH_RECORDS = 1000
"""CareCloud's limit on records per batch (equals ``connector.snapshot.routing.API_BATCH_LIMIT``;
not imported from there so the sinks stage does not import the snapshot stage that uses it)."""
API_KEY_HEADER = "X-API-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
"""``true`` on a response replayed for a repeated idempotency key (nothing applied again)."""
PROBLEM_CONTENT_TYPE = "application/problem+json"
EMPTY_CHECKSUM = hashlib.sha256(b"").hexdigest()

PATH_TEMPLATES: tuple[str, ...] = (
    "/v1/entities/{entity}/sessions",
    "/v1/entities/{entity}/sessions/{session_id}",
    "/v1/entities/{entity}/sessions/{session_id}/batches/{sequence}",
    "/v1/entities/{entity}/sessions/{session_id}/commit",
)
"""Every API path, as ``openapi.yaml`` names them (a test holds the two together)."""


def sessions_path(entity: str) -> str:
    return f"/v1/entities/{entity}/sessions"


def session_path(entity: str, session_id: str) -> str:
    return f"/v1/entities/{entity}/sessions/{session_id}"


def batch_path(entity: str, session_id: str, sequence: int) -> str:
    return f"/v1/entities/{entity}/sessions/{session_id}/batches/{sequence}"


def commit_path(entity: str, session_id: str) -> str:
    return f"/v1/entities/{entity}/sessions/{session_id}/commit"


def idempotency_key(session_id: str, sequence: int) -> str:
    """The key of batch ``sequence``: the same on every retry and after a restart (resume).

    It names the batch's place, not its content, so a re-run that would send *different* bytes
    under the same key (records not in a deterministic order) is refused by the Portal (422)
    instead of silently applied.
    """
    return f"{session_id}-{sequence}"


def canonical(record: Mapping[str, Any]) -> bytes:
    """The record's canonical JSON (module docstring); raises ``orjson.JSONEncodeError``
    for a string that is not valid Unicode (a lone surrogate)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


class Checksum:
    """SHA-256 over canonical JSON lines, fed one record at a time."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, line: bytes) -> None:
        """Add one record's canonical JSON (without the newline, which is added here)."""
        self._hash.update(line)
        self._hash.update(b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def checksum_of(lines: Iterable[bytes]) -> str:
    """The checksum of records given as their canonical JSON."""
    checksum = Checksum()
    for line in lines:
        checksum.add(line)
    return checksum.hexdigest()


def batch_body(checksum: str, lines: list[bytes]) -> bytes:
    """``{"checksum": ..., "records": [...]}`` built from the canonical lines without re-encoding."""
    return b'{"checksum":"' + checksum.encode("ascii") + b'","records":[' + b",".join(lines) + b"]}"
