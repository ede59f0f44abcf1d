"""The health server over real HTTP on loopback: /healthz, /readyz in both states, /metrics."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from connector.ops.health import HealthServer, Heartbeat
from connector.ops.metrics import Metrics


class FakeClock:
    """A monotonic clock the test moves by hand, so a stall needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Readiness:
    """The readiness callback a service would pass: None when ready, else why not."""

    def __init__(self) -> None:
        self.reason: str | None = "restoring partition 3"
        self.broken = False

    def __call__(self) -> str | None:
        if self.broken:
            raise RuntimeError("boom")
        return self.reason


def _get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture
def parts() -> tuple[Metrics, Readiness, FakeClock]:
    return Metrics(), Readiness(), FakeClock()


@pytest.fixture
def server(parts: tuple[Metrics, Readiness, FakeClock]) -> Iterator[HealthServer]:
    metrics, readiness, clock = parts
    with HealthServer(
        metrics, readiness, Heartbeat(clock), host="127.0.0.1", port=0, stall_after_s=60
    ) as srv:
        yield srv


def test_healthz_is_200_while_the_loop_beats_and_503_when_it_stalls(
    server: HealthServer, parts: tuple[Metrics, Readiness, FakeClock]
) -> None:
    _, _, clock = parts
    assert _get(server.port, "/healthz")[::2] == (200, "ok\n")
    clock.now += 59
    assert _get(server.port, "/healthz")[0] == 200
    clock.now += 2
    status, ctype, body = _get(server.port, "/healthz")
    assert (status, body) == (503, "main loop stalled for 61s\n")
    assert ctype.startswith("text/plain")
    server.heartbeat.beat()
    assert _get(server.port, "/healthz")[0] == 200


def test_readyz_follows_the_callback_and_says_why_not(
    server: HealthServer, parts: tuple[Metrics, Readiness, FakeClock]
) -> None:
    metrics, readiness, _ = parts
    assert _get(server.port, "/readyz")[::2] == (503, "not ready: restoring partition 3\n")
    assert metrics.registry.get_sample_value("carecloud_ready") == 0
    readiness.reason = None
    assert _get(server.port, "/readyz")[::2] == (200, "ready\n")
    assert metrics.registry.get_sample_value("carecloud_ready") == 1
    readiness.broken = True
    assert _get(server.port, "/readyz")[::2] == (503, "not ready: readiness check failed: RuntimeError\n")


def test_metrics_serves_the_registry_with_ready_evaluated_at_scrape_time(
    server: HealthServer, parts: tuple[Metrics, Readiness, FakeClock]
) -> None:
    metrics, readiness, _ = parts
    metrics.count_events("Care", "upsert", 7)
    readiness.reason = None
    status, ctype, body = _get(server.port, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=")
    assert 'carecloud_events_consumed_total{entity="Care",operation="upsert"} 7.0' in body
    assert "carecloud_ready 1.0" in body
    assert _get(server.port, "/nope")[0] == 404


def test_stop_closes_the_port_and_is_idempotent(parts: tuple[Metrics, Readiness, FakeClock]) -> None:
    metrics, readiness, clock = parts
    srv = HealthServer(metrics, readiness, Heartbeat(clock), host="127.0.0.1", port=0).start()
    port = srv.port
    assert _get(port, "/healthz")[0] == 200
    srv.stop()
    srv.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_from_settings_binds_where_the_settings_say(parts: tuple[Metrics, Readiness, FakeClock]) -> None:
    from connector.config.settings import OpsSettings

    metrics, readiness, clock = parts
    ops = OpsSettings(http_host="127.0.0.1", http_port=0, stall_after_s=5)
    with HealthServer.from_settings(ops, metrics, readiness, Heartbeat(clock)) as srv:
        assert srv.stall_after_s == 5
        assert _get(srv.port, "/healthz")[0] == 200
