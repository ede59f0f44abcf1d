"""One run per snapshot date across every pod: a lease object taken with conditional writes.

The lease is ``<prefix>/<date>/_lease.json`` in the snapshot's own storage, so it needs nothing
the run does not already have (no Kafka lock, no database). It holds the owner, a random token
and an expiry:

- **acquire**: create the object only if absent (``if_none_match``); if it exists and has
  expired, replace exactly the version that was read (``if_match`` its etag). Two pods racing
  for the same free or expired lease: the storage lets one conditional write through, the other
  gets ``PreconditionFailedError`` and does not run.
- **renew**: replace our own version (``if_match``) with a later expiry; failing means someone
  took over after our lease expired (we were paused or partitioned), so the run stops before it
  publishes anything more (``LeaseLostError``).
- **release**: replace our version with one that has already expired, so the next run need not
  wait out the expiry; never a blind delete, which could remove a newer owner's lease.

Whether a lease is free is a pure function of the record and ``now`` (``lease_free``), tested
without storage. Expiry protects against a pod that died holding the lease; renewing at a third
of the TTL tolerates two missed renewals. Correctness of the delivered bytes does not depend on
the lease (every run of a date uses the date's pinned cut, so two writers would write the same
bytes, and the manifest is write-once); the lease keeps the work from being done twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from connector.sinks.exceptions import PreconditionFailedError
from connector.sinks.storage import Storage
from connector.snapshot.exceptions import LeaseLostError

__all__ = ["Lease", "LeaseRecord", "lease_free", "renewal_overdue"]

_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The lease object's content."""

    owner: str
    token: str
    expires_at: dt.datetime

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {"owner": self.owner, "token": self.token, "expires_at": self.expires_at.isoformat()}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        raw = orjson.loads(data)
        return cls(raw["owner"], raw["token"], dt.datetime.fromisoformat(raw["expires_at"]))


def lease_free(record: LeaseRecord | None, now: dt.datetime) -> bool:
    """A missing lease or one whose expiry is at or before ``now`` may be taken."""
    return record is None or record.expires_at <= now


def renewal_overdue(expires_at: dt.datetime, now: dt.datetime, ttl: dt.timedelta) -> bool:
    """Whether our last renewal is older than the renewer's schedule allows: past two thirds
    of the TTL, the process may have been frozen (SIGSTOP, a VM pause, a long GC) through the
    expiry and another owner may hold the lease, so it must be confirmed with storage."""
    return now >= expires_at - ttl / 3


class Lease:
    """The lease on one key, held by ``owner`` (a pod name) for ``ttl`` at a time."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        owner: str,
        ttl: dt.timedelta,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._storage, self._key, self._owner, self._ttl, self._clock = storage, key, owner, ttl, clock
        self._etag: str | None = None
        self._token = secrets.token_hex(16)
        self._lost: str | None = None
        self._expires_at: dt.datetime | None = None
        self._write_lock = threading.Lock()  # the renewer and ``check`` renew the same version
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.holder: LeaseRecord | None = None
        """Who held the lease when ``acquire`` last failed (for the log line)."""

    def acquire(self) -> bool:
        """Take the lease if it is free; False when another live owner holds it."""
        current = self._storage.get(self._key)
        record = None if current is None else LeaseRecord.from_bytes(current[0])
        if not lease_free(record, self._clock()):
            self.holder = record
            return False
        try:
            if current is None:
                self._write(if_none_match=True)
            else:
                self._write(if_match=current[1].etag)
        except PreconditionFailedError:
            self.holder = None
            return False
        return True

    def renew(self) -> None:
        """Push the expiry out by ``ttl``; ``LeaseLostError`` if another owner replaced our version."""
        with self._write_lock:
            if self._lost is not None:
                raise LeaseLostError(self._lost)
            try:
                self._write(if_match=self._etag)
            except PreconditionFailedError:
                self._lost = f"the lease {self._key} was taken over after it expired"
                raise LeaseLostError(self._lost) from None

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease is no longer ours: found taken over by the
        background renewal, or, when the last renewal is overdue, by renewing it now. A run that
        wakes from a freeze past the expiry learns it before its next step, not a renewal
        interval later (a stale run would otherwise go on delivering while a newer one runs)."""
        expires = self._expires_at
        if self._lost is None and expires is not None and renewal_overdue(expires, self._clock(), self._ttl):
            self.renew()
        if self._lost is not None:
            raise LeaseLostError(self._lost)

    def keep_renewed(self) -> None:
        """Renew on a daemon thread every third of the TTL until ``release``."""
        interval = self._ttl.total_seconds() / 3

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except LeaseLostError:
                    return
                except Exception:  # a storage hiccup: the next tick retries before expiry
                    continue

        self._renewer = threading.Thread(target=loop, name="lease-renewer", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        """Stop renewing and mark the lease expired, if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._etag is None or self._lost is not None:
            return
        record = LeaseRecord(self._owner, self._token, self._clock())
        with contextlib.suppress(PreconditionFailedError):  # taken over already: nothing of ours to release
            self._storage.put_bytes(
                self._key, record.to_bytes(), content_type=_CONTENT_TYPE, if_match=self._etag
            )
        self._etag = None

    def _write(self, *, if_none_match: bool = False, if_match: str | None = None) -> None:
        record = LeaseRecord(self._owner, self._token, self._clock() + self._ttl)
        stored = self._storage.put_bytes(
            self._key,
            record.to_bytes(),
            content_type=_CONTENT_TYPE,
            if_none_match=if_none_match,
            if_match=if_match,
        )
        self._etag, self._expires_at = stored.etag, record.expires_at
