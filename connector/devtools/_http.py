"""The test servers' shared lifecycle: a stdlib HTTP server on a daemon thread (private).

The Schema Registry, the Portal simulator and the fault-injecting proxy differ in what they
answer, not in how they start and stop; each supplies its server in ``_make_server``. A stopped
server can start again on the same port with the same state, which is how tests take one away
and bring it back.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self

__all__ = ["BackgroundHttpServer"]


class BackgroundHttpServer:
    """Start, stop and context-manager plumbing around one ``ThreadingHTTPServer``."""

    thread_name = "http-server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> ThreadingHTTPServer:
        """A server bound to ``(self.host, self.port)`` (port 0: any free one)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        """Listen (again, on the same port once one was chosen) with the same state."""
        if self._server is None:
            self._server = self._make_server()
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self.thread_name,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the socket: clients now get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
