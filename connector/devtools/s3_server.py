"""A real S3-compatible server for tests and the demo: moto's server mode, in its own process.

A subprocess, not moto's in-process ``mock_aws``: the storage code then talks HTTP over a real
socket (signing, retries, timeouts, connection errors all happen for real), tests can point
the fault-injecting proxy (``faulty_http``) in between, and a test can SIGKILL a writer
process while the server keeps the half-finished upload. State is in the server's memory
only: ``stop()`` forgets every bucket. Never used in production.

Command line::

    python -m connector.devtools.s3_server run [--port N]   # print the endpoint, run until Ctrl-C
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Endpoint", "S3Server", "S3ServerError", "main"]


class S3ServerError(RuntimeError):
    """The moto server did not start or died."""


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """Where an S3-compatible server answers and the (test) credentials it accepts."""

    url: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    def client(self, **config: Any) -> S3Client:
        """A boto3 client for set-up and inspection (``Config`` keyword arguments allowed)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(**config),
        )


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1
_LIVE: set[S3Server] = set()


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills the server when the test run dies, even
    by SIGKILL, where atexit never runs (same as the Kafka broker's, see ``devtools.kafka``)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@atexit.register
def _reap_all() -> None:
    for server in list(_LIVE):
        server.kill()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class S3Server:
    """``python -m moto.server`` on a loopback port, owned by this process; a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        """``env`` is added to the server's environment (moto reads its switches from there)."""
        self.host = host
        self.port = port or _free_port(host)
        self.startup_timeout = startup_timeout
        self._env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.gettempdir()) / f"carecloud-moto-{os.getpid()}-{self.port}.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(self.endpoint_url)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, **config: Any) -> S3Client:
        return self.endpoint.client(**config)

    def start(self) -> S3Server:
        """Launch the server and return once it answers HTTP."""
        if self.running:
            return self
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._env},
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it
                preexec_fn=_die_with_parent,  # killed with this process, even by SIGKILL
            )
        _LIVE.add(self)
        self._wait_ready()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL (if still running) and forget the process; the port is then closed."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        _LIVE.discard(self)
        self._log.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        if not self._log.is_file():
            return "(no moto log)"
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                tail = self.log_tail()
                self.kill()
                raise S3ServerError(f"moto server exited with {code} during start-up\n{tail}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection(self.host, self.port, timeout=1)
                try:
                    connection.request("GET", "/moto-api/")
                    connection.getresponse().read()
                    return
                finally:
                    connection.close()
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.kill()
                raise S3ServerError(f"moto server not ready in {self.startup_timeout:.0f}s\n{tail}")
            time.sleep(0.05)


def _run(port: int) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job ignores it
        signal.signal(sig, signal.default_int_handler)
    server = S3Server(port=port)
    try:  # not `with`: a Ctrl-C during start() must stop the server too
        server.start()
        endpoint = server.endpoint
        print(f"S3_ENDPOINT={endpoint.url}")
        print(f"  AWS_REGION={endpoint.region} (moto accepts any access key, e.g. testing/testing)")
        print("buckets live in memory only; Ctrl-C stops the server", flush=True)
        while server.running:
            time.sleep(0.5)
        print(f"moto server died\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.devtools.s3_server", description="Local S3-compatible server (moto)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a server, print its endpoint, stop on Ctrl-C/SIGTERM")
    run.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    return _run(args.port)


if __name__ == "__main__":
    sys.exit(main())
