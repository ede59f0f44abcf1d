"""Where snapshot files go: the storage interface every file destination implements.

A format turns records into bytes (``formats``), a key names the object (``keys``), and a
storage puts bytes under a key (this module; Confluent's S3 sink splits it the same way). The
snapshot run (``connector.snapshot.run``) sees only this interface, so S3, SFTP and the in-memory
double used by unit tests are interchangeable, and every guarantee the run relies on is stated
here, once:

- ``put_stream`` makes an object visible only when it is complete (S3: multipart upload
  completed; SFTP: a temporary name renamed into place). A crash mid-upload leaves nothing
  visible under the key, only debris that ``abort_incomplete`` removes.
- ``put_bytes`` can be conditional: ``if_none_match`` creates only when the key is absent,
  ``if_match`` replaces only the version whose ``etag`` is given. A failed condition raises
  ``PreconditionFailedError``. The run builds its lease, its pinned cut and its write-once manifest
  on these two conditions, so they must be atomic on the server, not read-then-write.
- The returned ``StoredObject`` carries the size and sha256 of the bytes as stored, checked
  against the server's view of the object (not only what was sent).
- Metadata (``str`` to ``str``, small) is kept with the object and returned by ``stat``; the run
  uses it to recognise a file of the same cut when it resumes.

Errors: ``StorageUnavailableError`` (a ``TransientError``: endpoint down, 5xx, throttling after the
storage's own bounded retries) and ``StorageDeniedError`` (a ``TerminalError``: credentials or
permissions; retrying cannot help). Messages name the key and the operation, never contents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Storage", "StoredObject"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One stored object as the server reports it."""

    key: str
    size: int
    """Bytes stored."""
    sha256: str | None
    """Hex sha256 of the stored bytes; None when ``stat`` cannot know it (no metadata kept)."""
    etag: str
    """Opaque version token for ``put_bytes(if_match=...)``."""
    metadata: Mapping[str, str] = field(default_factory=dict)


class Storage(Protocol):
    """A file destination for the snapshot (S3, SFTP, memory)."""

    @property
    def name(self) -> str:
        """The route name in manifests and metric labels: ``s3``, ``sftp``, ``memory``."""
        ...

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Store the concatenated chunks under ``key``; visible only once complete.

        Memory stays flat: chunks are consumed as they are uploaded. Replaces any object under
        ``key``. On any failure nothing new is visible under ``key`` and the partial upload is
        aborted when possible.
        """
        ...

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
        """Store a small object, optionally only if absent or only over version ``if_match``."""
        ...

    def get(self, key: str) -> tuple[bytes, StoredObject] | None:
        """The object's bytes and description, or None when there is no object under ``key``."""
        ...

    def stat(self, key: str) -> StoredObject | None:
        """The object's description without its bytes, or None when absent."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every complete object's key starting with ``prefix``, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is already absent."""
        ...

    def abort_incomplete(self, prefix: str) -> int:
        """Remove the debris of interrupted ``put_stream`` calls under ``prefix``; returns how many."""
        ...
