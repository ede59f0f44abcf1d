"""Debezium's PostgreSQL connector in a Kafka Connect standalone worker, from Maven Central jars.

The real source of issue 19: ``debezium-connector-postgres`` with the Kafka Connect runtime
it is built against, resolved once into ``.cache/debezium`` (like the broker's jars,
``connector.devtools.kafka``) and run as one JVM with every jar on one classpath (no
``plugin.path``). One worker serves many connectors: each test registers its own over the
worker's REST API (its own ``topic.prefix``, replication slot and publication, filtered to its
tables, which exist by then), so the JVM starts once per test run. The converter is set per
connector: JSON with or without the schema wrapper.

Command line::

    python -m connector.devtools.debezium fetch                       # resolve the jars, print where
    python -m connector.devtools.debezium run --bootstrap HOST:PORT \\
        [--connector connector.properties]                          # run a worker until Ctrl-C
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from connector.devtools._serve import serve
from connector.devtools.kafka import _die_with_parent, _free_ports

__all__ = [
    "CACHE_ENV",
    "CONNECT_VERSION",
    "DEBEZIUM_VERSION",
    "ConnectError",
    "ConnectWorker",
    "fetch_jars",
    "main",
    "postgres_connector",
]

DEBEZIUM_VERSION = "3.7.0.Final"  # 3.7.1.Final does not resolve: its parent POM is not on Central
CONNECT_VERSION = "4.3.1"  # the Kafka version Debezium 3.7 is built against
_LOG4J_VERSION = "2.24.3"
CACHE_ENV = "CARECLOUD_DEBEZIUM_CACHE"
_MARKER = ".complete"
_CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
_JSON = "org.apache.kafka.connect.json.JsonConverter"


def _dependency(group: str, artifact: str, version: str) -> str:
    return (
        f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version></dependency>\n"
    )


# Connect's classes log through slf4j-api 1.7; log4j-slf4j-impl binds it to log4j2 (as for the
# broker, see kafka.py), so the worker's log goes to the file the log4j2 config names.
_POM = (
    """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>carecloud.devtools</groupId><artifactId>debezium-connect</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
"""
    + _dependency("io.debezium", "debezium-connector-postgres", DEBEZIUM_VERSION)
    + "".join(
        _dependency("org.apache.kafka", name, CONNECT_VERSION)
        for name in ("connect-runtime", "connect-json", "connect-api", "kafka-clients")
    )
    + _dependency("org.apache.logging.log4j", "log4j-slf4j-impl", _LOG4J_VERSION)
    + _dependency("org.apache.logging.log4j", "log4j-core", _LOG4J_VERSION)
    + """  </dependencies>
  <build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version></plugin></plugins></build>
</project>
"""
)

_LOG4J2 = """status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:connect.logs.dir}/connect.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""


class ConnectError(RuntimeError):
    """The jars could not be fetched, or the worker or a connector did not start or stream."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """``$CARECLOUD_DEBEZIUM_CACHE`` or ``<repo>/.cache/debezium`` (beside ``.cache/kafka``)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else _repo_root() / ".cache" / "debezium"


