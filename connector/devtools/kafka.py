"""The project's own Apache Kafka broker: one KRaft node run from Maven Central jars.

Tests, benchmarks and the local demo need a real broker (transactions, compaction, consumer
groups, SASL_SSL) and the project's machines have Java and Maven but no container runtime, so
the broker jars are resolved once into ``.cache/kafka`` and started as a plain JVM process.
Why this and not the alternatives: ``docs/decisions/0002-kafka-test-harness.md``.

Command line::

    python -m connector.devtools.kafka fetch              # resolve the jars, print where
    python -m connector.devtools.kafka run [--sasl-ssl]   # run a broker until Ctrl-C
    python -m connector.devtools.kafka run --brokers 3    # a three-node KRaft cluster (kafka_cluster)
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connector.devtools._serve import serve
from connector.devtools.tls import TlsMaterial, tls_material

__all__ = ["CACHE_ENV", "KAFKA_VERSION", "BrokerError", "KafkaBroker", "fetch_jars", "main", "new_cluster_id"]

KAFKA_VERSION = "4.1.1"
CACHE_ENV = "CARECLOUD_KAFKA_CACHE"
_LOG4J_VERSION = "2.24.3"  # what kafka-server 4.1.1 itself depends on
_MARKER = ".complete"
_INTER_BROKER_USER = "inter-broker"
_SCRAM = "SCRAM-SHA-512"
_STATE_FILE = "harness.json"
_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="{}" password="{}";'

# Kafka 4 moved to log4j2 (kafka-server depends on log4j-core), but its classes log through
# slf4j-api 1.7, and the binding between the two (log4j-slf4j-impl) ships only in the tarball.
# Without it slf4j falls back to NOP and the broker logs nothing; slf4j-reload4j would route to
# log4j 1 and ignore our log4j2 config. Measured, see docs/decisions/0002-kafka-test-harness.md.
_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>carecloud.devtools</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{_LOG4J_VERSION}</version></dependency>
  </dependencies>
  <build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version></plugin></plugins></build>
</project>
"""

_LOG4J2 = """status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


# Single-node settings that never vary. Internal topics get 8 partitions, not 50, because the
# first group or transaction waits for all of them; the cleaner's dedupe buffer is 16 MiB, not
# 128 MiB of a small heap; 16 MiB segments let compaction tests see closed segments soon. A
# killed broker's old registration blocks its restart until its session expires: 3 s, not 9.
_STATIC_PROPERTIES = """
process.roles=broker,controller node.id=1 controller.listener.names=CONTROLLER
default.replication.factor=1 min.insync.replicas=1 auto.create.topics.enable=false
offsets.topic.replication.factor=1 offsets.topic.num.partitions=8 group.initial.rebalance.delay.ms=0
transaction.state.log.replication.factor=1 transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1 share.coordinator.state.topic.min.isr=1
log.segment.bytes=16777216 log.cleaner.dedupe.buffer.size=16777216 log.cleaner.backoff.ms=1000
num.io.threads=4 num.network.threads=2 broker.heartbeat.interval.ms=500 broker.session.timeout.ms=3000
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted or started; the message carries the log tail."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """``$CARECLOUD_KAFKA_CACHE`` or ``<repo>/.cache/kafka``: shared by every checkout command."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else _repo_root() / ".cache" / "kafka"


