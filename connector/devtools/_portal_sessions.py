"""The Portal simulator's sessions: CareCloud's rules for sessions, batches and commits.

Pure logic behind one lock, no HTTP (``_portal_app`` routes requests here), so the rules read in
one place and a unit test can drive them directly:

- a session per (entity, snapshot date, snapshot id); opening one with another snapshot id
  supersedes the open sessions of that entity and date;
- batches of 1 to 1000 records of the session's entity, each checked against the schema and
  its checksum, applied once per sequence number; the same idempotency key with the same bytes
  gets the first response again (nothing applied), with other bytes a 422;
- a commit needs batches 1..n exactly, the total count and the set checksum; it makes the set
  the accepted one of its entity and date, replacing any earlier one; commit is idempotent.

Problems name records by index and field, never by value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector.devtools._portal_requests import (
    Problem,
    is_checksum,
    is_count,
    json_object,
    known_entity,
    parse_batch,
    parse_date,
    parse_sequence,
    valid_snapshot_id,
)
from connector.sinks._portal_wire import checksum_of

__all__ = ["Problem", "SessionStore"]


@dataclass
class _Batch:
    key: str
    digest: str
    records: list[dict[str, Any]]
    lines: list[bytes]
    checksum: str


@dataclass
class _Session:
    id: str
    entity: str
    day: dt.date
    snapshot_id: str
    created_at: str
    state: str = "open"
    batches: dict[int, _Batch] = field(default_factory=dict)
    replies: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    commit: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entity": self.entity,
            "snapshot_date": self.day.isoformat(),
            "snapshot_id": self.snapshot_id,
            "state": self.state,
            "created_at": self.created_at,
            "record_count": sum(len(batch.records) for batch in self.batches.values()),
            "batches": [
                {"sequence": seq, "record_count": len(batch.records), "checksum": batch.checksum}
                for seq, batch in sorted(self.batches.items())
            ],
            "commit": self.commit,
        }


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SessionStore:
    """Every session, the accepted set per (entity, date), and counts for tests and benchmarks."""

    def __init__(self, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._accepted: dict[tuple[str, dt.date], str] = {}
        self._applications: list[tuple[str, int]] = []
        self._replays = 0

    def open(self, entity: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """``(201, session)`` for a new session, ``(200, session)`` for the one already there."""
        known_entity(entity)
        request = json_object(body)
        day = parse_date(request.get("snapshot_date"), "snapshot_date")
        snapshot_id = request.get("snapshot_id")
        if not valid_snapshot_id(snapshot_id):
            raise Problem(
                400, "bad-request", "Bad request", "snapshot_id must be 1-128 of A-Z a-z 0-9 . _ : -"
            )
        if set(request) - {"snapshot_date", "snapshot_id"}:
            raise Problem(
                400, "bad-request", "Bad request", "the body holds fields other than the documented two"
            )
        with self._lock:
            for session in self._of(entity, day):
                if session.snapshot_id == snapshot_id and session.state in ("open", "committed"):
                    return 200, session.view()
            for session in self._of(entity, day):
                if session.state == "open":
                    session.state = "superseded"
            created = _Session(f"ses_{secrets.token_hex(8)}", entity, day, snapshot_id, self._now())
            self._sessions[created.id] = created
            return 201, created.view()

    def find(self, entity: str, snapshot_date: str | None) -> dict[str, Any]:
        known_entity(entity)
        day = parse_date(snapshot_date, "snapshot_date")
        with self._lock:
            found = self._of(entity, day)[::-1]  # sessions are kept in creation order
            return {"sessions": [session.view() for session in found]}

    def get(self, entity: str, session_id: str) -> dict[str, Any]:
        with self._lock:
            return self._session(entity, session_id).view()

    def put_batch(
        self, entity: str, session_id: str, sequence_text: str, key: str | None, body: bytes
    ) -> tuple[dict[str, Any], bool]:
        """``(receipt, replayed)``: check everything outside the lock, apply inside it."""
        if not key:
            raise Problem(
                400,
                "idempotency-key-missing",
                "Idempotency-Key required",
                "every batch upload carries an Idempotency-Key header",
            )
        sequence = parse_sequence(sequence_text)
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            replay = self._replay(self._session(entity, session_id), key, digest)
        if replay is not None:
            return replay, True
        records, lines, checksum = parse_batch(entity, body)
        with self._lock:
            session = self._session(entity, session_id)
            replay = self._replay(session, key, digest)
            if replay is not None:
                return replay, True
            if session.state != "open":
                raise Problem(409, "session-not-open", "Session not open", f"the session is {session.state}")
            if sequence in session.batches:
                raise Problem(
                    409,
                    "sequence-conflict",
                    "Sequence taken",
                    f"batch {sequence} was acknowledged under another Idempotency-Key",
                )
            session.batches[sequence] = _Batch(key, digest, records, lines, checksum)
            receipt = {
                "session_id": session.id,
                "sequence": sequence,
                "record_count": len(records),
                "checksum": checksum,
            }
            session.replies[key] = (digest, receipt)
            self._applications.append((session.id, sequence))
            return receipt, False

    def commit(self, entity: str, session_id: str, body: bytes) -> dict[str, Any]:
        request = json_object(body)
        values = [request.get(name) for name in ("record_count", "batch_count", "checksum")]
        count, batch_count, checksum = values
        if not (is_count(count) and is_count(batch_count) and is_checksum(checksum)):
            detail = "record_count and batch_count must be integers >= 0, checksum 64 hex digits"
            raise Problem(400, "bad-request", "Bad request", detail)
        with self._lock:
            session = self._session(entity, session_id)
            if session.state == "committed":
                assert session.commit is not None
                same = [
                    session.commit[name] for name in ("record_count", "batch_count", "checksum")
                ] == values
                if same:
                    return session.view()
                raise Problem(409, "already-committed", "Already committed", "committed with other values")
            if session.state != "open":
                raise Problem(409, "session-not-open", "Session not open", f"the session is {session.state}")
            _check_complete(session, count, batch_count, checksum)
            session.state = "committed"
            session.commit = {
                "record_count": count,
                "batch_count": batch_count,
                "checksum": checksum,
                "committed_at": self._now(),
            }
            previous = self._accepted.get((entity, session.day))
            if previous is not None:
                self._sessions[previous].state = "superseded"
            self._accepted[(entity, session.day)] = session.id
            return session.view()

    def accepted(self, entity: str, snapshot_date: str | None) -> dict[str, Any]:
        """The committed set of ``entity`` and date, records in order, for tests and the demo."""
        known_entity(entity)
        day = parse_date(snapshot_date, "date")
        with self._lock:
            session_id = self._accepted.get((entity, day))
            if session_id is None:
                raise Problem(
                    404, "not-found", "Nothing accepted", "no committed set for this entity and date"
                )
            session = self._sessions[session_id]
            assert session.commit is not None
            records = [record for _, batch in sorted(session.batches.items()) for record in batch.records]
            return {
                "entity": entity,
                "snapshot_date": day.isoformat(),
                "session_id": session.id,
                "snapshot_id": session.snapshot_id,
                **session.commit,
                "records": records,
            }

    def stats(self) -> dict[str, Any]:
        with self._lock:
            applied = Counter(self._applications)
            return {
                "sessions": len(self._sessions),
                "applied_batches": len(self._applications),
                "duplicate_applications": sum(n - 1 for n in applied.values()),
                "replays": self._replays,
                "applications": [list(item) for item in self._applications],
            }

    def _replay(self, session: _Session, key: str, digest: str) -> dict[str, Any] | None:
        stored = session.replies.get(key)
        if stored is None:
            return None
        if stored[0] != digest:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was used with different bytes",
            )
        self._replays += 1
        return stored[1]

    def _of(self, entity: str, day: dt.date) -> list[_Session]:
        return [s for s in self._sessions.values() if s.entity == entity and s.day == day]

    def _session(self, entity: str, session_id: str) -> _Session:
        known_entity(entity)
        session = self._sessions.get(session_id)
        if session is None or session.entity != entity:
            raise Problem(404, "not-found", "No such session", f"no {entity} session with this id")
        return session

    def _now(self) -> str:
        return self._clock().astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_complete(session: _Session, count: int, batch_count: int, checksum: str) -> None:
    held = set(session.batches)
    missing = sorted(set(range(1, batch_count + 1)) - held)
    extra = sorted(held - set(range(1, batch_count + 1)))
    if missing or extra:
        parts = [
            f"missing {_numbers(missing)}" if missing else "",
            f"beyond {batch_count}: {_numbers(extra)}" if extra else "",
        ]
        raise Problem(
            422,
            "incomplete-session",
            "Batches do not match",
            "batch sequence numbers " + "; ".join(p for p in parts if p),
        )
    received = sum(len(batch.records) for batch in session.batches.values())
    if received != count:
        raise Problem(
            422,
            "count-mismatch",
            "Count mismatch",
            f"record_count {count} does not match the {received} records received",
        )
    lines = [line for _, batch in sorted(session.batches.items()) for line in batch.lines]
    if checksum_of(lines) != checksum:
        raise Problem(
            422, "checksum-mismatch", "Checksum mismatch", "the set checksum does not match the records"
        )


def _numbers(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:20])
    return shown + (f" and {len(values) - 20} more" if len(values) > 20 else "")
