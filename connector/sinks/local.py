"""A directory as a storage: ``snapshot --dry-run`` writes here, and unit tests of the run use it.

It keeps the ``Storage`` promises with POSIX calls on one host: a stream goes to a temporary
name and is renamed into place (``os.replace`` is atomic), a create-if-absent is ``os.link`` of
a finished temporary file (fails if the name exists), and a replace-if-unchanged holds an
``flock`` on a lock file around read-compare-rename. Metadata and the sha256 live in a sidecar
``<name>.meta.json`` written before the object is renamed into place, so a visible object always
has its sidecar (a stale sidecar without an object is ignored). The etag is the sha256.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import orjson

from connector.sinks.exceptions import PreconditionFailedError, SinkConfigError
from connector.sinks.storage import StoredObject

__all__ = ["LocalStorage"]

_PARTIAL = ".partial-"
_META = ".meta.json"
_LOCK = ".lock"


class LocalStorage:
    """Objects as files below ``root``; keys are relative paths."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        path = self._path(key)
        digest, size = hashlib.sha256(), 0
        with self._temporary(path) as temp:
            with temp.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            stored = StoredObject(key, size, digest.hexdigest(), digest.hexdigest(), dict(metadata or {}))
            self._write_meta(path, stored, content_type)
            os.replace(temp, path)
        return stored

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
        path = self._path(key)
        sha = hashlib.sha256(data).hexdigest()
        stored = StoredObject(key, len(data), sha, sha, dict(metadata or {}))
        with self._lock(), self._temporary(path) as temp:
            temp.write_bytes(data)
            current = self.stat(key)
            if if_none_match and current is not None:
                raise PreconditionFailedError(f"create {key}: the object exists")
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailedError(f"replace {key}: the object changed since it was read")
            self._write_meta(path, stored, content_type)
            os.replace(temp, path)
        return stored

    def get(self, key: str) -> tuple[bytes, StoredObject] | None:
        stored = self.stat(key)
        if stored is None:
            return None
        try:
            return self._path(key).read_bytes(), stored
        except FileNotFoundError:
            return None

    def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
            meta = orjson.loads(self._meta_path(path).read_bytes())
        except FileNotFoundError:
            return None
        return StoredObject(key, size, meta["sha256"], meta["sha256"], meta["metadata"])

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for path in self.root.rglob("*"):
            name = path.name
            if not path.is_file() or _PARTIAL in name or name.endswith((_META, _LOCK)):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        for victim in (path, self._meta_path(path)):
            victim.unlink(missing_ok=True)

    def abort_incomplete(self, prefix: str) -> int:
        removed = 0
        for path in self.root.rglob(f"*{_PARTIAL}*"):
            target = path.with_name(path.name[1:].split(_PARTIAL)[0])  # the key it was written for
            if target.relative_to(self.root).as_posix().startswith(prefix):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise SinkConfigError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(path.name + _META)

    def _write_meta(self, path: Path, stored: StoredObject, content_type: str) -> None:
        meta = {"sha256": stored.sha256, "metadata": dict(stored.metadata), "content_type": content_type}
        temp = path.with_name(f".{path.name}{_PARTIAL}{uuid.uuid4().hex}{_META}")
        temp.write_bytes(orjson.dumps(meta))
        os.replace(temp, self._meta_path(path))

    @contextlib.contextmanager
    def _temporary(self, path: Path) -> Iterator[Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}{_PARTIAL}{uuid.uuid4().hex}")
        try:
            yield temp
        finally:
            temp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / _LOCK).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
