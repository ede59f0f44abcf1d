"""The watchdog ends only a call that overran its deadline, and says which one."""

from __future__ import annotations

import threading
import time

from connector.ingest.watchdog import Watchdog


class _Expiries:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.fired = threading.Event()

    def __call__(self, what: str, seconds: float) -> None:
        self.calls.append((what, seconds))
        self.fired.set()


def test_a_call_that_overruns_its_deadline_fires_once_with_its_name() -> None:
    expiries = _Expiries()
    watchdog = Watchdog(expiries)
    with watchdog.guard("send_offsets_to_transaction", 0.05):
        assert expiries.fired.wait(5)  # the guarded block is still running: it hangs
    time.sleep(0.1)
    assert expiries.calls == [("send_offsets_to_transaction", 0.05)]


def test_calls_that_return_in_time_never_fire() -> None:
    expiries = _Expiries()
    watchdog = Watchdog(expiries)
    for _ in range(200):
        with watchdog.guard("commit_transaction", 0.2):
            pass
    with watchdog.guard("commit_transaction", 0.3):
        time.sleep(0.05)
    assert not expiries.fired.wait(0.5)


def test_a_later_guard_gets_its_own_deadline() -> None:
    expiries = _Expiries()
    watchdog = Watchdog(expiries)
    with watchdog.guard("init_transactions", 30):
        pass
    with watchdog.guard("abort_transaction", 0.05):
        assert expiries.fired.wait(5)
    assert expiries.calls == [("abort_transaction", 0.05)]
