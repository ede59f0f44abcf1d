"""A deadline for the blocking Kafka calls whose own timeout cannot be trusted.

librdkafka's ``send_offsets_to_transaction`` can block far past its timeout: its coordinator
request never checks its deadline (confluentinc/librdkafka#5456), and after the group
coordinator's broker was decommissioned — every broker down, then the client re-bootstraps —
the request waits for a state change of a broker thread that no longer exists
(confluentinc/librdkafka#5511). Measured here: a broker SIGKILLed and restarted while the
call was in flight left it blocked for as long as the test waited (minutes), the main loop
never came back to read SIGTERM, and only SIGKILL ended the process.

A call that overran its own timeout cannot be cancelled and the client's state is unknown,
so the only safe move is the one a crash makes: end the process at once, non-zero, and let
the orchestrator start it again. That is exactly the SIGKILL the ingest is built to survive
(the restarted producer fences the open transaction at ``init_transactions``; the local store
catches up from the state topic; consumption resumes at the committed offsets).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["WATCHDOG_EXIT_CODE", "Watchdog"]

log = logging.getLogger(__name__)

WATCHDOG_EXIT_CODE = 70
"""The process's exit status when a guarded call overran (EX_SOFTWARE)."""


def _exit_now(what: str, seconds: float) -> None:
    log.critical(
        "a Kafka call overran its deadline; exiting so the orchestrator restarts the process",
        extra={"operation": what, "duration_s": seconds},  # names in connector.ops.logs.ALLOWED_FIELDS
    )
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # best effort before the hard exit
            handler.flush()
    sys.stderr.flush()
    os._exit(WATCHDOG_EXIT_CODE)


class Watchdog:
    """One daemon thread watching one guarded call at a time (the ingest loop is sequential).

    ``guard(what, seconds)`` arms the deadline around a block; if the block is still running
    when it passes, ``on_expiry(what, seconds)`` runs on the watchdog thread — by default a
    logged, immediate ``os._exit``. Arming costs a lock and a notify: nothing next to a commit.
    """

    def __init__(self, on_expiry: Callable[[str, float], None] = _exit_now) -> None:
        self._on_expiry = on_expiry
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._what = ""
        self._seconds = 0.0
        self._thread = threading.Thread(target=self._watch, name="kafka-watchdog", daemon=True)
        self._thread.start()

    @contextmanager
    def guard(self, what: str, seconds: float) -> Iterator[None]:
        """Run the block under a deadline of ``seconds``; nesting is not supported."""
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._what, self._seconds = what, seconds
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._deadline = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._deadline = None
                self._on_expiry(self._what, self._seconds)
