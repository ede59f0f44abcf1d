"""The Portal API route: deliver one entity's complete set as one committed upload session.

``openapi.yaml`` is the contract (``docs/decisions/0009-portal-api.md`` the reasoning): a
session per entity type and snapshot date, batches of at most 1000 records with sequence
numbers and idempotency keys, a commit with the count and a checksum. The Portal shows nothing
of a session before its commit, so CareCloud never sees a single entity outside a complete set.

Records are the state's Python values, encoded by the file formats' JSON encoders
(``connector.sinks._cells``), so both routes write every value the same way. The records must
come in a deterministic order (the same cut, the same records, the same order): that is what
makes a batch's bytes, and so its idempotency key, the same after a restart.

Nothing here logs or raises a record value or an EntityId: messages name the entity, the date,
the session, batch numbers, field names and counts.

``PortalClient`` runs a delivery; its steps (open, upload, commit) are ``_portal_upload``'s, each
call's retries ``_portal_retry``'s.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from connector import __version__
from connector.sinks._portal_batches import (
    check_delivery,
    check_settings,
    encode_batches,
    set_checksum,
)
from connector.sinks._portal_retry import Caller, Run
from connector.sinks._portal_session import AcknowledgedBatch, PortalCommit, PortalSession, parse_session
from connector.sinks._portal_upload import ApiDelivery, already_committed, commit, open_session, upload
from connector.sinks._portal_wire import (
    API_KEY_HEADER,
    MAX_BATCH_RECORDS,
    Checksum,
    session_path,
    sessions_path,
)
from connector.sinks.exceptions import PortalMismatchError

__all__ = [
    "MAX_BATCH_RECORDS",
    "AcknowledgedBatch",
    "ApiDelivery",
    "PortalClient",
    "PortalCommit",
    "PortalSession",
    "set_checksum",
]

log = logging.getLogger(__name__)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PortalClient:
    """A Portal API client: one pooled ``httpx.Client``, batches sent a few at a time.

    ``deadline`` (timezone-aware) caps every retry wait and request timeout; ``transport``,
    ``clock``, ``sleep`` and ``rng`` are for tests (``httpx.MockTransport``, no real waiting).
    Entities may be delivered from several threads at once (each ``deliver`` keeps its own retry
    count); use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int = MAX_BATCH_RECORDS,
        max_concurrency: int = 4,
        max_attempts: int = 8,
        deadline: dt.datetime | None = None,
        timeout: float = 30.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        observe: Callable[[str, int | None], None] | None = None,
    ) -> None:
        """``observe(event, status)``: ``"response"`` per HTTP answer (``None``: no answer) and
        ``"retry"`` per retried call, for the API metrics."""
        check_settings(base_url, api_key, batch_size, max_concurrency, max_attempts, deadline, timeout)
        self._batch_size = batch_size
        self._max_concurrency = max_concurrency
        self._http = httpx.Client(
            base_url=base_url,
            headers={
                API_KEY_HEADER: api_key,
                "Accept": "application/json, application/problem+json",
                "User-Agent": f"carecloud-connector/{__version__}",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_concurrency + 1, max_keepalive_connections=max_concurrency + 1
            ),
            transport=transport,
        )
        self._caller = Caller(
            self._http,
            max_attempts=max_attempts,
            timeout=timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            deadline=deadline,
            clock=clock,
            sleep=sleep,
            rng=rng or random.Random(),
            **({"observe": observe} if observe is not None else {}),
        )

    def deliver(
        self,
        entity: str,
        day: dt.date,
        records: Iterable[Mapping[str, Any]],
        count: int,
        *,
        snapshot_id: str,
    ) -> ApiDelivery:
        """Deliver ``entity``'s complete set of ``count`` records for ``day``; commit it whole.

        1. Open or find the session of (entity, day, snapshot_id): after a restart the Portal
           returns the same session with the batches it already acknowledged.
        2. Encode the records batch by batch; a batch already acknowledged is checked against
           the Portal's checksum and skipped, the others are uploaded, ``max_concurrency`` at a
           time, each with its idempotency key (retries resend the same bytes and key).
        3. Check the records numbered exactly ``count``.
        4. Commit with the record count, batch count and set checksum (the Portal refuses a
           mismatch); return what the Portal acknowledged.

        A session already committed (a crash after the commit, before the manifest) is checked
        against the records and returned without uploading. Raises ``PortalRejectedError`` (this
        entity only), ``PortalAuthError``, ``PortalMismatchError``, ``EncodeError`` (terminal) or
        ``PortalUnavailableError`` / ``PortalBackpressureError`` (transient).
        """
        check_delivery(entity, count, snapshot_id)
        run = Run()
        where = f"{entity} {day.isoformat()}"
        session = open_session(self._caller, entity, day, snapshot_id, run)
        acked = {batch.sequence: batch for batch in session.batches}
        log.info(
            "portal: %s session is %s, %d batch(es) acknowledged",
            where,
            session.state,
            len(acked),
            extra={"session_id": session.session_id},
        )
        total = Checksum()
        batches = encode_batches(entity, records, count, self._batch_size, total)
        if session.state == "committed":
            batch_count = sum(1 for _ in batches)
            return already_committed(session, where, count, batch_count, total.hexdigest(), run)
        batch_count = upload(self._caller, self._max_concurrency, entity, day, session, batches, acked, run)
        if any(sequence > batch_count for sequence in acked):
            raise PortalMismatchError(
                f"{where}: the Portal holds batches beyond the {batch_count} of this set"
            )
        checksum = total.hexdigest()
        committed = commit(self._caller, entity, day, session.session_id, count, batch_count, checksum, run)
        log.info(
            "portal: %s session committed: %d records in %d batches, %d retries",
            where,
            count,
            batch_count,
            run.retries,
            extra={"session_id": committed.session_id},
        )
        return ApiDelivery(
            entity, day, committed.session_id, batch_count, count, checksum, run.retries, len(acked)
        )

    def sessions(self, entity: str, day: dt.date) -> list[PortalSession]:
        """The Portal's sessions of ``entity`` and ``day``, newest first (status lookup)."""
        data = self._caller.call(
            "GET",
            sessions_path(entity),
            what=f"{entity} {day} sessions",
            run=Run(),
            params={"snapshot_date": day.isoformat()},
        )
        found = data.get("sessions")
        if not isinstance(found, list):
            raise PortalMismatchError(f"{entity} {day}: the Portal's session list is not a list")
        return [parse_session(item, f"{entity} {day}") for item in found]

    def session(self, entity: str, session_id: str) -> PortalSession:
        """One session's state and acknowledged batches."""
        data = self._caller.call("GET", session_path(entity, session_id), what=f"{entity} session", run=Run())
        return parse_session(data, f"{entity} session")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PortalClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
