"""A fault-injecting HTTP proxy on loopback, for testing how clients meet a failing server.

It forwards every request (any method, path, query, headers and body) to one target and
relays the answer, except for the next requests a test has scripted a fault for: an error
status with a body (``503 SlowDown``, ``403 AccessDenied``, ``429`` with ``Retry-After``), a
dropped connection, or a delay before forwarding. Clients see a real HTTP server, so their own
retries, timeouts and error parsing run as in production. Faults can be limited to requests
whose ``"METHOD /path?query"`` matches a regular expression (only the part uploads, say).

    with FaultyHttpProxy(s3.endpoint_url) as proxy:
        proxy.fail_next(503, S3_SLOW_DOWN, count=10)
        storage = S3Storage(bucket, endpoint_url=proxy.url, ...)

The ``Host`` header is forwarded unchanged, so request signatures made for the proxy's address
still verify. Never used in production.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from connector.devtools._http import BackgroundHttpServer

__all__ = ["S3_ACCESS_DENIED", "S3_SLOW_DOWN", "Fault", "FaultyHttpProxy"]

S3_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
S3_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
Headers = Iterable[tuple[str, str]]
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "expect", "content-length"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do with one matching request instead of (or before) forwarding it."""

    status: int | None = None
    """Answer with this status (and ``body``, ``headers``) without forwarding."""
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection without answering."""
    delay: float = 0.0
    """Seconds to wait first; with neither ``status`` nor ``drop`` the request is then forwarded."""
    match: re.Pattern[str] | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive and ``Expect: 100-continue`` as real servers do

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read their own output, not an access log."""

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(data)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        proxy = self.server.proxy
        fault = proxy.take_fault(f"{self.command} {self.path}")
        if fault is not None:
            time.sleep(fault.delay)
            if fault.drop:
                self.close_connection = True
                with contextlib.suppress(OSError):  # the client may have given up already
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.status is not None:
                headers = [("Content-Type", "application/xml"), *fault.headers.items()]
                self._reply(fault.status, headers, fault.body, close=True)
                return
        self._reply(*proxy.forward(self.command, self.path, self.headers.items(), body))

    def _reply(self, status: int, headers: Headers, body: bytes, *, close: bool = False) -> None:
        self.send_response_only(status)
        length = str(len(body))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # a HEAD answer has no body but tells the size of the GET's
            elif name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        if close:  # after an injected fault, as S3 does; also ends this handler's loop
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
                self.wfile.write(body)

    # http.server dispatches on these names
    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultyHttpProxy


class FaultyHttpProxy(BackgroundHttpServer):
    """The proxy on a free loopback port, in a background thread; a context manager."""

    thread_name = "faulty-http"

    def __init__(self, target: str, host: str = "127.0.0.1", *, timeout: float = 60.0) -> None:
        """``target`` is ``http://host:port``; ``timeout`` bounds each forwarded exchange."""
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"target must be http://host[:port], not {target!r}")
        super().__init__(host, 0)
        self.target = (parts.hostname, parts.port or 80)
        self.timeout = timeout
        self.requests: list[str] = []
        """``"METHOD /path?query"`` of every request received, faulted or not."""
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def fail_next(
        self,
        status: int,
        body: bytes = b"",
        *,
        count: int = 1,
        headers: Mapping[str, str] | None = None,
        match: str | None = None,
    ) -> None:
        """Answer the next ``count`` (matching) requests with ``status`` and ``body``."""
        self.add(Fault(status=status, body=body, headers=dict(headers or {})), count=count, match=match)

    def drop_next(self, *, count: int = 1, match: str | None = None) -> None:
        """Close the connection on the next ``count`` (matching) requests without an answer."""
        self.add(Fault(drop=True), count=count, match=match)

    def add(self, fault: Fault, *, count: int = 1, match: str | None = None) -> None:
        """Queue ``count`` copies of ``fault``; ``match`` is a regex searched in ``METHOD /path?query``."""
        if match is not None:
            fault = dataclasses.replace(fault, match=re.compile(match))
        with self._lock:
            self._faults.extend([fault] * count)

    def clear(self) -> None:
        """Forget the faults not yet used."""
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> int:
        """Faults not yet used."""
        with self._lock:
            return len(self._faults)

    def take_fault(self, request_line: str) -> Fault | None:
        """Record the request and remove and return the first fault that applies to it."""
        with self._lock:
            self.requests.append(request_line)
            for index, fault in enumerate(self._faults):
                if fault.match is None or fault.match.search(request_line):
                    return self._faults.pop(index)
        return None

    def forward(self, method: str, path: str, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        """One exchange with the target on a fresh connection; 502 when it cannot be reached."""
        connection = http.client.HTTPConnection(*self.target, timeout=self.timeout)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            answer = response.read()
            return response.status, response.getheaders(), answer
        except OSError as exc:
            return 502, [("Content-Type", "text/plain")], f"proxy: target unreachable ({exc})".encode()
        finally:
            connection.close()

    def _make_server(self) -> _Server:
        server = _Server((self.host, self.port), _Handler)
        server.proxy = self
        return server
