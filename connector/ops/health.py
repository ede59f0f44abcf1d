"""The operations HTTP endpoint: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready).

One small stdlib server on a daemon thread, so it answers while the main loop is busy (and
tells the kubelet when that loop has stalled). Two probes, two different questions:

- ``/healthz`` is 200 while the main loop's ``Heartbeat`` has beaten within ``stall_after_s``;
  503 after that, so the kubelet restarts a process that is stuck (a deadlock, a hung call)
  rather than one that is merely busy. Long work inside the loop (a restore) must beat too.
- ``/readyz`` is 200 only when the readiness check returns ``None``; otherwise 503 with the
  check's short reason ("restoring partition 3", "no partitions assigned"). Not ready keeps the
  pod out of a rollout's progress and raises the ``carecloud_ready == 0`` alert, without a restart.

``/metrics`` evaluates the same readiness check first, so ``carecloud_ready`` always agrees
with ``/readyz``. Responses are plain text and never carry data: reasons name partitions and
phases only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector.config.settings import OpsSettings
from connector.ops.metrics import Metrics

__all__ = ["HealthServer", "Heartbeat", "ReadinessCheck"]

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], str | None]
"""Returns ``None`` when ready, else a short plain reason (no record data) why not."""


class Heartbeat:
    """When the main loop last ticked; ``beat()`` is one monotonic-clock read, cheap per batch."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """Record a tick of the main loop (call once per batch, and during long restores)."""
        self._last = self._clock()

    def age(self) -> float:
        """Seconds since the last beat (since construction before the first)."""
        return self._clock() - self._last


class HealthServer:
    """Serves the three endpoints on ``host:port`` from a daemon thread; ``port=0`` picks one."""

    def __init__(
        self,
        metrics: Metrics,
        readiness: ReadinessCheck,
        heartbeat: Heartbeat,
        *,
        host: str = "0.0.0.0",  # the kubelet and Prometheus reach the pod IP, not loopback
        port: int = 8080,
        stall_after_s: float = 120.0,
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.heartbeat = heartbeat
        self.stall_after_s = stall_after_s
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, ops: OpsSettings, metrics: Metrics, readiness: ReadinessCheck, heartbeat: Heartbeat
    ) -> HealthServer:
        """The server as ``CARECLOUD_OPS_*`` configures it (not started)."""
        return cls(
            metrics,
            readiness,
            heartbeat,
            host=ops.http_host,
            port=ops.http_port,
            stall_after_s=ops.stall_after_s,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Start answering; returns self so ``with HealthServer(...).start() as server`` works."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="health", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the answers (also used directly by unit tests) ----------------------------------------

    def alive(self) -> tuple[int, str]:
        age = self.heartbeat.age()
        if age > self.stall_after_s:
            return HTTPStatus.SERVICE_UNAVAILABLE, f"main loop stalled for {age:.0f}s\n"
        return HTTPStatus.OK, "ok\n"

    def ready(self) -> tuple[int, str]:
        try:
            reason = self.readiness()
        except Exception as exc:  # a broken check must not kill the server: report not ready
            log.warning("readiness check failed", extra={"error": type(exc).__name__})
            reason = f"readiness check failed: {type(exc).__name__}"
        self.metrics.set_ready(reason is None)
        if reason is not None:
            return HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {reason}\n"
        return HTTPStatus.OK, "ready\n"

    def exposition(self) -> bytes:
        self.ready()
        return generate_latest(self.metrics.registry)


def _handler_for(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, server.exposition(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                status, text = server.alive() if path == "/healthz" else server.ready()
                self._send(status, text.encode(), "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would flood the logs; the stdlib's stderr line is dropped."""

    return Handler
