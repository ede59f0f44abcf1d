"""``snapshot --dry-run``: the real run's cut, checks and files, with no side effect anywhere.

Before issue 17 the dry run swapped only the file storage: with the API route on it opened and
committed Portal sessions with real records (PHI sent by a command that promises to send
nothing), and it could not see earlier manifests, so its count check compared against nothing.
Here both routes are replaced:

- ``DryRunStorage`` writes everything (files, lease, pinned cut, report, digests, manifest)
  under the ``--out`` directory and reads the real storage only for published manifests and
  the digests they name: the count and change gates then have their real baselines, the plan
  says what would change since the last delivery, and a date already published is reported
  as such. Control
  objects (a real run's lease or pinned cut) are never read through, so a dry run is neither
  blocked by nor confused with a real run of the same date.
- ``DryRunApi`` writes each entity set the Portal would have received, as JSON Lines under
  ``--out/api/``, encoded as the Portal client encodes it; nothing goes over the network.

The snapshot reads Kafka (lag, cut, state) and writes nothing to it, dry or not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from connector.sinks._cells import encoders
from connector.sinks.exceptions import PortalMismatchError, PreconditionFailedError
from connector.sinks.keys import MANIFEST_NAME
from connector.sinks.local import LocalStorage
from connector.sinks.storage import Storage, StoredObject
from connector.snapshot.digest import DIGEST_PREFIX

__all__ = ["DryRunApi", "DryRunStorage", "WouldDeliver"]


class DryRunStorage:
    """Writes to a local directory; reads published manifests from the real storage too."""

    def __init__(self, local: LocalStorage, real: Storage | None) -> None:
        self._local, self._real = local, real

    @property
    def name(self) -> str:
        """The real route's name, so the would-be manifest reads as the real one would."""
        return self._real.name if self._real is not None else self._local.name

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        return self._local.put_stream(key, chunks, content_type=content_type, metadata=metadata)

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
        # A manifest published for real is never replaced: the local write would only hide it.
        if if_none_match and self._published(key) is not None:
            raise PreconditionFailedError(f"{key}: already published")
        return self._local.put_bytes(
            key,
            data,
            content_type=content_type,
            metadata=metadata,
            if_none_match=if_none_match,
            if_match=if_match,
        )

    def get(self, key: str) -> tuple[bytes, StoredObject] | None:
        found = self._local.get(key)
        if found is None and self._real is not None and _reads_through(key):
            return self._real.get(key)
        return found

    def stat(self, key: str) -> StoredObject | None:
        found = self._local.stat(key)
        return found if found is not None else self._published(key)

    def list_keys(self, prefix: str) -> list[str]:
        keys = set(self._local.list_keys(prefix))
        if self._real is not None:
            keys.update(k for k in self._real.list_keys(prefix) if _reads_through(k))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._local.delete(key)

    def abort_incomplete(self, prefix: str) -> int:
        return self._local.abort_incomplete(prefix)

    def _published(self, key: str) -> StoredObject | None:
        if self._real is None or not _is_manifest(key):
            return None
        return self._real.stat(key)


def _is_manifest(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == MANIFEST_NAME


def _reads_through(key: str) -> bool:
    """Published records a dry run may read: manifests and delivered sets' digests."""
    name = key.rsplit("/", 1)[-1]
    return name == MANIFEST_NAME or name.startswith(DIGEST_PREFIX)


@dataclass(frozen=True, slots=True)
class WouldDeliver:
    """What the Portal route would have sent for one entity (the manifest's ``api`` entry)."""

    path: Path
    record_count: int
    checksum: str

    def as_manifest(self) -> dict[str, Any]:
        return {
            "session_id": "dry-run",
            "batch_count": 0,
            "record_count": self.record_count,
            "checksum": self.checksum,
            "dry_run_file": self.path.name,
        }


class DryRunApi:
    """An ``ApiRoute`` that writes the set it would send to ``<out>/api/<Entity>.jsonl``."""

    def __init__(self, out: Path) -> None:
        self._dir = out / "api"

    def deliver(
        self, entity: str, day: dt.date, records: Iterable[Mapping[str, Any]], count: int, *, snapshot_id: str
    ) -> WouldDeliver:
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / f"{entity}.jsonl"
        fields = encoders(entity, for_csv=False)
        digest, written = hashlib.sha256(), 0
        with path.open("wb") as out:
            for record in records:
                line = orjson.dumps({name: encode(record.get(name)) for name, encode in fields}) + b"\n"
                out.write(line)
                digest.update(line)
                written += 1
        if written != count:
            raise PortalMismatchError(f"{entity}: {written} records read where the plan counted {count}")
        return WouldDeliver(path, written, digest.hexdigest())
