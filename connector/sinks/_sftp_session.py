"""The SFTP storage's operations on one connected client (``sftp.py`` owns connecting and retries).

Each method is one ``Storage`` operation as a sequence of SFTP requests; the promises they keep
and the windows they leave are described in ``connector.sinks.sftp``. They raise paramiko's
errors as they come (``OSError`` for SFTP status codes, ``SSHException``/``EOFError`` for a
dropped connection) plus ``PreconditionFailedError``; ``SftpStorage._call`` maps the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import stat
import uuid
from collections.abc import Iterable, Iterator
from typing import Literal

import paramiko  # type: ignore[import-untyped, unused-ignore]

from connector.sinks import _sftp_layout as layout
from connector.sinks.exceptions import PreconditionFailedError, StorageDeniedError, StorageUnavailableError
from connector.sinks.storage import StoredObject

__all__ = ["CallerError", "Mode", "Session", "caller_chunks"]

_READ_CHUNK = 1 << 20
Mode = Literal["replace", "create", "swap"]
"""How ``put`` commits: replace whatever is there, create only if absent, swap only over an etag."""


class CallerError(Exception):
    """Carries an exception raised by the caller's chunk iterator past the SFTP error mapping."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Session:
    """The operations on one connected SFTP client; ``SftpStorage._call`` maps their errors."""

    def __init__(self, sftp: paramiko.SFTPClient, root: str) -> None:
        self.sftp, self.root = sftp, root
        self.consumed = False
        """Whether ``put`` has taken a chunk: from then on it cannot be run again from the start."""

    def put(
        self,
        path: str,
        chunks: Iterable[bytes],
        content_type: str,
        metadata: dict[str, str],
        *,
        mode: Mode = "replace",
        if_match: str | None = None,
    ) -> StoredObject:
        """Write a temporary file, check its size on the server, then commit it by ``mode``."""
        self._makedirs(posixpath.dirname(path))
        tmp = layout.partial_name(path, uuid.uuid4().hex)
        digest, size = hashlib.sha256(), 0
        try:
            with self.sftp.open(tmp, "wbx") as f:
                f.set_pipelined(True)  # replies checked at close; measured on loopback: 1 -> 120 MiB/s
                for chunk in caller_chunks(chunks):
                    self.consumed = True
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
            attrs = self.sftp.stat(tmp)
            if attrs.st_size != size:
                key = self._key(path)
                raise StorageUnavailableError(f"sftp stored {attrs.st_size} bytes of {size} at {key!r}")
            sha = digest.hexdigest()
            if mode == "replace":
                self.sftp.posix_rename(tmp, path)
            elif mode == "create":
                self._create(tmp, path)
            else:
                self._swap(tmp, path, if_match or "")
        except BaseException:
            self._discard(tmp)
            raise
        sidecar = layout.Sidecar(size, int(attrs.st_mtime or 0), sha, content_type, metadata)
        self._write_file(layout.sidecar_name(path), sidecar.encode())
        return StoredObject(self._key(path), size, sha, sha, metadata)

    def _create(self, tmp: str, path: str) -> None:
        try:
            self.sftp.rename(tmp, path)  # v3 rename: link(2)+unlink(2), refuses an existing target
        except OSError:
            if self._exists(path):
                raise PreconditionFailedError(f"sftp put {self._key(path)!r}: the object exists") from None
            raise

    def _swap(self, tmp: str, path: str, etag: str) -> None:
        key = self._key(path)
        aside = layout.aside_name(path, uuid.uuid4().hex)
        try:
            self.sftp.posix_rename(path, aside)  # of concurrent swappers only one finds the file
        except FileNotFoundError:
            raise PreconditionFailedError(
                f"sftp put {key!r}: no object to replace (or one being replaced)"
            ) from None
        try:
            current = self._sha256(aside)[0]
        except BaseException:
            with contextlib.suppress(Exception):  # if the connection is gone, abort_incomplete restores
                self._restore(aside, path)
            raise
        if current != etag:
            self._restore(aside, path)
            raise PreconditionFailedError(f"sftp put {key!r}: the object changed since it was read")
        try:
            self.sftp.rename(tmp, path)
        except OSError:
            if not self._exists(path):
                with contextlib.suppress(Exception):
                    self._restore(aside, path)
                raise
            self._discard(aside)
            raise PreconditionFailedError(
                f"sftp put {key!r}: created by another writer during the swap"
            ) from None
        self._discard(aside)

    def _restore(self, aside: str, path: str) -> None:
        """Rename ``aside`` back unless a newer object took ``path`` meanwhile (then drop it)."""
        try:
            self.sftp.rename(aside, path)
        except OSError:
            if not self._exists(path):
                raise
            self._discard(aside)

    def get(self, path: str) -> tuple[bytes, StoredObject] | None:
        try:
            f = self.sftp.open(path, "rb")
        except FileNotFoundError:
            return None
        with f:
            attrs = f.stat()
            if not stat.S_ISREG(attrs.st_mode or 0):
                return None
            f.prefetch(attrs.st_size)
            data = f.read()
        sha = hashlib.sha256(data).hexdigest()
        sidecar = self._sidecar(path, attrs)
        metadata = sidecar.metadata if sidecar is not None and sidecar.sha256 == sha else {}
        return data, StoredObject(self._key(path), len(data), sha, sha, metadata)

    def stat(self, path: str) -> StoredObject | None:
        try:
            attrs = self.sftp.stat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(attrs.st_mode or 0):
            return None
        sidecar = self._sidecar(path, attrs)
        if sidecar is not None:
            return StoredObject(
                self._key(path), sidecar.size, sidecar.sha256, sidecar.sha256, sidecar.metadata
            )
        try:  # no trustworthy sidecar (crash between the renames): hash the bytes, metadata unknown
            sha, size = self._sha256(path)
        except FileNotFoundError:
            return None
        return StoredObject(self._key(path), size, sha, sha, {})

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(rel for rel, name, _ in self._walk(prefix) if not name.startswith("."))

    def delete(self, path: str) -> None:
        for victim in (path, layout.sidecar_name(path)):
            self._discard(victim, quiet=False)

    def abort_incomplete(self, prefix: str) -> int:
        """Remove temporary files and orphaned sidecars; rename an aside file back if its key is free."""
        removed = 0
        for rel, name, path in self._walk(prefix, debris=True):
            debris = layout.parse_internal(name)
            if debris is None or not posixpath.join(posixpath.dirname(rel), debris.name).startswith(prefix):
                continue
            target = posixpath.join(posixpath.dirname(path), debris.name)
            if debris.kind == "partial":
                self._discard(path, quiet=False)
            elif debris.kind == "aside":
                self._restore(path, target)
            elif debris.kind == "sidecar" and not self._exists(target):
                self._discard(path, quiet=False)
            else:
                continue
            removed += 1
        return removed

    # -- helpers -----------------------------------------------------------------------------
    def _key(self, path: str) -> str:
        return posixpath.relpath(path, self.root)

    def _walk(self, prefix: str, *, debris: bool = False) -> Iterator[tuple[str, str, str]]:
        """(key-like relative path, file name, full path) of regular files that may match ``prefix``."""
        start = prefix.rpartition("/")[0]
        todo = [start]
        while todo:
            rel_dir = todo.pop()
            try:
                entries = self.sftp.listdir_attr(posixpath.join(self.root, rel_dir) if rel_dir else self.root)
            except FileNotFoundError:
                continue
            for entry in entries:
                rel = posixpath.join(rel_dir, entry.filename) if rel_dir else entry.filename
                if stat.S_ISDIR(entry.st_mode or 0):
                    if not entry.filename.startswith(".") and layout.may_contain(rel, prefix):
                        todo.append(rel)
                elif stat.S_ISREG(entry.st_mode or 0) and (debris or rel.startswith(prefix)):
                    yield rel, entry.filename, posixpath.join(self.root, rel)

    def _makedirs(self, directory: str) -> None:
        if self._exists(directory):
            return
        path = self.root
        for segment in posixpath.relpath(directory, self.root).split("/"):
            path = posixpath.join(path, segment)
            try:
                self.sftp.mkdir(path)
            except OSError as failed:  # exists (maybe a racing writer made it), or a real failure
                try:
                    attrs = self.sftp.stat(path)
                except FileNotFoundError:
                    raise failed from None
                if not stat.S_ISDIR(attrs.st_mode or 0):
                    raise StorageDeniedError(
                        f"sftp path {self._key(path)!r} exists and is not a directory"
                    ) from None

    def _exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def _discard(self, path: str, *, quiet: bool = True) -> None:
        """Remove ``path`` if present; ``quiet`` also swallows other errors (clean-up after a failure)."""
        try:
            self.sftp.remove(path)
        except FileNotFoundError:
            pass
        except Exception:
            if not quiet:
                raise

    def _sha256(self, path: str) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with self.sftp.open(path, "rb") as f:
            f.prefetch()
            while block := f.read(_READ_CHUNK):
                digest.update(block)
                size += len(block)
        return digest.hexdigest(), size

    def _sidecar(self, path: str, attrs: paramiko.SFTPAttributes) -> layout.Sidecar | None:
        try:
            with self.sftp.open(layout.sidecar_name(path), "rb") as f:
                raw = f.read(layout.SIDECAR_MAX_BYTES)
        except FileNotFoundError:
            return None
        sidecar = layout.Sidecar.decode(raw)
        if sidecar is None or (sidecar.size, sidecar.mtime) != (attrs.st_size, int(attrs.st_mtime or 0)):
            return None
        return sidecar

    def _write_file(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically (temporary name, then ``posix_rename``)."""
        tmp = layout.partial_name(path, uuid.uuid4().hex)
        try:
            with self.sftp.open(tmp, "wbx") as f:
                f.write(data)
            self.sftp.posix_rename(tmp, path)
        except BaseException:
            self._discard(tmp)
            raise


def caller_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The caller's chunks, with the iterator's own exceptions wrapped so they are not mapped."""
    iterator = iter(chunks)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except BaseException as exc:
            raise CallerError(exc) from exc
        yield chunk
