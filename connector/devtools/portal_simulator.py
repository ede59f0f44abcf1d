"""A CareCloud Portal simulator over real HTTP, for tests and the local demo (never production).

It serves the contract in ``openapi.yaml`` and enforces CareCloud's rules (``_portal_sessions``:
sessions, batches of at most 1000 records checked against the entity schema, idempotency keys,
commits whose count and checksum must match; a wrong API key is a 401). On top it can rate limit
(429 with ``Retry-After``) and inject faults (``_portal_app.Fault``: 500s, slow answers, dropped
connections, 429s, each optionally *after* applying the request).

Control surface for tests and the demo, with the same API key::

    GET    /_sim/accepted?entity=Family&date=2024-11-05   the committed set, records in order
    GET    /_sim/stats                                     requests, 429s, faults, applied batches,
                                                           replays, duplicate applications (0)
    POST   /_sim/faults    {"faults": [{"on": "put_batch", "action": "error", "after_apply": true}]}
    DELETE /_sim/faults
    PUT    /_sim/rate-limit {"per_second": 5}
    GET    /openapi.yaml                                   the contract (no key needed)

Started with ``carecloud-connector simulate-portal --port 8080 --api-key KEY``, or in-process::

    with PortalSimulator("KEY") as portal:
        PortalClient(portal.url, "KEY").deliver(...)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from connector.devtools._http import BackgroundHttpServer
from connector.devtools._portal_app import Fault, PortalApp, Reply
from connector.devtools._portal_sessions import Problem, SessionStore
from connector.sinks._portal_wire import PROBLEM_CONTENT_TYPE

__all__ = ["Fault", "PortalApp", "PortalSimulator", "SessionStore", "serve"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Larger request bodies get a 413 without being read (a full batch is well under 1 MiB)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection reuse is exercised
    timeout = 120  # an idle keep-alive connection frees its thread after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read their own output, and an access log is no place for session ids."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read, so the connection cannot be reused
            problem = (
                Problem(413, "content-too-large", "Content too large", f"at most {MAX_BODY_BYTES} bytes")
                if length > 0
                else Problem(400, "bad-request", "Bad request", "Content-Length is not a number")
            )
            self._reply(Reply(problem.status, orjson.dumps(problem.body(self.path)), PROBLEM_CONTENT_TYPE))
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = self.server.app.handle(method, self.path, headers, body)
        except Exception as exc:  # a simulator bug must still answer, and never echo the request
            log.error("portal simulator: %s on %s %s", type(exc).__name__, method, self.path.split("?")[0])
            problem = Problem(500, "internal-error", "Internal error", "the simulator failed")
            reply = Reply(500, orjson.dumps(problem.body(self.path)), PROBLEM_CONTENT_TYPE)
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._reply(reply)

    def _reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: PortalApp) -> None:
        self.app = app
        super().__init__(address, _Handler)


class PortalSimulator(BackgroundHttpServer):
    """The simulator on a loopback port (``port=0``: a free one) in a background thread."""

    thread_name = "portal-simulator"

    def __init__(
        self,
        api_key: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
        faults: Iterable[Fault] = (),
    ) -> None:
        super().__init__(host, port)
        self.app = PortalApp(api_key, rate_limit=rate_limit, faults=faults)

    def _make_server(self) -> _Server:
        return _Server((self.host, self.port), self.app)


def serve(host: str, port: int, api_key: str, rate_limit: float | None = None) -> int:
    """Run until SIGTERM or Ctrl-C (the ``simulate-portal`` command); prints the URL first."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with PortalSimulator(api_key, host=host, port=port, rate_limit=rate_limit) as portal:
        limit = f", rate limit {rate_limit:g} requests/s" if rate_limit else ""
        print(f"simulate-portal: listening on {portal.url}{limit}", flush=True)
        stop.wait()
    print("simulate-portal: stopped", flush=True)
    return 0
