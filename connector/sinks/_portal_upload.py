"""The steps of one Portal delivery (private to ``connector.sinks.portal``).

``PortalClient.deliver`` runs them in order: open (or find) the session, upload the batches the
Portal has not acknowledged yet, commit with the count and checksum; a session found already
committed is checked instead. Each step checks what the Portal acknowledged against what was
sent, so a session reused with other records raises ``PortalMismatchError`` rather than
committing a mixed set. Messages name the entity, the date, the session and batch numbers,
never a record value or an EntityId.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import orjson

from connector.sinks._portal_batches import Batch
from connector.sinks._portal_retry import Caller, Run
from connector.sinks._portal_session import AcknowledgedBatch, PortalSession, parse_session
from connector.sinks._portal_wire import (
    IDEMPOTENCY_HEADER,
    batch_body,
    batch_path,
    commit_path,
    idempotency_key,
    sessions_path,
)
from connector.sinks.exceptions import PortalMismatchError

__all__ = ["ApiDelivery", "already_committed", "commit", "open_session", "upload"]

log = logging.getLogger("connector.sinks.portal")


@dataclass(frozen=True, slots=True)
class ApiDelivery:
    """What the Portal acknowledged for one entity's set: the manifest's record of the delivery."""

    entity: str
    day: dt.date
    session_id: str
    batch_count: int
    record_count: int
    checksum: str
    """The set checksum the Portal acknowledged at commit (it equals the client's)."""
    retries: int
    """Calls retried during this delivery (429, 5xx, timeouts, dropped connections)."""
    resumed_batches: int
    """Batches the Portal had acknowledged before this run, so not sent again."""

    def as_manifest(self) -> dict[str, Any]:
        """The JSON object the snapshot manifest records for an API-routed entity."""
        return {
            "session_id": self.session_id,
            "batch_count": self.batch_count,
            "record_count": self.record_count,
            "checksum": self.checksum,
        }


def open_session(caller: Caller, entity: str, day: dt.date, snapshot_id: str, run: Run) -> PortalSession:
    """Open the session of (entity, day, snapshot_id), or find it: after a restart the Portal
    returns the same session with the batches it already acknowledged."""
    body = orjson.dumps({"snapshot_date": day.isoformat(), "snapshot_id": snapshot_id})
    where = f"{entity} {day.isoformat()}"
    data = caller.call(
        "POST",
        sessions_path(entity),
        what=f"{where} open session",
        run=run,
        body=body,
        headers={"Content-Type": "application/json"},
    )
    session = parse_session(data, where)
    if session.state not in ("open", "committed"):
        raise PortalMismatchError(f"{where}: the Portal returned a session that is {session.state}")
    return session


def upload(
    caller: Caller,
    max_concurrency: int,
    entity: str,
    day: dt.date,
    session: PortalSession,
    batches: Iterator[Batch],
    acked: Mapping[int, AcknowledgedBatch],
    run: Run,
) -> int:
    """Send the batches not yet acknowledged, at most ``max_concurrency`` in flight; the count."""
    where = f"{entity} {day.isoformat()}"
    sent = 0
    in_flight: set[Future[None]] = set()
    with ThreadPoolExecutor(max_concurrency, thread_name_prefix="portal") as pool:
        try:
            for batch in batches:
                sent = batch.sequence
                done = acked.get(batch.sequence)
                if done is not None:
                    if (done.record_count, done.checksum) != (len(batch.lines), batch.checksum):
                        raise PortalMismatchError(
                            f"{where}: batch {batch.sequence} differs from the one the Portal "
                            "acknowledged (records not in a deterministic order, or a snapshot id reused)"
                        )
                    continue
                while len(in_flight) >= max_concurrency:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()
                in_flight.add(pool.submit(_put, caller, entity, day, session.session_id, batch, run))
            for future in in_flight:
                future.result()
        except BaseException:
            run.stopped.set()  # queued retries give up; the first error is the one raised
            raise
    return sent


def _put(caller: Caller, entity: str, day: dt.date, session_id: str, batch: Batch, run: Run) -> None:
    what = f"{entity} {day.isoformat()} batch {batch.sequence}"
    receipt = caller.call(
        "PUT",
        batch_path(entity, session_id, batch.sequence),
        what=what,
        run=run,
        body=batch_body(batch.checksum, batch.lines),
        headers={
            IDEMPOTENCY_HEADER: idempotency_key(session_id, batch.sequence),
            "Content-Type": "application/json",
        },
    )
    if (receipt.get("sequence"), receipt.get("checksum")) != (batch.sequence, batch.checksum):
        raise PortalMismatchError(f"{what}: the Portal acknowledged another sequence or checksum")


def commit(
    caller: Caller,
    entity: str,
    day: dt.date,
    session_id: str,
    count: int,
    batch_count: int,
    checksum: str,
    run: Run,
) -> PortalSession:
    """Commit with the record count, batch count and set checksum (the Portal refuses a mismatch)."""
    where = f"{entity} {day.isoformat()}"
    body = orjson.dumps({"record_count": count, "batch_count": batch_count, "checksum": checksum})
    data = caller.call(
        "POST",
        commit_path(entity, session_id),
        what=f"{where} commit",
        run=run,
        body=body,
        headers={"Content-Type": "application/json"},
    )
    session = parse_session(data, where)
    receipt = session.commit
    acknowledged = None if receipt is None else (receipt.record_count, receipt.checksum)
    if session.state != "committed" or acknowledged != (count, checksum):
        raise PortalMismatchError(f"{where}: the Portal acknowledged another count or checksum at commit")
    return session


def already_committed(
    session: PortalSession, where: str, count: int, batch_count: int, checksum: str, run: Run
) -> ApiDelivery:
    """A session committed before (a crash after the commit, before the manifest), checked
    against the records: the delivery it recorded, nothing uploaded."""
    commit = session.commit
    committed = None if commit is None else (commit.record_count, commit.batch_count, commit.checksum)
    if committed != (count, batch_count, checksum):
        raise PortalMismatchError(f"{where}: session {session.session_id} was committed with other records")
    log.info("portal: %s session was already committed", where, extra={"session_id": session.session_id})
    return ApiDelivery(
        session.entity,
        session.snapshot_date,
        session.session_id,
        batch_count,
        count,
        checksum,
        run.retries,
        batch_count,
    )