def fetch_jars(cache_dir: Path | None = None) -> Path:
    """Resolve Debezium and the Connect runtime once and return the ``libs`` directory.

    As ``kafka.fetch_jars``: staged, renamed into place, then marked complete, under a file
    lock; a completed fetch costs no Maven run or network later.
    """
    root = (cache_dir or default_cache_dir()) / DEBEZIUM_VERSION
    libs = root / "libs"
    if (root / _MARKER).is_file():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / _MARKER).is_file():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ConnectError("mvn is not on PATH; install Maven (make system-deps) to fetch Debezium")
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            staging = Path(tmp)
            (staging / "pom.xml").write_text(_POM)
            cmd = [mvn, "-B", "-q", "-f", str(staging / "pom.xml"), "dependency:copy-dependencies"]
            done = subprocess.run(
                [*cmd, f"-DoutputDirectory={staging / 'libs'}"], capture_output=True, text=True, check=False
            )
            expected = staging / "libs" / f"debezium-connector-postgres-{DEBEZIUM_VERSION}.jar"
            if done.returncode != 0 or not expected.is_file():
                raise ConnectError(f"mvn failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
            if libs.exists():
                shutil.rmtree(libs)
            os.replace(staging / "libs", libs)
        versions = f"connect {CONNECT_VERSION}, log4j {_LOG4J_VERSION}"
        (root / _MARKER).write_text(f"debezium-connector-postgres {DEBEZIUM_VERSION}, {versions}\n")
    return libs


def postgres_connector(
    name: str,
    *,
    port: int,
    database: str,
    topic_prefix: str,
    tables: Sequence[str],
    schemas: bool = False,
    partitions: int = 3,
    user: str = "postgres",
    **overrides: str,
) -> dict[str, str]:
    """The configuration of one Debezium PostgreSQL connector (``pgoutput``, its own slot and a
    publication filtered to ``tables``, transaction metadata on), with the JSON converter with
    or without schemas; topics are created by Connect with ``partitions`` partitions."""
    slot = name.replace("-", "_").replace(".", "_").lower()
    converter = {
        "key.converter": _JSON,
        "value.converter": _JSON,
        "key.converter.schemas.enable": str(schemas).lower(),
        "value.converter.schemas.enable": str(schemas).lower(),
    }
    return {
        "name": name,
        "connector.class": _CONNECTOR_CLASS,
        "tasks.max": "1",
        "database.hostname": "127.0.0.1",
        "database.port": str(port),
        "database.user": user,
        "database.password": "unused",  # trust authentication on loopback
        "database.dbname": database,
        "topic.prefix": topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": f"{slot}_pub",
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(tables),
        "provide.transaction.metadata": "true",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": str(partitions),
        **converter,
        **overrides,
    }


_LIVE: set[ConnectWorker] = set()


@atexit.register
def _reap_all() -> None:
    for worker in list(_LIVE):
        worker.close(graceful=False)


class ConnectWorker:
    """One Kafka Connect standalone worker on loopback, its REST API on a free port."""

    def __init__(
        self,
        bootstrap: str,
        work_dir: Path | None = None,
        *,
        connectors: Sequence[Mapping[str, str]] = (),
        heap: str = "512m",
        startup_timeout: float = 120.0,
        cache_dir: Path | None = None,
    ) -> None:
        self._owns_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="carecloud-connect-")) if work_dir is None else work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.work_dir / "logs"
        self.bootstrap = bootstrap
        self.initial_connectors = [dict(c) for c in connectors]
        self.heap = heap
        self.startup_timeout = startup_timeout
        self._cache_dir = cache_dir
        (self.rest_port,) = _free_ports(1)
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        for name in ("connect.out", "connect.log"):
            path = self.log_dir / name
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else ["(none)"]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ConnectWorker:
        """Launch the JVM and return once its REST API answers (connectors start after)."""
        if self.running:
            return self
        classpath = f"{fetch_jars(self._cache_dir)}/*"
        self.log_dir.mkdir(exist_ok=True)
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)
        worker = self.work_dir / "worker.properties"
        worker.write_text(_properties(self._worker_properties()))
        args = [str(worker)]
        for index, config in enumerate(self.initial_connectors):
            path = self.work_dir / f"connector-{index}.properties"
            path.write_text(_properties(config))
            args.append(str(path))
        java = shutil.which("java")
        if java is None:
            raise ConnectError("java is not on PATH; install a JRE 17 (make system-deps)")
        cmd = [
            java,
            f"-Xmx{self.heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            f"-Dconnect.logs.dir={self.log_dir}",
            "-cp",
            classpath,
            "org.apache.kafka.connect.cli.ConnectStandalone",
            *args,
        ]
        self.started_at = time.monotonic()
        with (self.log_dir / "connect.out").open("ab") as out:
            self._process = subprocess.Popen(
                cmd,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self)
        self._wait(lambda: self._get("/connectors") is not None, "the REST API")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down cleanly (SIGTERM: tasks stop, offsets flush), SIGKILL after ``timeout``."""
        process = self._process
        if process is not None and process.poll() is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        if process is not None and process.poll() is None:
            self._signal(signal.SIGKILL)
            process.wait()
        self._process = None
        _LIVE.discard(self)

    def close(self, *, graceful: bool = True) -> None:
        if graceful:
            self.stop()
        else:
            self.stop(timeout=0)
        if self._owns_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> ConnectWorker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- connectors --------------------------------------------------------------------------
    def add_connector(self, config: Mapping[str, str], timeout: float = 120.0) -> None:
        """Register a connector and wait until it and its task are RUNNING."""
        name = config["name"]
        response = httpx.put(f"{self.url}/connectors/{name}/config", json=dict(config), timeout=30)
        if response.status_code >= 300:
            raise ConnectError(f"creating {name}: {response.status_code} {response.text}")
        self.wait_running(name, timeout)

    def wait_running(self, name: str, timeout: float = 120.0) -> None:
        def running() -> bool:
            status = self._get(f"/connectors/{name}/status")
            if not status:
                return False
            states = [status["connector"]["state"], *(t["state"] for t in status.get("tasks", []))]
            if "FAILED" in states:
                traces = [t.get("trace", "") for t in status.get("tasks", [])]
                raise ConnectError(f"{name} failed: {status['connector'].get('trace', '')}{traces}")
            return len(states) > 1 and all(s == "RUNNING" for s in states)

        self._wait(running, f"connector {name}", timeout)

    def remove_connector(self, name: str) -> None:
        """Stop and delete a connector (its replication slot stays unless configured otherwise)."""
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(f"{self.url}/connectors/{name}", timeout=30)

    # -- internals ---------------------------------------------------------------------------
    def _worker_properties(self) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap,
            "key.converter": _JSON,
            "value.converter": _JSON,
            "offset.storage.file.filename": str(self.work_dir / "offsets.dat"),
            "offset.flush.interval.ms": "1000",
            "listeners": self.url,
            "plugin.discovery": "only_scan",
            "topic.creation.enable": "true",
        }

    def _get(self, path: str) -> Any:
        try:
            response = httpx.get(self.url + path, timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def _wait(self, check: Any, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while not check():
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                self.stop()
                raise ConnectError(f"worker exited with {code} waiting for {what}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ConnectError(f"{what} not ready in time\n{self.log_tail()}")
            time.sleep(0.25)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)


def _properties(values: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def _read_properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def _run(bootstrap: str, connectors: Sequence[Path]) -> int:
    worker = ConnectWorker(bootstrap, connectors=[_read_properties(p) for p in connectors])
    return serve(worker, "worker", lambda: [f"CONNECT_URL={worker.url}"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.devtools.debezium", description="Kafka Connect with Debezium PostgreSQL"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="resolve the Debezium and Connect jars and print their path")
    fetch.add_argument("--cache-dir", type=Path, help=f"default: ${CACHE_ENV} or <repo>/.cache/debezium")
    run = commands.add_parser("run", help="run a standalone worker, print its REST URL, stop on Ctrl-C")
    run.add_argument("--bootstrap", required=True, help="the Kafka broker, e.g. 127.0.0.1:9092")
    run.add_argument("--connector", type=Path, action="append", default=[], help="a connector .properties")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch_jars(args.cache_dir))
        return 0
    return _run(args.bootstrap, args.connector)


if __name__ == "__main__":
    sys.exit(main())
