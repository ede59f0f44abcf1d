"""The SFTP file destination: snapshot files below a root directory on an OpenSSH server.

Keys are ``/``-separated paths below ``root``. How the ``Storage`` promises are kept over a
protocol that has no multipart upload, no object metadata and no compare-and-swap:

- Visible only when complete: bytes go to ``.<name>.partial-<uuid>`` in the key's directory
  (hashed and counted on the way, with pipelined writes: 1 -> 120 MiB/s on loopback), the
  server's size is checked with ``stat``, then ``posix-rename@openssh.com`` (``rename(2)``)
  moves it over the key atomically. A crash leaves only the ``.partial-`` file, which
  ``abort_incomplete`` removes. SFTP reports no digest, so the sha256 is of the bytes sent,
  checked against the server by size only.
- Metadata lives in a sidecar ``.<name>.meta.json`` (sha256, size, mtime, content type,
  metadata), written after the data rename, so a lost or failed write never touches the
  sidecar of the object that stays. It is trusted only while its size and mtime match the
  data file's (rename keeps the mtime). A crash between the two renames, or two unconditional
  writers racing on one key, leaves a sidecar that does not match: ``stat`` then hashes the
  bytes itself and reports ``metadata={}``, so a resumed run does not recognise the file and
  rewrites it. Only the same size written in the same second by racing writers defeats the
  check. If the sidecar cannot be written the call fails although the bytes are in place (a
  retried conditional write then meets ``PreconditionFailedError``, as after an S3 timeout).
  Dot-names are reserved for this bookkeeping: ``list_keys`` skips them, keys may not use them.
- ``etag`` is the content's sha256: equal for equal bytes across ``put``, ``get`` and
  ``stat``, and free of the 1-second mtime (two versions of one size written in the same
  second would share an mtime+size tag).
- ``if_none_match``: the temporary file is moved with the v3 ``rename``, which OpenSSH
  implements as ``link(2)`` + ``unlink(2)``: the link fails when the key exists, so exactly one
  creator wins, atomically on the server. On a file system without hard links OpenSSH falls
  back to a racy stat-then-rename; another server must be checked the same way
  (``tests/integration/test_sftp_storage.py::test_openssh_rename_semantics``).
- ``if_match``: SFTP has no compare-and-swap. The current file is renamed aside to a unique
  name (of concurrent swappers only one finds the file), its bytes are hashed and compared,
  then the new file is renamed in with the v3 ``rename``; on a mismatch the old file is
  renamed back. The window left, documented rather than hidden: while a swap is in flight the
  key is absent, so a reader sees nothing, another ``if_match`` fails spuriously, and an
  ``if_none_match`` creator may win (the swapper then fails: never two winners). A crash in
  the window leaves ``.<name>.aside-<uuid>``, which ``abort_incomplete`` renames back.
- An unknown or changed host key raises ``StorageDeniedError`` naming the host and the offered
  key's fingerprint: strict ``known_hosts`` checking (paramiko's ``RejectPolicy``) fails at
  connect time, long after settings were validated, and a retry cannot help (``_sftp_connect``
  opens the connection). A missing ``known_hosts`` or key file, no credentials, or a root that
  is not a directory on the server raise ``SinkConfigError``; refused credentials and
  permissions ``StorageDeniedError``.

Connection failures are retried ``retries`` times with doubling backoff, reconnecting each
time; a stream already partly sent is never replayed (its chunks are gone) and a conditional
write never re-sent (its rename may have happened), so those raise ``StorageUnavailableError`` at
once. ``abort_incomplete`` also removes a concurrent writer's temporary files: call it only
while holding the date's lease. Secrets are never logged or put in errors.
"""

from __future__ import annotations

import logging
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import paramiko  # type: ignore[import-untyped, unused-ignore]  # typed only with types-paramiko
from pydantic import SecretStr

from connector.sinks import _sftp_layout as layout
from connector.sinks._sftp_connect import load_key, open_sftp, secret
from connector.sinks._sftp_session import CallerError, Mode, Session
from connector.sinks.exceptions import (
    PreconditionFailedError,
    SinkConfigError,
    StorageDeniedError,
    StorageUnavailableError,
)
from connector.sinks.storage import StoredObject

