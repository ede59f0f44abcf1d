"""A local PostgreSQL server for the SQL-driven tests: Debian's ``postgresql-15``, logical decoding on.

The server is the real source Debezium reads (issue 19): ``wal_level=logical`` with a few
replication slots and WAL senders, trust authentication on loopback, one cluster per object on
a free port. PostgreSQL refuses to run as root, so when this process is root every server
command runs as the ``postgres`` user (``runuser``) on a directory that user owns, made under
the system temp dir (pytest's own temp dirs are private to root). SQL goes through ``psql``
over TCP, so callers need no driver.

Command line::

    python -m connector.devtools.postgres run [--port N]   # run a server until Ctrl-C
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PG_BIN_ENV", "PostgresError", "PostgresServer", "main", "pg_bin_dir"]

PG_BIN_ENV = "CARECLOUD_PG_BIN"
_RUN_AS = "postgres"
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_connections": "50",
    # A throwaway test cluster: durability is not what is tested, start-up and commit speed are.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


class PostgresError(RuntimeError):
    """The server could not be initialised, started or queried; the message carries the log tail."""


def pg_bin_dir() -> Path:
    """``$CARECLOUD_PG_BIN``, else the newest ``/usr/lib/postgresql/<major>/bin`` (Debian's layout)."""
    env = os.environ.get(PG_BIN_ENV)
    if env:
        return Path(env)
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresError("no /usr/lib/postgresql/*/bin/initdb: install postgresql-15 (make system-deps)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LIVE: set[PostgresServer] = set()


@atexit.register
def _reap_all() -> None:
    for server in list(_LIVE):
        server.close(graceful=False)


class PostgresServer:
    """One PostgreSQL cluster on a loopback port, initialised and owned by this object."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = 60.0) -> None:
        self.bin_dir = pg_bin_dir()
        self.port = port or _free_port()
        self.startup_timeout = startup_timeout
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        self.work_dir = Path(tempfile.mkdtemp(prefix="carecloud-pg-"))
        self.data_dir = self.work_dir / "data"
        self.log_file = self.work_dir / "postgres.log"
        if self._as_root:
            shutil.chown(self.work_dir, _RUN_AS, _RUN_AS)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        """``initdb`` on first use, then ``pg_ctl start`` and wait until it accepts connections."""
        if self._started:
            return self
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        _LIVE.add(self)
        self._started = True
        timeout = str(int(self.startup_timeout))
        done = self._server_cmd(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", timeout, "start"
        )
        if done.returncode != 0:
            raise PostgresError(
                f"pg_ctl start failed ({done.returncode}): {done.stdout}{done.stderr}\n{self.log_tail()}"
            )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (``immediate`` to die like a crash)."""
        if not self._started:
            return
        self._server_cmd("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop")
        self._started = False
        _LIVE.discard(self)

    def close(self, *, graceful: bool = True) -> None:
        """Stop and delete the cluster's directory."""
        self.stop("fast" if graceful else "immediate")
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- clients -----------------------------------------------------------------------------
    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (``name`` is an identifier the caller chose); returns the name."""
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def execute(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through ``psql`` (one implicit transaction per statement unless the SQL says
        BEGIN/COMMIT); stops at the first error. Returns psql's unaligned, tuples-only output."""
        psql = self.bin_dir / "psql"
        done = subprocess.run(
            [str(psql), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database)],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def rows(self, table: str, database: str = "postgres") -> list[dict[str, Any]]:
        """``SELECT *`` of a table as PostgreSQL's own JSON (``row_to_json``): numerics with a
        fraction as ``Decimal`` (their digits kept), dates and timestamps as ISO text, json/jsonb
        columns as nested objects."""
        out = self.execute(f"SELECT row_to_json(t) FROM {table} AS t", database)
        return [json.loads(line, parse_float=Decimal) for line in out.splitlines() if line]

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.is_file():
            return "(no postgres.log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------------
    def _server_cmd(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", _RUN_AS, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.work_dir)

    def _initdb(self) -> None:
        done = self._server_cmd(
            "initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C"
        )
        if done.returncode != 0:
            raise PostgresError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        settings = {**_SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.work_dir}'"}
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# carecloud-connector dev harness\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _run(port: int | None, database: str | None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    server = PostgresServer(port=port)
    try:
        server.start()
        if database:
            server.create_database(database)
        print(f"PG_DSN={server.dsn(database or 'postgres')}")
        print(f"data dir {server.data_dir}; Ctrl-C stops the server", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(Exception):
            server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.devtools.postgres", description="Local PostgreSQL (logical decoding)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a server, print its DSN, stop on Ctrl-C/SIGTERM")
    run.add_argument("--port", type=int, help="default: a free loopback port")
    run.add_argument("--database", help="create this database too")
    args = parser.parse_args(argv)
    return _run(args.port, args.database)


if __name__ == "__main__":
    sys.exit(main())
