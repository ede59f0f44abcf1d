"""The date's lease over a real directory storage: one holder, expiry, take-over, fencing."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from connector.sinks.local import LocalStorage
from connector.snapshot.exceptions import LeaseLostError
from connector.snapshot.lease import Lease, LeaseRecord, lease_free, renewal_overdue

T0 = dt.datetime(2026, 11, 25, 8, 30, tzinfo=dt.UTC)
KEY = "cc/2026-11-25/_lease.json"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def lease(storage: LocalStorage, owner: str, clock: Clock, minutes: int = 10) -> Lease:
    return Lease(storage, KEY, owner, dt.timedelta(minutes=minutes), clock)


def test_free_means_absent_or_expired() -> None:
    record = LeaseRecord("pod-a", "t", T0)
    assert lease_free(None, T0)
    assert lease_free(record, T0)  # expiry is exclusive: at it, the lease is free
    assert not lease_free(record, T0 - dt.timedelta(microseconds=1))


def test_only_one_of_two_pods_holds_it_until_it_expires(tmp_path: Path) -> None:
    storage, clock = LocalStorage(tmp_path), Clock()
    a, b = lease(storage, "pod-a", clock), lease(storage, "pod-b", clock)
    assert a.acquire()
    assert not b.acquire()
    assert b.holder is not None
    assert b.holder.owner == "pod-a"
    clock.now += dt.timedelta(minutes=10)
    assert b.acquire()  # a stopped renewing: b takes over
    with pytest.raises(LeaseLostError):
        a.renew()  # and a, waking up, learns it lost the lease
    with pytest.raises(LeaseLostError):
        a.check()


def test_renewal_pushes_the_expiry_out(tmp_path: Path) -> None:
    storage, clock = LocalStorage(tmp_path), Clock()
    a, b = lease(storage, "pod-a", clock), lease(storage, "pod-b", clock)
    assert a.acquire()
    clock.now += dt.timedelta(minutes=9)
    a.renew()
    clock.now += dt.timedelta(minutes=9)
    assert not b.acquire()


def test_release_frees_it_at_once_but_never_frees_a_newer_owner(tmp_path: Path) -> None:
    storage, clock = LocalStorage(tmp_path), Clock()
    a, b, c = (lease(storage, name, clock) for name in ("pod-a", "pod-b", "pod-c"))
    assert a.acquire()
    a.release()
    assert b.acquire()
    clock.now += dt.timedelta(minutes=11)
    assert c.acquire()
    b.release()  # b's lease was taken over; its release must not free c's
    assert not a.acquire()


def test_racing_pods_for_a_free_lease_one_wins(tmp_path: Path) -> None:
    storage, clock = LocalStorage(tmp_path), Clock()
    contenders = [lease(storage, f"pod-{i}", clock) for i in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(contenders))

    def take(one: Lease) -> None:
        barrier.wait()
        results.append(one.acquire())

    threads = [threading.Thread(target=take, args=(one,)) for one in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_renewal_is_overdue_from_two_thirds_of_the_ttl() -> None:
    ttl = dt.timedelta(minutes=9)
    expires = T0 + ttl
    assert not renewal_overdue(expires, T0 + dt.timedelta(minutes=5, seconds=59), ttl)
    assert renewal_overdue(expires, T0 + dt.timedelta(minutes=6), ttl)
    assert renewal_overdue(expires, T0 + dt.timedelta(hours=1), ttl)


def test_a_run_frozen_past_its_expiry_learns_at_its_next_check_that_it_lost_the_lease(tmp_path: Path) -> None:
    storage, clock = LocalStorage(tmp_path), Clock()
    a, b = lease(storage, "pod-a", clock), lease(storage, "pod-b", clock)
    assert a.acquire()
    clock.now += dt.timedelta(minutes=11)  # a frozen: its renewer never ran
    assert b.acquire()
    with pytest.raises(LeaseLostError, match="taken over"):
        a.check()  # no renewal tick needed: the check itself confirms with storage
    b.check()
    b.renew()  # b still holds the lease: a's attempt changed nothing


def test_a_check_writes_only_when_the_renewal_is_overdue(tmp_path: Path) -> None:
    storage, clock = LocalStorage(tmp_path), Clock()
    a, b = lease(storage, "pod-a", clock), lease(storage, "pod-b", clock)
    assert a.acquire()
    before = storage.stat(KEY)
    clock.now += dt.timedelta(minutes=6)
    a.check()
    assert storage.stat(KEY) == before  # on schedule: no storage round trip per check
    clock.now += dt.timedelta(minutes=1)  # 7 of 10 minutes: the renewer is late
    a.check()
    assert storage.stat(KEY) != before
    clock.now += dt.timedelta(minutes=9)  # 16 minutes after the acquire, 9 after the check
    assert not b.acquire()  # the check's renewal kept it
