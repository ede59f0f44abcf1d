"""A real SFTP server for integration tests and the demo: Debian's OpenSSH ``sshd``, test-owned.

The SFTP route's guarantees rest on what OpenSSH's ``sftp-server`` does (a v3 ``rename`` that
refuses an existing target, ``posix-rename@openssh.com`` that replaces it), so tests run the
real daemon rather than a Python SFTP server that would only mimic it. ``sshd`` runs as the
current user on a free loopback port with its own ``sshd_config``, a fresh ed25519 host key
and client key, ``internal-sftp`` only (no shell, no forwarding), and everything under one
work dir. As root (CI) it needs ``PermitRootLogin prohibit-password`` and the compiled-in
privilege-separation dir ``/run/sshd``; as a normal user it runs without privilege
separation, so PAM and the ownership checks of ``StrictModes`` are off.

Command line::

    python -m connector.devtools.sftp_server run [--work-dir DIR]   # until Ctrl-C

Needs the ``openssh-server`` and ``openssh-client`` packages (``make system-deps``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["SSHD", "SftpServer", "SftpServerError", "generate_key", "main"]

SSHD = "/usr/sbin/sshd"  # not on a normal user's PATH; sshd must be started by absolute path anyway
_PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; needed only when run as root

_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
MaxStartups 64:30:128
MaxSessions 64
LoginGraceTime 30
LogLevel VERBOSE
Subsystem sftp internal-sftp
ForceCommand internal-sftp
"""


class SftpServerError(RuntimeError):
    """sshd could not be configured or started; the message carries its log tail."""


def generate_key(path: Path, comment: str = "carecloud-devtools") -> Path:
    """A fresh passphrase-less ed25519 key pair at ``path`` / ``path.pub`` (OpenSSH format)."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise SftpServerError("ssh-keygen is not on PATH; install openssh-client (make system-deps)")
    path.unlink(missing_ok=True)
    _public(path).unlink(missing_ok=True)
    cmd = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SftpServerError(f"ssh-keygen failed ({done.returncode}): {done.stderr.strip()}")
    return path


def _public(private_key: Path) -> Path:
    return private_key.with_name(private_key.name + ".pub")


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc).

    sshd's per-connection processes call ``setsid()``, so signalling the listener's process
    group does not reach them; a stop that should drop clients has to find them by parent.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills sshd if the test run is SIGKILLed.

    atexit covers normal exits only; without this a killed pytest would leave sshd listening.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LIVE: set[SftpServer] = set()


@atexit.register
def _reap_all() -> None:
    for server in list(_LIVE):
        server.kill()


class SftpServer:
    """One ``sshd`` serving SFTP to the current user on loopback; a context manager.

    ``stop()`` then ``start()`` keeps the port, keys and files, which is how a test shows a
    client riding out an outage. Paths the server sees are this machine's paths, so a test can
    inspect ``root_dir`` directly.
    """

    def __init__(self, work_dir: Path | None = None, *, port: int = 0, startup_timeout: float = 15.0) -> None:
        self._owns_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="sftp-server-")).resolve()
        self.host = "127.0.0.1"
        self.port = port or _free_port(self.host)
        self.username = pwd.getpwuid(os.getuid()).pw_name
        self.startup_timeout = startup_timeout
        self.host_key_path = self.work_dir / "ssh_host_ed25519_key"
        self.client_key_path = self.work_dir / "client_ed25519_key"
        self.known_hosts_path = self.work_dir / "known_hosts"
        self.root_dir = self.work_dir / "files"
        self.log_path = self.work_dir / "sshd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.is_file():
            return "(no sshd log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> SftpServer:
        """Write keys and config on first use, launch sshd, return once it sends its SSH banner."""
        if self.running:
            return self
        if not os.access(SSHD, os.X_OK):
            raise SftpServerError(f"{SSHD} not found; install openssh-server (make system-deps)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.root_dir.mkdir(exist_ok=True)
        if not self.host_key_path.is_file():
            generate_key(self.host_key_path, "carecloud-devtools-host")
            generate_key(self.client_key_path, "carecloud-devtools-client")
            pub = _public(self.client_key_path).read_text()
            (self.work_dir / "authorized_keys").write_text(pub)
            self.known_hosts_path.write_text(self.known_hosts_line(_public(self.host_key_path)))
        config = self.work_dir / "sshd_config"
        config.write_text(
            _CONFIG.format(
                port=self.port,
                host_key=self.host_key_path,
                pid_file=self.work_dir / "sshd.pid",
                authorized_keys=self.work_dir / "authorized_keys",
                user=self.username,
            )
        )
        if os.getuid() == 0 and not _PRIVSEP_DIR.is_dir():
            _PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach sshd and its sessions only
                preexec_fn=_die_with_parent,  # only a prctl call: no Python locks
            )
        _LIVE.add(self)
        self._wait_ready()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the listener and its sessions (clients see the connection drop), then forget it."""
        process = self._process
        if process is not None and process.poll() is None:
            self._signal(signal.SIGCONT)  # a paused sshd would not act on SIGTERM
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the listener and every session process it started."""
        process = self._process
        if process is not None:
            self._signal(signal.SIGKILL)
            process.wait()
        self._process = None
        _LIVE.discard(self)

    def pause(self) -> None:
        """SIGSTOP sshd and its sessions: connections stay open but nothing answers (a hung server)."""
        if self.running:
            self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.running:
            self._signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop, and delete the work dir if this object made it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> SftpServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- helpers for clients -----------------------------------------------------------------
    def known_hosts_line(self, public_key: Path) -> str:
        """A known_hosts entry binding ``public_key`` to this server's ``[host]:port``."""
        key_type, key_b64 = public_key.read_text().split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key_b64}\n"

    # -- internals ---------------------------------------------------------------------------
    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                self.kill()
                raise SftpServerError(f"sshd exited with {code} during start-up\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1.0) as s:
                s.settimeout(1.0)
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise SftpServerError(f"sshd not ready in {self.startup_timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._process is not None
        for pid in _descendants(self._process.pid):  # sessions first, while the tree is intact
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)


def _run(work_dir: Path | None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job ignores it
        signal.signal(sig, signal.default_int_handler)
    server = SftpServer(work_dir)
    try:  # not `with`: a Ctrl-C during start() must stop sshd too
        server.start()
        print(f"SFTP_HOST={server.host}")
        print(f"SFTP_PORT={server.port}")
        print(f"SFTP_USERNAME={server.username}")
        print(f"SFTP_PRIVATE_KEY={server.client_key_path}")
        print(f"SFTP_KNOWN_HOSTS={server.known_hosts_path}")
        print(f"SFTP_ROOT={server.root_dir}")
        print(f"sftp -i {server.client_key_path} -o UserKnownHostsFile={server.known_hosts_path} ", end="")
        print(f"-P {server.port} {server.username}@{server.host}")
        print(f"work dir {server.work_dir}; Ctrl-C stops sshd", flush=True)
        while server.running:
            time.sleep(0.5)
        print(f"sshd died\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.devtools.sftp_server", description="Local OpenSSH SFTP server"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run sshd, print connection details, stop on Ctrl-C/SIGTERM")
    run.add_argument("--work-dir", type=Path, help="keep keys, config and files here (reused on restart)")
    args = parser.parse_args(argv)
    return _run(args.work_dir)


if __name__ == "__main__":
    sys.exit(main())