def fetch_jars(cache_dir: Path | None = None) -> Path:
    """Resolve the broker's jars once and return the ``libs`` directory holding them.

    The marker file is written only after the staged download has been renamed into place, so
    an interrupted fetch never looks complete, and a completed one costs no Maven run or network
    on later calls. A file lock keeps concurrent first fetches from racing.
    """
    root = (cache_dir or default_cache_dir()) / KAFKA_VERSION
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
            raise BrokerError("mvn is not on PATH; install Maven (make system-deps) to fetch the Kafka jars")
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            staging = Path(tmp)
            (staging / "pom.xml").write_text(_POM)
            cmd = [mvn, "-B", "-q", "-f", str(staging / "pom.xml"), "dependency:copy-dependencies"]
            done = subprocess.run(
                [*cmd, f"-DoutputDirectory={staging / 'libs'}"], capture_output=True, text=True, check=False
            )
            if done.returncode != 0 or not (staging / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
                raise BrokerError(f"mvn failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
            if libs.exists():  # left by a fetch that died between rename and marker
                shutil.rmtree(libs)
            os.replace(staging / "libs", libs)
        (root / _MARKER).write_text(f"kafka_2.13 {KAFKA_VERSION}, log4j-slf4j-impl {_LOG4J_VERSION}\n")
    return libs


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def new_cluster_id() -> str:
    """A random KRaft cluster id, as ``kafka-storage.sh random-uuid`` prints one; the nodes of
    one cluster are all formatted with the same."""
    while True:  # Kafka's own Uuid.randomUuid() also refuses ids that read as a CLI flag
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills the JVM if the Python process dies.

    atexit covers normal exits; this covers SIGKILL of the test run, where atexit never runs.
    The signal fires when the *thread* that started the broker ends, so start brokers from a
    thread that lives as long as they should (the main thread, in pytest and the CLI).
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LIVE: set[KafkaBroker] = set()


@atexit.register
def _reap_all() -> None:
    for broker in list(_LIVE):
        broker.close(graceful=False)


def _tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return f"({path.name}: none)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} ---\n" + "\n".join(text)


class KafkaBroker:
    """One combined broker+controller KRaft node on loopback ports, owned by this process.

    A formatted work dir remembers its ports and SCRAM users (``harness.json``), so ``restart()``
    and a later ``KafkaBroker`` on the same dir come back where clients expect them.
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        sasl_ssl: bool = False,
        users: Mapping[str, str] | None = None,
        num_partitions: int = 1,
        heap: str = "768m",
        properties: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        cache_dir: Path | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self._owns_dir = work_dir is None
        self._cluster_id = cluster_id  # the nodes of one cluster are formatted with the same id
        self.work_dir = Path(tempfile.mkdtemp(prefix="carecloud-kafka-")) if work_dir is None else work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir, self.log_dir = self.work_dir / "data", self.work_dir / "logs"
        self.sasl_ssl = sasl_ssl
        self.num_partitions = num_partitions
        self.heap = heap
        self.extra_properties = dict(properties or {})
        self.startup_timeout = startup_timeout
        self._cache_dir = cache_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._tls: TlsMaterial | None = None
        if users and not sasl_ssl:
            raise ValueError("users only mean something with sasl_ssl=True")
        state_file = self.work_dir / _STATE_FILE
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if state["sasl_ssl"] != sasl_ssl or (users is not None and dict(users) != state["users"]):
                raise ValueError(f"{self.work_dir} was formatted with other security settings; use a new dir")
            self.port, self.controller_port = state["port"], state["controller_port"]
            self.users: dict[str, str] = state["users"]
            self._admin_password: str = state["admin_password"]
        else:
            self.port, self.controller_port = _free_ports(2)
            self.users = dict(users) if users is not None else {}
            if sasl_ssl and not self.users:
                self.users = {"connector": secrets.token_hex(12)}
            self._admin_password = secrets.token_hex(16)
        for name, password in self.users.items():  # both end up unquoted in StorageTool's --add-scram
            if name == _INTER_BROKER_USER or not _SAFE.fullmatch(name + password):
                raise ValueError(
                    f"SCRAM user {name!r}: letters, digits, '-', '_' only; not {_INTER_BROKER_USER}"
                )

    @property
    def bootstrap(self) -> str:
        """Same host name the broker advertises, so TLS hostname checks see one name."""
        return f"{'localhost' if self.sasl_ssl else '127.0.0.1'}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client_config(self, user: str | None = None) -> dict[str, str]:
        """confluent-kafka settings that reach this broker, as the first (or the named) user."""
        config = {"bootstrap.servers": self.bootstrap}
        if self.sasl_ssl:
            name = user or next(iter(self.users))
            config |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": _SCRAM,
                "sasl.username": name,
                "sasl.password": self.users[name],
                "ssl.ca.location": str(self.work_dir / "tls" / "ca.pem"),
                "broker.address.family": "v4",  # the listener is on 127.0.0.1; skip trying ::1
            }
        return config

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(_tail(self.log_dir / name, lines) for name in ("kafka.out", "server.log"))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> KafkaBroker:
        """Format on first use, launch the JVM, and return once the broker answers metadata."""
        if self.running:
            return self
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Format on first use and launch the JVM without waiting for it to answer: the nodes of
        a multi-node KRaft cluster answer only once a quorum of them runs, so a cluster launches
        them all and then waits (``connector.devtools.kafka_cluster``)."""
        if self.running:
            return
        classpath = f"{fetch_jars(self._cache_dir)}/*"
        self.log_dir.mkdir(exist_ok=True)
        if self.sasl_ssl and self._tls is None:
            self._tls = tls_material(self.work_dir / "tls")
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)
        props = self.work_dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        if not (self.data_dir / "meta.properties").is_file():
            self._format(classpath, props)
        self._launch(classpath, props)

    def stop(self, timeout: float = 15.0) -> None:
        """Shut down cleanly (SIGTERM), escalating to SIGKILL after ``timeout`` seconds."""
        process = self._process
        if process is not None and process.poll() is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        self.kill()  # SIGKILL if SIGTERM was not enough; forgets the process either way

    def kill(self) -> None:
        """Die like a crashed broker: no controlled shutdown, data dir left as it was."""
        process = self._process
        if process is not None and process.poll() is None:
            self._signal(signal.SIGKILL)
            process.wait()
        self._process = None
        _LIVE.discard(self)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it stops answering but keeps every connection open, as
        in a long GC pause or a network partition, so clients wait on their own timeouts."""
        if self.running:
            self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT), with its state as it was."""
        if self.running:
            self._signal(signal.SIGCONT)

    def restart(self) -> KafkaBroker:
        """Start again on the same ports and data (stopping first if still up); no re-format."""
        self.stop()
        return self.start()

    def close(self, *, graceful: bool = True) -> None:
        """Stop (or kill) and delete the work dir if this object made it."""
        if graceful:
            self.stop()
        else:
            self.kill()
        if self._owns_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _properties(self) -> dict[str, str]:
        listener = "SASL_SSL" if self.sasl_ssl else "PLAINTEXT"
        cport = self.controller_port
        props = dict(line.split("=", 1) for line in _STATIC_PROPERTIES.split())
        props |= {
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"{listener}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"{listener}://{self.bootstrap}",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{listener}:{listener}",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self.num_partitions),
        }
        if self.sasl_ssl:
            assert self._tls is not None
            jaas = _JAAS.format(_INTER_BROKER_USER, self._admin_password)
            props |= self._tls.broker_properties() | {
                "sasl.enabled.mechanisms": _SCRAM,
                "sasl.mechanism.inter.broker.protocol": _SCRAM,
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            }
        return props | self.extra_properties

    def _java(self, classpath: str, heap: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is not on PATH; install a JRE 17 (make system-deps) to run the broker")
        log4j = f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}"
        return [
            java,
            f"-Xmx{heap}",
            "-Djava.awt.headless=true",
            log4j,
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            classpath,
        ]

    def _format(self, classpath: str, props: Path) -> None:
        cmd = [*self._java(classpath, "256m"), "kafka.tools.StorageTool", "format"]
        cmd += ["-t", self._cluster_id or new_cluster_id(), "-c", str(props)]
        if self.sasl_ssl:
            for name, password in {_INTER_BROKER_USER: self._admin_password, **self.users}.items():
                cmd += ["--add-scram", f"{_SCRAM}=[name={name},password={password}]"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.work_dir)
        if done.returncode != 0:
            raise BrokerError(f"StorageTool format failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        state = {
            "sasl_ssl": self.sasl_ssl,
            "port": self.port,
            "controller_port": self.controller_port,
            "users": self.users,
            "admin_password": self._admin_password,
        }
        (self.work_dir / _STATE_FILE).write_text(json.dumps(state, indent=2))

    def _launch(self, classpath: str, props: Path) -> None:
        cmd = [*self._java(classpath, self.heap), "-XX:MaxGCPauseMillis=20"]
        with (self.log_dir / "kafka.out").open("ab") as out:
            self._process = subprocess.Popen(
                [*cmd, "kafka.Kafka", str(props)],
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach the JVM and only it
                preexec_fn=_die_with_parent,  # only a prctl call: no Python locks
            )
        _LIVE.add(self)

    def wait_ready(self) -> None:
        """Return once the broker answers metadata; a ``BrokerError`` with the log tail if it
        exits or stays silent past ``startup_timeout``."""
        admin = AdminClient({**self.client_config(), "log_level": 0, "reconnect.backoff.max.ms": 200})
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                self.kill()  # only forgets the process: it is gone already
                raise BrokerError(f"broker exited with {code} during start-up\n{self.log_tail()}")
            with contextlib.suppress(KafkaException):
                if admin.list_topics(timeout=1.0).brokers:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(f"broker not ready in {self.startup_timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.1)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)


def _run(sasl_ssl: bool, work_dir: Path | None, brokers: int) -> int:
    if brokers > 1:
        if sasl_ssl:
            raise SystemExit("--sasl-ssl runs one broker; the cluster is PLAINTEXT")
        from connector.devtools.kafka_cluster import KafkaCluster

        cluster = KafkaCluster(brokers, work_dir)
        return serve(cluster, "cluster", lambda: [f"KAFKA_BOOTSTRAP={cluster.bootstrap}"])
    broker = KafkaBroker(work_dir, sasl_ssl=sasl_ssl)

    def describe() -> list[str]:
        config = broker.client_config().items()
        return [f"KAFKA_BOOTSTRAP={broker.bootstrap}", *(f"  {key}={value}" for key, value in config)]

    return serve(broker, "broker", describe)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.devtools.kafka", description="Local Kafka broker"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="resolve the broker jars into the cache and print their path")
    fetch.add_argument("--cache-dir", type=Path, help=f"default: ${CACHE_ENV} or <repo>/.cache/kafka")
    run = commands.add_parser("run", help="run a broker, print its bootstrap, stop on Ctrl-C/SIGTERM")
    run.add_argument("--sasl-ssl", action="store_true", help="SCRAM-SHA-512 over TLS instead of PLAINTEXT")
    run.add_argument("--work-dir", type=Path, help="keep data and logs here (reused if already formatted)")
    run.add_argument(
        "--brokers", type=int, default=1, choices=range(1, 6), help="KRaft nodes (3: a replicated cluster)"
    )
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch_jars(args.cache_dir))
        return 0
    return _run(args.sasl_ssl, args.work_dir, args.brokers)


if __name__ == "__main__":
    sys.exit(main())