__all__ = ["SftpStorage"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# Not in the SFTP status codes: errors of the connection itself, retried after a reconnect.
_CONNECTION_ERRORS = (paramiko.SSHException, paramiko.SFTPError, EOFError, TimeoutError, ConnectionError)


class SftpStorage:
    """``Storage`` on an SFTP server, one SSH connection reused (and re-made when it drops)."""

    def __init__(
        self,
        *,
        host: str,
        username: str,
        known_hosts: Path | str,
        root: str,
        port: int = 22,
        private_key: Path | str | None = None,
        passphrase: SecretStr | str | None = None,
        password: SecretStr | str | None = None,
        connect_timeout: float = 10.0,
        op_timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        if not Path(known_hosts).is_file():
            raise SinkConfigError(f"sftp known_hosts file {str(known_hosts)!r} does not exist")
        if private_key is None and password is None:
            raise SinkConfigError("sftp needs a private key file or a password")
        if not root or not 0 < port < 65536 or retries < 0:
            raise SinkConfigError("sftp root must be set, port in 1..65535, retries >= 0")
        self.host, self.port, self.username, self.root = host, port, username, root.rstrip("/") or "/"
        self._known_hosts = str(known_hosts)
        self._pkey = None if private_key is None else load_key(Path(private_key), secret(passphrase))
        self._password = secret(password)
        self._connect_timeout, self._op_timeout = connect_timeout, op_timeout
        self._retries, self._backoff = retries, backoff
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return "sftp"

    def __repr__(self) -> str:
        return f"SftpStorage({self.username}@{self.host}:{self.port}, root={self.root!r})"

    # -- Storage -----------------------------------------------------------------------------
    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        path = self._path(key)
        meta = dict(metadata or {})
        return self._call("put", key, lambda c: c.put(path, chunks, content_type, meta), replay=False)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> StoredObject:
        if if_none_match and if_match is not None:
            raise SinkConfigError("put_bytes takes if_none_match or if_match, not both")
        path, meta = self._path(key), dict(metadata or {})
        mode: Mode = "create" if if_none_match else "replace" if if_match is None else "swap"
        # A conditional write is not replayed once sending: a retry of a rename that did happen would lose.
        return self._call(
            "put",
            key,
            lambda c: c.put(path, [data], content_type, meta, mode=mode, if_match=if_match),
            replay=mode == "replace",
        )

    def get(self, key: str) -> tuple[bytes, StoredObject] | None:
        path = self._path(key)
        return self._call("get", key, lambda c: c.get(path), replay=True)

    def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        return self._call("stat", key, lambda c: c.stat(path), replay=True)

    def list_keys(self, prefix: str) -> list[str]:
        return self._call("list", prefix, lambda c: c.list_keys(prefix), replay=True)

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._call("delete", key, lambda c: c.delete(path), replay=True)

    def abort_incomplete(self, prefix: str) -> int:
        return self._call("abort_incomplete", prefix, lambda c: c.abort_incomplete(prefix), replay=True)

    def close(self) -> None:
        """Close the SSH connection; the next call opens a new one."""
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = self._sftp = None

    def __enter__(self) -> SftpStorage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- connection and retries --------------------------------------------------------------
    def _path(self, key: str) -> str:
        return posixpath.join(self.root, layout.check_key(key))

    def _call(self, op: str, key: str, fn: Callable[[Session], T], *, replay: bool) -> T:
        """Run ``fn`` on a live session, reconnecting on connection errors up to ``retries`` times.

        Connecting is always retried, and so is ``fn`` until it takes a chunk of the caller's;
        after that only when ``replay`` (its effect is the same when run twice). SFTP status
        errors map to ``StorageDeniedError`` (permission) or ``StorageUnavailableError``; the caller's own
        exceptions pass through unchanged.
        """
        delay, where = self._backoff, f"sftp {op} {key!r} on {self.host}:{self.port}"
        with self._lock:
            for attempt in range(self._retries + 1):
                session: Session | None = None
                try:
                    session = Session(self._connect(), self.root)
                    return fn(session)
                except CallerError as exc:
                    raise exc.error from exc.error.__cause__  # as the caller raised it, minus our wrapper
                except (StorageDeniedError, PreconditionFailedError, SinkConfigError):
                    raise
                except PermissionError as exc:
                    raise StorageDeniedError(f"{where}: permission denied") from exc
                except (*_CONNECTION_ERRORS, OSError) as exc:
                    status_error = not isinstance(exc, _CONNECTION_ERRORS) and self._alive()
                    if not status_error:
                        self.close()
                    reason = f"{type(exc).__name__}: {exc}"  # paramiko's and the server's texts: no secrets
                    spent = session is not None and session.consumed and not replay
                    if spent or attempt == self._retries:
                        raise StorageUnavailableError(
                            f"{where} failed after {attempt + 1} attempt(s): {reason}"
                        ) from exc
                    log.warning(  # the class only: the server's text stays in the raised error
                        "sftp %s failed; retry %d of %d",
                        op,
                        attempt + 1,
                        self._retries,
                        extra={"error": type(exc).__name__, "key": key, "host": self.host, "port": self.port},
                    )
                    time.sleep(delay)
                    delay *= 2
        raise AssertionError("unreachable")

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._alive():
            return self._sftp
        self.close()
        client, sftp = open_sftp(
            self.host,
            self.port,
            self.username,
            known_hosts=self._known_hosts,
            password=self._password,
            pkey=self._pkey,
            connect_timeout=self._connect_timeout,
            op_timeout=self._op_timeout,
        )
        self._client, self._sftp = client, sftp
        try:
            attrs = sftp.stat(self.root)
        except FileNotFoundError:
            attrs = None
        if attrs is None or not stat.S_ISDIR(attrs.st_mode or 0):
            self.close()
            raise SinkConfigError(f"sftp root {self.root!r} is not a directory on {self.host}:{self.port}")
        return sftp
