"""The Portal simulator as tests run it: the ``simulate-portal`` command as a subprocess, and its
control surface (faults, rate limit, stats, what it accepted). The ``sim`` fixture
(``tests/integration/conftest.py``) starts one per test module; each test uses its own date.
"""

from __future__ import annotations

import datetime as dt
import itertools
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = ["KEY", "Simulator", "next_day", "run_simulator"]

KEY = "integration-key"
REPO = Path(__file__).resolve().parents[2]
_DAYS = itertools.count()


def next_day() -> dt.date:
    return dt.date(2030, 1, 1) + dt.timedelta(days=next(_DAYS))


class Simulator:
    """The simulator subprocess: its URL and its control surface."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=10)

    def faults(self, *faults: dict[str, Any]) -> None:
        self.http.post("/_sim/faults", json={"faults": list(faults)}).raise_for_status()

    def clear(self) -> None:
        self.http.delete("/_sim/faults").raise_for_status()
        self.http.put("/_sim/rate-limit", json={"per_second": None}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get("/_sim/stats").raise_for_status().json()
        return data

    def accepted(self, entity: str, day: dt.date) -> dict[str, Any]:
        data: dict[str, Any] = (
            self.http.get("/_sim/accepted", params={"entity": entity, "date": day.isoformat()})
            .raise_for_status()
            .json()
        )
        return data

    def applications(self, session_id: str) -> list[int]:
        return [seq for sid, seq in self.stats()["applications"] if sid == session_id]

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 30.0) -> None:
        """Return once no API request is being answered and nothing was applied for ``quiet`` seconds.

        A killed client's last request may still sit in a worker (a ``slow`` fault) or in the
        listen backlog; on a loaded 2-core runner it can land well after the kill, so a test that
        judges what the dead client left must wait for the simulator to go quiet, not a fixed time.
        """
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            stats = self.stats()
            now = (stats["in_flight"], stats["applied_batches"])
            if now != last or now[0]:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)
        raise AssertionError(f"the simulator did not go quiet within {timeout} s: {last}")


def run_simulator() -> Iterator[Simulator]:
    """Start the command, yield its control surface, stop it (SIGTERM, then kill)."""
    command = [sys.executable, "-m", "connector.cli", "simulate-portal", "--port", "0", "--api-key", KEY]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def read() -> None:  # a thread, so a simulator that never starts cannot hang the test
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        first = lines.get(timeout=30)
    except queue.Empty:
        process.kill()
        pytest.fail("the simulator did not start")
    assert first.startswith("simulate-portal: listening on "), first
    simulator = Simulator(first.split()[-1])
    try:
        yield simulator
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
